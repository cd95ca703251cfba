//! Guarantees 1–4 for every strategy, against the real Redis, Kafka and MariaDB:
//! 10,000 distinct users send 50,000 requests concurrently (each several times,
//! interleaved) at a round with stock 1,000 → exactly 1,000 coupons, one per user,
//! seqs 1..=1,000, exactly the winners in MySQL, no 5xx.

use std::time::Duration;

use couponrush_core::event::Strategy;
use couponrush_e2e::Scope;
use couponrush_e2e::load::{Spike, Tally, check_sold_out, poll_queue, rows};
use couponrush_issuer::config::ServeConfig;

const OPENS_IN: Duration = Duration::from_millis(1500);

/// Runs the spike and returns the winners (for `queue`, after the users polled).
async fn spike_round(strategy: Strategy, stock: u32, spike: Spike, issuers: usize) -> anyhow::Result<()> {
    let scope = Scope::new(strategy.as_str()).await?;
    let round = scope.round("spike")?;
    scope.prewarm(&round, strategy, stock, OPENS_IN).await?;
    // `redis-lock` serialises every admission through one lock, so a waiter's turn comes
    // after up to `concurrency` transactions; on a loaded two-core machine that passed the
    // default 5 s wait and the designed 503 answer appeared (CI, stop 17). The spike tests
    // exactness, not the lock's latency: the wait is long here, and the 503 itself is
    // tested in api_contract.
    let config = ServeConfig { lock_wait: Duration::from_secs(120), ..couponrush_e2e::issuer_config() };
    let mut running = Vec::new();
    for _ in 0..issuers {
        running.push(scope.start_issuer_with(scope.backends(), config.clone()).await?);
    }
    let consumer = if strategy == Strategy::KafkaAsync { Some(scope.start_consumer().await?) } else { None };
    tokio::time::sleep(OPENS_IN).await;

    let urls: Vec<String> = running.iter().map(|issuer| issuer.issue_url(&round)).collect();
    let tally: Tally = spike.run(&urls).await?;
    println!(
        "{strategy}: {} requests in {:?}: {:?}",
        spike.users * spike.requests_per_user,
        tally.elapsed,
        tally.by_status
    );
    assert_eq!(tally.server_errors(), 0, "5xx answers: {:?}", tally.by_code);
    assert_eq!(tally.transport_errors, 0);
    let allowed = ["ISSUED", "ALREADY_ISSUED", "SOLD_OUT", "QUEUED"];
    assert!(tally.by_status.keys().all(|s| allowed.contains(&s.as_str())), "{:?}", tally.by_status);

    let winners = if strategy == Strategy::Queue {
        assert_eq!(tally.count("ISSUED"), 0, "queue answers 202 first");
        poll_queue(&urls[0], &tally.queued, Duration::from_secs(120)).await?
    } else {
        tally.issued.clone()
    };
    let expected_rows = u64::from(stock.min(u32::try_from(spike.users)?));
    scope.wait_for_rows(&round, expected_rows, Duration::from_secs(30)).await?;
    let rows = rows(&scope.pool().await?, &round).await?;
    check_sold_out(u32::try_from(expected_rows)?, &winners, &tally.already, &rows)?;

    for issuer in running {
        issuer.stop().await?;
    }
    if let Some(consumer) = consumer {
        consumer.stop().await?;
    }
    Ok(())
}

fn seed_spike() -> Spike {
    Spike { users: 10_000, requests_per_user: 5, concurrency: 128 }
}

async fn all_cases(strategy: Strategy) -> anyhow::Result<()> {
    // The seed scenario: 10,000 users, 50,000 requests, stock 1,000.
    spike_round(strategy, 1_000, seed_spike(), 1).await?;
    // Stock larger than demand: everyone gets one.
    spike_round(strategy, 5_000, Spike { users: 2_000, requests_per_user: 2, concurrency: 64 }, 1).await?;
    // Stock 1: exactly one winner.
    spike_round(strategy, 1, Spike { users: 1_000, requests_per_user: 2, concurrency: 64 }, 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::KafkaAsync).await?;
    // Two issuers share the round: the sold-out publish tells the other one.
    spike_round(Strategy::KafkaAsync, 1_000, seed_spike(), 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_lock_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::DbLock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lock_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::RedisLock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counter_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::RedisCounter).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counter_set_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::RedisCounterSet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_never_oversells() -> anyhow::Result<()> {
    all_cases(Strategy::Queue).await
}
