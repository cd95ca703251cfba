//! `couponrush-load spike`: fires the seed spike at a running issuer, a fixed number of
//! requests in flight (closed loop), then checks the guarantees against MySQL and prints a
//! report a person can read in five seconds. The demo, the end-to-end scenarios and the
//! benchmark's timeline run it; it works against any issuer that accepts the e2e HS256
//! secret.

use std::time::{Duration, Instant};

use anyhow::Context;
use couponrush_core::db;
use couponrush_core::event::EventId;
use couponrush_e2e::load::{Spike, rows};

/// The booleans take a value (`--expect-sold-out false`), as the scenarios pass them.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the issuer.
    #[arg(long)]
    pub issuer: String,
    /// The database the consumer writes to: the rows are the guarantees' evidence.
    #[arg(long)]
    pub database_url: String,
    /// `namespace/name` of the event (its round 1 is driven).
    #[arg(long)]
    pub event: String,
    #[arg(long)]
    pub stock: u32,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Requests in all, spread evenly over the users (requests/users each).
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// The round's opening (epoch ms): the spike waits for it.
    #[arg(long)]
    pub opens_at_ms: i64,
    /// Pod-fault runs: requests whose connection broke (the issuer pod was killed) are
    /// counted, not failures; 5xx answers and every other guarantee still are.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub tolerate_transport_errors: bool,
    /// false: a spike cut short by a fault (the round need not sell out in it); it still
    /// requires every 201 to become its row, and never more rows than stock.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub expect_sold_out: bool,
    /// Where to write the round's timeline (SVG), if anywhere.
    #[arg(long)]
    pub timeline: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (namespace, name) = args.event.split_once('/').context("--event is namespace/name")?;
    let event = EventId::new(namespace, name)?;
    let round = event.round(1);
    let url = format!("{}/api/v1/events/{}/{}/issue", args.issuer, event.namespace, event.name);
    let wait_ms = args.opens_at_ms - couponrush_core::wall_clock_ms();
    if wait_ms > 0 {
        println!("waiting {:.1} s for 10:00 ...", wait_ms as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms)?)).await;
    }
    let spike =
        Spike { users: args.users, requests_per_user: args.requests / args.users, concurrency: args.concurrency };
    let pool = db::connect(&args.database_url, 2).await?;
    let stock_for_users = u64::from(args.stock).min(args.users as u64);
    // Rows to wait for: the whole stock, or (a spike cut short by a fault) none here: the
    // wait below is for this spike's own 201s.
    let expected = if args.expect_sold_out { stock_for_users } else { 0 };
    // Watch MySQL while the spike runs, to time sold-out → all persisted (and to draw
    // the rows over time).
    let opened = Instant::now();
    let watcher = {
        let pool = pool.clone();
        let round = round.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut counts: Vec<(Instant, u64)> = Vec::new();
            while Instant::now() < deadline {
                let count = db::count_coupons(&pool, &round).await.unwrap_or(0);
                if counts.last().is_none_or(|(_, last)| *last != count) {
                    counts.push((Instant::now(), count));
                }
                if count >= expected {
                    return (Some(Instant::now()), counts);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (None, counts)
        })
    };
    let tally = spike.run(&[url]).await?;
    let (all_persisted, persisted_over_time) = watcher.await?;
    let all_persisted = all_persisted.context("not every coupon was persisted within two minutes")?;
    if let Some(path) = &args.timeline {
        let mut marks = vec![("opening", opened)];
        marks.extend(tally.first_sold_out.map(|at| ("first SOLD_OUT", at)));
        if args.expect_sold_out {
            marks.push(("every coupon in MySQL", all_persisted));
        }
        let timeline = couponrush_e2e::timeline::Timeline {
            title: format!("{} round 1: {} users, {} requests, stock {}", event, args.users, args.requests, args.stock),
            start: opened,
            answers: &tally.answered,
            persisted: &persisted_over_time,
            marks,
        };
        std::fs::write(path, timeline.svg()).with_context(|| format!("writing {path}"))?;
        println!("timeline: {path}");
    }
    let mut rows = rows(&pool, &round).await?;
    if !args.expect_sold_out {
        // Every 201 of this spike must reach MySQL, whatever was killed on the way.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let have: std::collections::HashSet<(&str, u32)> = rows.iter().map(|(u, s)| (u.as_str(), *s)).collect();
            if tally.issued.iter().all(|(user, seq)| have.contains(&(user.as_str(), *seq))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            rows = couponrush_e2e::load::rows(&pool, &round).await?;
        }
    }
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|(user, _)| user.as_str()).collect();
    let sent = spike.users * spike.requests_per_user;
    let errors = tally.server_errors() + if args.tolerate_transport_errors { 0 } else { tally.transport_errors };
    // Every 201 is a row with the seq that answer gave.
    let row_set: std::collections::HashSet<(&str, u32)> =
        rows.iter().map(|(user, seq)| (user.as_str(), *seq)).collect();
    let unpersisted = tally.issued.iter().filter(|(user, seq)| !row_set.contains(&(user.as_str(), *seq))).count();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("couponrush demo: {} users, {sent} requests, stock {}", args.users, args.stock);
    println!(
        "  requests    {sent} in {:.2} s = {:.0} req/s ({} in flight)",
        tally.elapsed.as_secs_f64(),
        sent as f64 / tally.elapsed.as_secs_f64(),
        args.concurrency
    );
    println!(
        "  latency     p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(tally.latency(0.5)),
        ms(tally.latency(0.99)),
        ms(tally.latency(1.0))
    );
    println!("  answers     {:?}, errors {errors} (broken connections: {})", tally.by_status, tally.transport_errors);
    if let Some(error) = &tally.first_transport_error {
        println!("  first broken connection: {error}");
    }
    println!(
        "  issued      {} (201 answers)   persisted {} (MySQL rows)   201s without their row {unpersisted}",
        tally.issued.len(),
        rows.len()
    );
    println!(
        "  duplicates  {}   oversold {}",
        rows.len() - distinct.len(),
        rows.len().saturating_sub(args.stock as usize)
    );
    match tally.first_sold_out {
        Some(sold_out) => {
            println!("  sold out -> all persisted in {:.0} ms", ms(all_persisted.saturating_duration_since(sold_out)))
        }
        None => println!("  never sold out"),
    }
    anyhow::ensure!(
        (if args.expect_sold_out {
            rows.len() as u64 == stock_for_users
        } else {
            rows.len() as u64 <= stock_for_users
        }) && distinct.len() == rows.len()
            && errors == 0
            && unpersisted == 0,
        "the guarantees did not hold"
    );
    Ok(())
}
