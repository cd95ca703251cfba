//! The benchmark's load generator measures what it claims: every request sent once as its
//! user, answers tallied by code and status word, and a server that cannot keep up shows
//! in the latency from the due time, not hidden behind the generator's own queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use couponrush_e2e::load::Plan;
use hyper::header::{HeaderName, HeaderValue};

type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A server that answers 201 ISSUED after `delay`, counting requests per X-User-Id.
async fn slow_server(delay: Duration) -> anyhow::Result<(std::net::SocketAddr, Seen)> {
    let seen: Seen = Arc::default();
    let app = Router::new().route(
        "/api/v1/events/{namespace}/{name}/issue",
        post({
            let seen = seen.clone();
            move |headers: HeaderMap| async move {
                let user = headers.get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                *seen.lock().unwrap_or_else(|e| e.into_inner()).entry(user).or_default() += 1;
                tokio::time::sleep(delay).await;
                (StatusCode::CREATED, r#"{"status":"ISSUED","seq":1}"#)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, seen))
}

fn plan(addr: std::net::SocketAddr, rate: f64, connections: usize, users: u32, requests: u32) -> anyhow::Result<Plan> {
    Ok(Plan {
        addr,
        host: HeaderValue::try_from(addr.to_string())?,
        path: "/api/v1/events/load/test/issue".to_owned(),
        rate,
        connections,
        timeout: Duration::from_secs(10),
        credentials: (0..users)
            .map(|i| Ok((HeaderName::from_static("x-user-id"), HeaderValue::try_from(format!("u{i}"))?)))
            .collect::<anyhow::Result<_>>()?,
        users_by_request: (0..requests).map(|k| k % users).collect(),
    })
}

#[tokio::test]
async fn every_request_is_sent_once_as_its_user_and_tallied() -> anyhow::Result<()> {
    let (addr, seen) = slow_server(Duration::ZERO).await?;
    let report = plan(addr, 2_000.0, 8, 50, 1_000)?.run(None).await?;
    assert_eq!(report.requests, 1_000);
    assert_eq!(report.answered, 1_000);
    assert_eq!(report.by_code.get(&201), Some(&1_000));
    assert_eq!(report.by_status.get("ISSUED"), Some(&1_000));
    assert_eq!(report.errors(), 0);
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 50, "50 distinct users");
    assert!(seen.values().all(|n| *n == 20), "each user 1,000 / 50 times: {seen:?}");
    // The schedule spreads the requests over 0.5 s; an answer cannot come before its due time.
    assert!(report.window_s >= 0.49, "window {} s", report.window_s);
    assert!(report.window_s < 1.5, "window {} s: the generator fell far behind its schedule", report.window_s);
    Ok(())
}

#[tokio::test]
async fn a_server_that_falls_behind_shows_in_latency_from_the_due_time() -> anyhow::Result<()> {
    // 2 connections × 1 answer per 20 ms = 100/s at most, offered 500/s for 0.2 s: the
    // last requests wait about 0.8 s in the generator before they can even be sent.
    let (addr, _) = slow_server(Duration::from_millis(20)).await?;
    let report = plan(addr, 500.0, 2, 10, 100)?.run(None).await?;
    assert_eq!(report.answered, 100);
    assert!(report.service_ms.p99 < 200.0, "service p99 {} ms", report.service_ms.p99);
    assert!(report.from_due_ms.p99 > 500.0, "from-due p99 {} ms hides the queue", report.from_due_ms.p99);
    assert!(report.late_sends > 50, "late sends {}", report.late_sends);
    assert!(report.achieved_per_s < 150.0, "achieved {} / s beyond the server's capacity", report.achieved_per_s);
    Ok(())
}
