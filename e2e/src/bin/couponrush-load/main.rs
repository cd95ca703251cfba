//! `couponrush-load`: the project's load generator (see `couponrush_e2e::load`), in two
//! modes.
//!
//! The open model, what the benchmark measures with: sends `--requests` POSTs to an
//! event's issue URL at a constant `--rate`, each as one of `--users` distinct users
//! (every user about requests/users times, in random order) or, with `--distinct`, every
//! request as a new user; prints a summary and, with `--json`, writes the full report.
//!
//!   couponrush-load --target http://127.0.0.1:8080 --event default/opening-day \
//!     --rate 10000 --requests 100000 --users 10000 --jwt-secret "$SECRET" [--opens-at-ms ...]
//!
//! The spike (`spike.rs`), what the demo and the end-to-end scenarios drive a round with:
//! the seed spike as a closed loop, then the guarantees checked against MySQL.
//!
//!   couponrush-load spike --issuer http://127.0.0.1:18080 --event default/demo --stock 1000 \
//!     --opens-at-ms ... --database-url mysql://... [--timeline round.svg]

mod spike;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use couponrush_e2e::load::{Plan, Report};
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use rand::SeedableRng;
use rand::seq::SliceRandom;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Auth {
    /// `Authorization: Bearer <HS256 JWT>` (the issuer's JWT_HS256_SECRET).
    Jwt,
    /// `X-User-Id: <user>` (the issuer's TRUST_USER_HEADER=true).
    Header,
}

#[derive(Debug, Parser)]
#[command(
    name = "couponrush-load",
    about = "Load on an issuer: the open model (a constant arrival rate, latency from each request's due time) or the seed spike (`spike`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The open model's flags (no subcommand).
    #[command(flatten)]
    open: Option<OpenModelArgs>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The seed spike at a running issuer (closed loop), the guarantees checked against MySQL.
    Spike(spike::Args),
}

/// The open model.
#[derive(Debug, clap::Args)]
struct OpenModelArgs {
    /// Base URL of the issuer (or of the benchmark's ceiling server).
    #[arg(long)]
    target: String,
    /// `namespace/name` of the event.
    #[arg(long)]
    event: String,
    /// Requests per second on the schedule.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 100_000)]
    requests: u32,
    /// Distinct users the requests are spread over (each sends about requests/users).
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Every request from a new user (overrides --users).
    #[arg(long)]
    distinct: bool,
    /// Prefix of the user ids; change it for a fresh set of users against the same round.
    #[arg(long, default_value = "load-user-")]
    user_prefix: String,
    /// Seed of the request order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "jwt")]
    auth: Auth,
    /// The issuer's HS256 secret; unset: $JWT_SECRET, then the e2e secret. Read by hand, not
    /// by clap's `env`: a JWT_SECRET in the environment would count as an open-model flag
    /// and make clap refuse `spike`.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Keep-alive connections (the same number for every target of a comparison).
    #[arg(long, default_value_t = 128)]
    connections: usize,
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Generator threads (1 keeps it to one core; more only for a bigger machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Start the schedule at this instant (epoch ms), e.g. the round's opening.
    #[arg(long)]
    opens_at_ms: Option<i64>,
    /// Write the full report (JSON) here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn credentials(args: &OpenModelArgs, users: u32) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let ttl = Duration::from_secs(24 * 3600);
    let secret = args
        .jwt_secret
        .clone()
        .or_else(|| std::env::var("JWT_SECRET").ok())
        .unwrap_or_else(|| couponrush_e2e::JWT_SECRET.to_owned());
    (0..users)
        .map(|i| {
            let user = format!("{}{i:07}", args.user_prefix);
            Ok(match args.auth {
                Auth::Jwt => (
                    AUTHORIZATION,
                    HeaderValue::try_from(format!(
                        "Bearer {}",
                        couponrush_e2e::token_signed_with(&secret, &user, ttl)
                    ))?,
                ),
                Auth::Header => (HeaderName::from_static("x-user-id"), HeaderValue::try_from(user)?),
            })
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli { mode: Some(Mode::Spike(args)), .. } => tokio::runtime::Runtime::new()?.block_on(spike::run(args)),
        Cli { open: Some(args), .. } => open_model(args),
        Cli { mode: None, open: None } => anyhow::bail!("--target, --event and --rate, or `spike` (see --help)"),
    }
}

fn open_model(args: OpenModelArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.requests > 0 && args.connections > 0, "rate, requests, connections > 0");
    let url: hyper::Uri = args.target.parse().context("--target is a URL")?;
    let authority = url.authority().context("--target needs host:port")?.clone();
    let addr = (authority.host(), authority.port_u16().unwrap_or(80))
        .to_socket_addrs()?
        .next()
        .context("--target does not resolve")?;
    let (namespace, name) = args.event.split_once('/').context("--event is namespace/name")?;

    let minting = Instant::now();
    let users = if args.distinct { args.requests } else { args.users.min(args.requests) };
    let credentials = credentials(&args, users)?;
    let mut users_by_request: Vec<u32> = (0..args.requests).map(|k| k % users).collect();
    users_by_request.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let minting = minting.elapsed();

    let plan = Plan {
        addr,
        host: HeaderValue::try_from(authority.as_str())?,
        path: format!("/api/v1/events/{namespace}/{name}/issue"),
        rate: args.rate,
        connections: args.connections,
        timeout: Duration::from_millis(args.timeout_ms),
        credentials,
        users_by_request,
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let report = runtime.block_on(plan.run(args.opens_at_ms))?;
    print_summary(&args, users, minting, &report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {path:?}"))?;
    }
    Ok(())
}

fn print_summary(args: &OpenModelArgs, users: u32, minting: Duration, report: &Report) {
    println!(
        "{} requests from {users} users ({} tokens prepared in {} ms) at {}/s over {} connections",
        report.requests,
        match args.auth {
            Auth::Jwt => "HS256",
            Auth::Header => "X-User-Id",
        },
        minting.as_millis(),
        args.rate,
        args.connections
    );
    println!(
        "achieved {:.0}/s in {:.2} s; from due: p50 {:.2} p99 {:.2} max {:.1} ms; service p99 {:.2} ms; late sends {}",
        report.achieved_per_s,
        report.window_s,
        report.from_due_ms.p50,
        report.from_due_ms.p99,
        report.from_due_ms.max,
        report.service_ms.p99,
        report.late_sends
    );
    println!(
        "answers {:?} {:?}; transport errors {}, timeouts {}",
        report.by_code, report.by_status, report.transport_errors, report.timeouts
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invocations the scripts use (bench/run.sh, bench/pod.sh; e2e/demo.sh,
    /// e2e/scenario.sh) parse into their mode.
    #[test]
    fn both_modes_parse() {
        let open = Cli::try_parse_from([
            "couponrush-load",
            "--target",
            "http://127.0.0.1:8080",
            "--event",
            "default/opening-day",
            "--rate",
            "10000",
        ])
        .expect("open model");
        assert!(matches!(open, Cli { mode: None, open: Some(OpenModelArgs { requests: 100_000, .. }) }));

        let spike = Cli::try_parse_from([
            "couponrush-load",
            "spike",
            "--issuer",
            "http://127.0.0.1:18080",
            "--event",
            "default/demo",
            "--stock",
            "1000",
            "--opens-at-ms",
            "1",
            "--database-url",
            "mysql://x",
            "--expect-sold-out",
            "false",
        ])
        .expect("spike");
        let Cli { mode: Some(Mode::Spike(args)), open: None } = spike else { panic!("not the spike: {spike:?}") };
        assert_eq!((args.users, args.requests, args.concurrency), (10_000, 100_000, 256));
        assert!(!args.expect_sold_out && !args.tolerate_transport_errors && args.timeline.is_none());
    }

    #[test]
    fn the_modes_do_not_mix() {
        assert!(Cli::try_parse_from(["couponrush-load", "--rate", "1", "spike"]).is_err());
    }
}
