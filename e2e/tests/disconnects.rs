//! Issue 11, finding 5: a client that hangs up, or a Redis reply that never comes, must
//! not cost an admitted coupon. axum drops a request's future when its client goes away;
//! admitted coupons must still be published (kafka-async) and counter places still be
//! given back (redis-counter), so that a round sells exactly its stock and every winner
//! ends up as a row, with no reconciliation.
//!
//! Against the real Redis, Kafka and MariaDB (`local/backends.sh up`); the stall test
//! pauses this checkout's Redis with SIGSTOP (`local/backends.sh pause redis`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use couponrush_core::event::{RoundId, Strategy};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::round_store::meta::round_meta;
use couponrush_e2e::load::{HangUps, Spike, Tally, rows};
use couponrush_e2e::{Scope, token};
use redis::AsyncCommands;

const OPENS_IN: Duration = Duration::from_millis(1500);

async fn backends(args: &[&str]) -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../local/backends.sh");
    let status = tokio::process::Command::new("bash").arg(script).args(args).status().await?;
    anyhow::ensure!(status.success(), "local/backends.sh {args:?} failed");
    Ok(())
}

/// Rows are exactly `stock` distinct users with distinct seqs, and every 201 any client
/// saw is one of them.
fn check_rows(stock: u32, rows: &[(String, u32)], answered: &[&Tally]) -> anyhow::Result<()> {
    anyhow::ensure!(rows.len() == stock as usize, "{} rows for stock {stock}", rows.len());
    let users: HashSet<&str> = rows.iter().map(|(user, _)| user.as_str()).collect();
    let seqs: HashSet<u32> = rows.iter().map(|(_, seq)| *seq).collect();
    anyhow::ensure!(users.len() == rows.len() && seqs.len() == rows.len(), "a user or a seq appears twice");
    let by_user: HashMap<&str, u32> = rows.iter().map(|(user, seq)| (user.as_str(), *seq)).collect();
    for tally in answered {
        for (user, seq) in tally.issued.iter().chain(&tally.already) {
            anyhow::ensure!(by_user.get(user.as_str()) == Some(seq), "{user} was told seq {seq}, which has no row");
        }
    }
    Ok(())
}

/// Half the requests of a spike are abandoned 0–20 ms after they are sent, then patient
/// users buy whatever is left: the round must sell exactly its stock, all of it in MySQL.
async fn hang_up_spike(strategy: Strategy) -> anyhow::Result<()> {
    let stock = 500;
    let scope = Scope::new(&format!("hangup-{strategy}")).await?;
    let round = scope.round("spike")?;
    scope.prewarm(&round, strategy, stock, OPENS_IN).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = if strategy == Strategy::KafkaAsync { Some(scope.start_consumer().await?) } else { None };
    tokio::time::sleep(OPENS_IN).await;
    let urls = vec![issuer.issue_url(&round)];

    let hang_ups = HangUps { probability: 0.5, within: Duration::from_millis(20) };
    let impatient =
        Spike { users: 3_000, requests_per_user: 2, concurrency: 128 }.run_as(&urls, 0, Some(hang_ups)).await?;
    println!("{strategy}, impatient: {} hung up, {:?}", impatient.hung_up, impatient.by_status);
    assert!(impatient.hung_up > 200, "the hang-ups must really happen ({})", impatient.hung_up);
    let patient = Spike { users: 1_000, requests_per_user: 1, concurrency: 64 }.run_as(&urls, 100_000, None).await?;
    println!("{strategy}, patient: {:?}", patient.by_status);
    assert_eq!(patient.server_errors(), 0, "{:?}", patient.by_code);

    scope
        .wait_for_rows(&round, u64::from(stock), Duration::from_secs(30))
        .await
        .map_err(|error| anyhow::anyhow!("the round did not sell its stock into MySQL: {error:#}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late extra row would show now
    let rows = rows(&scope.pool().await?, &round).await?;
    check_rows(stock, &rows, &[&impatient, &patient])?;

    let keys = RoundKeys::new(&round);
    let mut redis = scope.redis().await?;
    if strategy == Strategy::KafkaAsync {
        // Winners in Redis are exactly the rows: none was left unpublished.
        let winners: HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
        let mut winners: Vec<(String, u32)> = winners.into_iter().collect();
        let mut sorted_rows = rows.clone();
        winners.sort();
        sorted_rows.sort();
        assert_eq!(winners, sorted_rows, "winners in Redis and rows in MySQL differ");
    } else {
        // Every place not backed by a coupon was given back.
        let admitted: u32 = redis.get(&keys.admitted).await?;
        assert_eq!(admitted, stock, "counter places taken for {stock} coupons");
    }
    if let Some(consumer) = consumer {
        consumer.stop().await?;
    }
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_clients_hanging_up_lose_no_coupon() -> anyhow::Result<()> {
    hang_up_spike(Strategy::KafkaAsync).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counter_clients_hanging_up_leak_no_place() -> anyhow::Result<()> {
    hang_up_spike(Strategy::RedisCounter).await
}

async fn post(client: &reqwest::Client, url: &str, user: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = client.post(url).bearer_auth(token(user)).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Before the opening nearly every request is early, and Redis is the one shared,
/// single-threaded piece of the admission: an issuer answers NOT_STARTED from what it knows
/// of the round until just before the opening (100 ms), without asking Redis, so early presses
/// cost Redis nothing (shown here by stalling it: the answers still come, at once). The
/// last second goes to Redis, whose clock decides the opening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_presses_are_answered_without_redis() -> anyhow::Result<()> {
    let scope = Scope::new("early").await?;
    let round: RoundId = scope.round("early")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 10, Duration::from_secs(60)).await?;
    let issuer = scope.start_issuer().await?;
    let url = issuer.issue_url(&round);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    // The issuer learns the round (its first lookup reads Redis).
    assert_eq!(post(&client, &url, "early-0").await?.0, 409);

    backends(&["pause", "redis"]).await?;
    let started = std::time::Instant::now();
    let early = async {
        let users: Vec<String> = (1..=50).map(|i| format!("early-{i}")).collect();
        let answers = futures::future::join_all(users.iter().map(|user| async {
            let response = client.post(&url).bearer_auth(token(user)).send().await?;
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            anyhow::Ok((response.status().as_u16(), retry_after, response.json::<serde_json::Value>().await?))
        }))
        .await;
        anyhow::Ok(answers)
    }
    .await;
    let took = started.elapsed();
    backends(&["resume", "redis"]).await?;
    for answer in early? {
        let (code, retry_after, body) = answer?;
        assert_eq!((code, body["status"].as_str()), (409, Some("NOT_STARTED")), "{body}");
        assert!(body["startsAt"].is_string(), "{body}");
        assert!(retry_after.is_some_and(|s| (50..=61).contains(&s)), "Retry-After {retry_after:?}");
    }
    assert!(took < Duration::from_secs(2), "early answers waited for Redis: {took:?}");
    issuer.stop().await
}

/// Redis stalls (SIGSTOP) longer than the issuer's reply timeout while admissions are in
/// flight: the scripts run when it resumes. The answers must not claim "nothing was
/// issued", a retry must return the same coupon, and every coupon Redis admitted must
/// reach MySQL without reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reply_timeout_is_an_unknown_outcome_and_loses_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("redis-stall").await?;
    let round: RoundId = scope.round("stall")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 100, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let url = issuer.issue_url(&round);
    let client = reqwest::Client::new();
    // The issuer knows the round before Redis stalls.
    assert_eq!(post(&client, &url, "before").await?.0, 201);

    backends(&["pause", "redis"]).await?;
    let stalled = async {
        let users: Vec<String> = (0..10).map(|i| format!("stalled-{i}")).collect();
        let answers = futures::future::join_all(users.iter().map(|user| post(&client, &url, user))).await;
        anyhow::Ok(answers)
    }
    .await;
    backends(&["resume", "redis"]).await?;
    let answers = stalled?;
    for answer in &answers {
        let (code, body) = answer.as_ref().map_err(|error| anyhow::anyhow!("{error:#}"))?;
        assert_eq!(*code, 503, "{body}");
        assert_eq!(body["status"], "OUTCOME_UNKNOWN", "a timed-out admission may have happened: {body}");
    }
    // Each of those users now holds a coupon (the scripts ran on resume) and a retry says so.
    for i in 0..10 {
        let user = format!("stalled-{i}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (code, body) = loop {
            let answer = post(&client, &url, &user).await?;
            if answer.0 != 503 || std::time::Instant::now() >= deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(code == 200 || code == 201, "{user}: {code} {body}");
    }
    let mut redis = scope.redis().await?;
    let keys = RoundKeys::new(&round);
    let winners: HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
    scope.wait_for_rows(&round, winners.len() as u64, Duration::from_secs(30)).await?;
    let mut rows = rows(&scope.pool().await?, &round).await?;
    let mut winners: Vec<(String, u32)> = winners.into_iter().collect();
    rows.sort();
    winners.sort();
    assert_eq!(rows, winners, "every admission Redis holds is a row");
    let meta = round_meta(&mut redis, &keys).await?.ok_or_else(|| anyhow::anyhow!("meta vanished"))?;
    assert_eq!(meta.stock - meta.remaining, winners.len() as u32);
    consumer.stop().await?;
    issuer.stop().await
}
