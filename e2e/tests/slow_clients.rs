//! Issue 12, HTTP edges: clients too slow to be served cannot hold an issuer's
//! connections past its timeouts, nor starve the clients that are quick.
//!
//! Against a live kafka-async round on the real Redis and Kafka (`local/backends.sh up`),
//! an issuer in this process with short timeouts, and raw loopback sockets for the slow
//! clients. Every loop is bounded by a count or a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use couponrush_core::event::Strategy;
use couponrush_e2e::{Issuer, Scope, token, wait_until};
use couponrush_issuer::config::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that trickle a request head, one header line every [`TRICKLE`].
const SLOWLORIS: usize = 200;
/// Connections that send a whole head, then the body a byte every [`TRICKLE`].
const SLOW_BODIES: usize = 200;
const TRICKLE: Duration = Duration::from_millis(250);
/// How late after its timeout a slow connection may still be closed: generous, for a
/// loaded 2-core machine running the clients and the issuer in one process.
const CLOSE_SLACK: Duration = Duration::from_millis(1500);
/// The fast clients' stated bound: their 99th percentile latency while the slow
/// connections are open.
const FAST_P99_BOUND: Duration = Duration::from_secs(1);

fn config(max_connections: u32) -> ServeConfig {
    ServeConfig {
        jwt_hs256_secret: Some(couponrush_e2e::JWT_SECRET.to_owned()),
        http_header_timeout: HEADER_TIMEOUT,
        http_body_timeout: BODY_TIMEOUT,
        http_idle_timeout: IDLE_TIMEOUT,
        http_max_connections: max_connections,
        ..ServeConfig::default()
    }
}

/// What a slow client saw: when the server closed its connection (from its connect),
/// and the start of what the server wrote before.
#[derive(Debug)]
struct Cut {
    after: Option<Duration>,
    answer: String,
}

/// Connects, writes `head`, then `piece` every [`TRICKLE`] (at most `pieces` times)
/// until the server closes the connection or 12 s have passed.
async fn trickle(addr: SocketAddr, head: String, piece: &'static [u8], pieces: usize) -> anyhow::Result<Cut> {
    let stream = TcpStream::connect(addr).await?;
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(12), read.read_to_end(&mut answer)).await;
        // A reset counts as closed too.
        let after = closed.is_ok().then(|| started.elapsed());
        Cut { after, answer: String::from_utf8_lossy(&answer).chars().take(40).collect() }
    });
    write.write_all(head.as_bytes()).await?;
    for _ in 0..pieces {
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(TRICKLE).await;
        if write.write_all(piece).await.is_err() {
            break;
        }
    }
    Ok(reader.await?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// A metric's value in the issuer's `/metrics` text (0 when absent).
async fn metric(issuer: &Issuer, series: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", issuer.base_url())).await?.text().await?;
    Ok(text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0))
}

/// Hundreds of slowloris and slow-body connections against a live round, while fast
/// clients keep issuing: the fast clients are answered within the bound, every slow head
/// is cut at the header timeout, and every slow body gets a 408 at the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_and_fast_clients_stay_served() -> anyhow::Result<()> {
    let scope = Scope::new("slow-clients").await?;
    let round = scope.round("slow")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 100_000, Duration::ZERO).await?;
    let issuer = scope.start_issuer_with(scope.backends(), config(1024)).await?;
    let path = format!("/api/v1/events/{}/{}/issue", round.event.namespace, round.event.name);

    let mut slow = Vec::new();
    for i in 0..SLOWLORIS {
        let head = format!("POST {path} HTTP/1.1\r\nHost: issuer\r\nX-Slow: {i}\r\n");
        slow.push(("slowloris", trickle(issuer.addr, head, b"X-More: a\r\n", 40)));
    }
    for i in 0..SLOW_BODIES {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: issuer\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n",
            token(&format!("slow-body-{i}"))
        );
        slow.push(("slow body", trickle(issuer.addr, head, b" ", 40)));
    }
    let slow = futures::future::join_all(slow.into_iter().map(|(kind, cut)| async move { (kind, cut.await) }));
    let slow = tokio::spawn(slow);
    // Give the slow clients a moment to connect, then issue fast for longer than the
    // slow connections may live.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fast_for = HEADER_TIMEOUT + Duration::from_millis(500);
    let workers = (0..8).map(|worker| {
        let url = issuer.issue_url(&round);
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            let until = Instant::now() + fast_for;
            let mut seen = Vec::new();
            for i in 0..10_000 {
                if Instant::now() >= until {
                    break;
                }
                let sent = Instant::now();
                let response = client.post(&url).bearer_auth(token(&format!("fast-{worker}-{i}"))).send().await?;
                seen.push((response.status().as_u16(), sent.elapsed()));
            }
            anyhow::Ok(seen)
        })
    });
    let mut fast = Vec::new();
    for worker in workers {
        fast.extend(worker.await??);
    }
    let cuts = slow.await?;

    let statuses: Vec<u16> = fast.iter().map(|(status, _)| *status).filter(|status| *status != 201).collect();
    assert!(statuses.is_empty(), "fast clients got other answers than 201: {statuses:?}");
    let mut latencies: Vec<Duration> = fast.iter().map(|(_, latency)| *latency).collect();
    latencies.sort();
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
    println!(
        "fast clients: {} requests in {fast_for:?} beside {} slow connections; p50 {p50:?}, p99 {p99:?}, max {max:?}",
        latencies.len(),
        SLOWLORIS + SLOW_BODIES
    );
    assert!(latencies.len() >= 100, "only {} fast requests were answered", latencies.len());
    assert!(p99 < FAST_P99_BOUND, "fast clients' p99 {p99:?} is above {FAST_P99_BOUND:?}");

    let mut closed_after = Vec::new();
    for (kind, cut) in cuts {
        let cut = cut?;
        let after = cut.after.unwrap_or_else(|| panic!("a {kind} connection was never closed: {cut:?}"));
        let timeout = if kind == "slowloris" { HEADER_TIMEOUT } else { BODY_TIMEOUT };
        assert!(
            after >= timeout.saturating_sub(Duration::from_millis(300)) && after <= timeout + CLOSE_SLACK,
            "a {kind} connection was closed after {after:?}, not at its timeout {timeout:?}: {cut:?}"
        );
        if kind == "slowloris" {
            assert!(cut.answer.is_empty(), "a half-sent request got an answer: {cut:?}");
        } else {
            assert!(cut.answer.starts_with("HTTP/1.1 408"), "a slow body was not answered 408: {cut:?}");
        }
        closed_after.push(after);
    }
    closed_after.sort();
    println!(
        "slow connections closed after: min {:?}, p50 {:?}, max {:?}",
        closed_after[0],
        percentile(&closed_after, 0.5),
        percentile(&closed_after, 1.0)
    );
    let header_cuts = metric(&issuer, "couponrush_issuer_http_closed_total{reason=\"header_timeout\"}").await?;
    assert_eq!(header_cuts, SLOWLORIS as f64, "the issuer counts each slowloris connection it cut");
    issuer.stop().await
}

/// The connection bound holds: with every slot taken by a silent connection, a new
/// client is not served until the header timeout frees a slot, and then it is. A
/// keep-alive connection left idle is closed at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_bound_holds_and_timeouts_free_it() -> anyhow::Result<()> {
    const BOUND: u32 = 50;
    let scope = Scope::new("connection-bound").await?;
    let round = scope.round("bound")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1_000, Duration::ZERO).await?;
    let issuer = scope.start_issuer_with(scope.backends(), config(BOUND)).await?;
    // start_issuer_with's readiness probe used a connection; let it go idle and close.
    wait_until("the probe's connection closed", IDLE_TIMEOUT * 3, || async {
        Ok(metric(&issuer, "couponrush_issuer_http_connections").await? <= 1.0)
    })
    .await?;

    // A keep-alive request, then silence: the server closes at the idle timeout.
    let mut idle = TcpStream::connect(issuer.addr).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n").await?;
    let mut answer = Vec::new();
    let answered = Instant::now();
    let mut buf = [0u8; 512];
    let idle_closed = tokio::time::timeout(IDLE_TIMEOUT + CLOSE_SLACK * 2, async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return answered.elapsed(),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await?;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert!(
        idle_closed >= IDLE_TIMEOUT.saturating_sub(Duration::from_millis(300))
            && idle_closed <= IDLE_TIMEOUT + CLOSE_SLACK,
        "an idle keep-alive connection was closed after {idle_closed:?}"
    );

    // Every slot taken by a connection that sends nothing.
    let mut silent = Vec::new();
    for _ in 0..BOUND {
        silent.push(TcpStream::connect(issuer.addr).await?);
    }
    let taken = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let response = client.post(issuer.issue_url(&round)).bearer_auth(token("patient")).send().await?;
    let waited = taken.elapsed();
    assert_eq!(response.status().as_u16(), 201);
    println!("with {BOUND} of {BOUND} slots held by silent connections, a new client waited {waited:?}");
    assert!(
        waited >= HEADER_TIMEOUT.saturating_sub(Duration::from_millis(200)),
        "served after {waited:?}: more than {BOUND} connections were open at once"
    );
    assert!(waited <= HEADER_TIMEOUT + CLOSE_SLACK, "the header timeout did not free the slots: {waited:?}");
    drop(silent);
    issuer.stop().await
}
