//! `couponrush-spike`: fires the seed spike at a running issuer and prints a report a
//! person can read in five seconds. The demo runs it; it also works against any issuer
//! that accepts the e2e HS256 secret.

use std::time::{Duration, Instant};

use anyhow::Context;
use couponrush_core::db;
use couponrush_core::event::EventId;
use couponrush_e2e::spike::{Spike, rows};

struct Args {
    issuer: String,
    database_url: String,
    event: EventId,
    stock: u32,
    users: usize,
    requests: usize,
    concurrency: usize,
    opens_at_ms: i64,
    /// Pod-fault runs: requests whose connection broke (the issuer pod was killed) are
    /// counted, not failures; 5xx answers and every other guarantee still are.
    tolerate_transport_errors: bool,
    /// false: a spike cut short by a fault (the round need not sell out in it); it still
    /// requires every 201 to become its row, and never more rows than stock.
    expect_sold_out: bool,
    /// Where to write the round's timeline (SVG), if anywhere.
    timeline: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut get = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        get.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let take = |name: &str| get.get(name).cloned().with_context(|| format!("--{name} is required"));
    let (namespace, name) = take("event")?
        .split_once('/')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .context("--event is namespace/name")?;
    Ok(Args {
        issuer: take("issuer")?,
        database_url: take("database-url")?,
        event: EventId::new(&namespace, &name)?,
        stock: take("stock")?.parse()?,
        users: get.get("users").map_or(Ok(10_000), |v| v.parse())?,
        requests: get.get("requests").map_or(Ok(100_000), |v| v.parse())?,
        concurrency: get.get("concurrency").map_or(Ok(256), |v| v.parse())?,
        opens_at_ms: take("opens-at-ms")?.parse()?,
        tolerate_transport_errors: get.get("tolerate-transport-errors").map_or(Ok(false), |v| v.parse())?,
        expect_sold_out: get.get("expect-sold-out").map_or(Ok(true), |v| v.parse())?,
        timeline: get.get("timeline").cloned(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let round = args.event.round(1);
    let url = format!("{}/api/v1/events/{}/{}/issue", args.issuer, args.event.namespace, args.event.name);
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
            title: format!(
                "{} round 1: {} users, {} requests, stock {}",
                args.event, args.users, args.requests, args.stock
            ),
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
            rows = couponrush_e2e::spike::rows(&pool, &round).await?;
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
