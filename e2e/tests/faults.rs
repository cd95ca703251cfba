//! kafka-async under faults, against the real servers: the consumer killed with
//! SIGKILL mid-spike, the Kafka broker stopped while users are being admitted, and
//! MariaDB stopped while a round sells out.
//! Guarantee 3 (every 201 becomes exactly one row) and 6 (an outage gets 503 and
//! changes nothing) must hold through both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use couponrush_core::db;
use couponrush_core::event::Strategy;
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::round_store::meta::round_meta;
use couponrush_e2e::load::{Spike, check_sold_out, check_winners, rows};
use couponrush_e2e::{Scope, wait_until};
use redis::AsyncCommands;

fn backends_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../local/backends.sh")
}

async fn backends(args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("bash").arg(backends_script()).args(args).status().await?;
    anyhow::ensure!(status.success(), "local/backends.sh {args:?} failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_killed_mid_spike_still_persists_each_coupon_once() -> anyhow::Result<()> {
    let scope = Scope::new("kill-consumer").await?;
    let round = scope.round("spike")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1_000, Duration::from_millis(500)).await?;
    let issuer = scope.start_issuer().await?;
    // Rate-limited, so that persisting the 1,000 coupons takes a few seconds and the
    // kill lands in the middle of it.
    let mut consumer = scope.spawn_consumer_process(400)?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let urls = vec![issuer.issue_url(&round)];
    let spike =
        tokio::spawn(async move { Spike { users: 10_000, requests_per_user: 5, concurrency: 128 }.run(&urls).await });
    let pool = scope.pool().await?;
    wait_until("some rows persisted", Duration::from_secs(30), || async {
        Ok(db::count_coupons(&pool, &round).await? >= 200)
    })
    .await?;
    consumer.start_kill()?; // SIGKILL
    consumer.wait().await?;
    let persisted_at_kill = db::count_coupons(&pool, &round).await?;
    assert!(persisted_at_kill < 1_000, "the kill must land before everything is persisted ({persisted_at_kill})");
    let mut restarted = scope.spawn_consumer_process(0)?;

    let tally = spike.await??;
    assert_eq!(tally.server_errors(), 0, "{:?}", tally.by_code);
    scope.wait_for_rows(&round, 1_000, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late duplicate would show now
    check_sold_out(1_000, &tally.issued, &tally.already, &rows(&pool, &round).await?)?;
    restarted.start_kill()?;
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_and_admits_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("kafka-down").await?;
    let round = scope.round("outage")?;
    let stock = 1_000;
    scope.prewarm(&round, Strategy::KafkaAsync, stock, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let urls = vec![issuer.issue_url(&round)];

    // Before the outage: 100 users get coupons.
    let before = Spike { users: 100, requests_per_user: 1, concurrency: 20 }.run(&urls).await?;
    assert_eq!(before.count("ISSUED"), 100);
    scope.wait_for_rows(&round, 100, Duration::from_secs(20)).await?;

    // During the outage: every new admission is rolled back and answered 503.
    let keys = RoundKeys::new(&round);
    let mut redis = scope.redis().await?;
    let winners_before: HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
    backends(&["stop", "kafka"]).await?;
    let broker = scope.env.kafka_brokers.clone();
    wait_until("the broker to refuse connections", Duration::from_secs(10), || async {
        Ok(tokio::net::TcpStream::connect(&broker).await.is_err())
    })
    .await
    .context("local/backends.sh stop kafka left a broker answering (started from another state dir?)")?;
    let client = reqwest::Client::new();
    let probes = futures::future::join_all(
        (0..20).map(|i| client.post(&urls[0]).bearer_auth(couponrush_e2e::token(&format!("outage-user-{i}"))).send()),
    )
    .await;
    let mut refused = 0;
    for response in probes {
        let response = response?;
        assert_eq!(response.status().as_u16(), 503, "a new user during the outage");
        assert!(response.headers().contains_key("retry-after"));
        refused += 1;
    }
    // A user who already holds a coupon is answered from Redis, broker or not.
    let holder = client.post(&urls[0]).bearer_auth(couponrush_e2e::token("user-000000")).send().await?;
    assert_eq!(holder.status().as_u16(), 200);
    let winners_during: HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
    let meta = round_meta(&mut redis, &keys).await?.ok_or_else(|| anyhow::anyhow!("round meta vanished"))?;
    backends(&["up", "kafka"]).await?;
    assert_eq!(refused, 20);
    assert_eq!(winners_during, winners_before, "no half-admitted user is left in Redis");
    assert_eq!(meta.remaining, stock - 100, "every rolled-back coupon is back in stock");

    // After the outage: the round sells out with exactly `stock` rows.
    let after = Spike { users: 10_000, requests_per_user: 2, concurrency: 64 };
    let after_tally = wait_for_broker_then(&after, &urls).await?;
    assert_eq!(after_tally.server_errors(), 0, "{:?}", after_tally.by_code);
    scope.wait_for_rows(&round, u64::from(stock), Duration::from_secs(60)).await?;
    let all_rows = rows(&scope.pool().await?, &round).await?;
    // Winners: the first 100 (users 0..100, who appear again in `after` as ALREADY_ISSUED)
    // plus every 201 after the outage.
    let mut winners = before.issued.clone();
    winners.extend(after_tally.issued.iter().cloned());
    // The 20 refused admissions used up seqs that are never handed out again.
    check_winners(stock, stock + refused, &winners, &after_tally.already, &all_rows)?;
    consumer.stop().await?;
    issuer.stop().await
}

/// The producer needs a moment to find the restarted broker; retry the first request
/// until it is admitted, then run the spike.
async fn wait_for_broker_then(spike: &Spike, urls: &[String]) -> anyhow::Result<couponrush_e2e::load::Tally> {
    let client = reqwest::Client::new();
    wait_until("the broker to take coupons again", Duration::from_secs(60), || async {
        let response = client.post(&urls[0]).bearer_auth(couponrush_e2e::token("user-000000")).send().await?;
        Ok(response.status().as_u16() != 503)
    })
    .await?;
    spike.run(urls).await
}

/// MariaDB down while a round sells out: admission does not need it (Redis admits, Kafka
/// holds the coupons), the consumer retries its batch with backoff instead of skipping
/// it, and once the database is back every coupon is persisted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_delays_persistence_and_loses_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("mysql-down").await?;
    let round = scope.round("outage")?;
    let stock = 500;
    scope.prewarm(&round, Strategy::KafkaAsync, stock, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let pool = scope.pool().await?;

    backends(&["stop", "mysql"]).await?;
    let database = scope.database_url.clone();
    let outage = async {
        let address = database.rsplit_once('@').and_then(|(_, rest)| rest.split_once('/')).map(|(a, _)| a.to_owned());
        let address = address.context("DATABASE_URL has no host:port")?;
        wait_until("MariaDB to refuse connections", Duration::from_secs(10), || async {
            Ok(tokio::net::TcpStream::connect(&address).await.is_err())
        })
        .await?;
        let urls = vec![issuer.issue_url(&round)];
        let tally = Spike { users: 2_000, requests_per_user: 2, concurrency: 64 }.run(&urls).await?;
        // The consumer has the coupons from Kafka and fails (and backs off) on the database.
        wait_until("the consumer to fail a batch on the database", Duration::from_secs(20), || async {
            let metrics = reqwest::get(format!("{}/metrics", consumer.base_url())).await?.text().await?;
            Ok(metrics.lines().any(|line| {
                line.starts_with("couponrush_consumer_errors_total{")
                    && line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0)
            }))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::Ok(tally)
    }
    .await;
    backends(&["up", "mysql"]).await?;
    let tally = outage?;
    assert_eq!(tally.server_errors(), 0, "admission does not need MySQL: {:?}", tally.by_code);
    assert_eq!(tally.count("ISSUED"), u64::from(stock));

    scope.wait_for_rows(&round, u64::from(stock), Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late duplicate would show now
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&pool, &round).await?)?;
    consumer.stop().await?;
    issuer.stop().await
}

/// The broker down while a user of an empty stock bucket takes a coupon from another
/// bucket: the spilled coupon is rolled back in both buckets (the home bucket's winners
/// and reservation as before, the coupon back in the other bucket's stock and out of its
/// `spilled` hash) and the answer is 503; with the broker back the same user gets a
/// coupon from that bucket under a new seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_rolls_a_spilled_coupon_back_in_both_buckets() -> anyhow::Result<()> {
    use couponrush_core::event::RoundSpec;
    use couponrush_core::round_store::buckets::{home_bucket, seq_of};
    use couponrush_e2e::load::user_name;

    let scope = Scope::new("kafka-down-spill").await?;
    let round = scope.round("spill-outage")?;
    let spec = RoundSpec {
        stock: 6,
        per_user: 1,
        start_ms: couponrush_core::wall_clock_ms(),
        end_ms: None,
        strategy: Strategy::KafkaAsync,
        buckets: 3,
    };
    scope.prewarm_spec(&round, &spec).await?;
    let users: Vec<String> = (0..).map(user_name).filter(|user| home_bucket(user, 3) == 0).take(3).collect();
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let client = reqwest::Client::new();
    let url = issuer.issue_url(&round);
    let press = |user: &str| client.post(&url).bearer_auth(couponrush_e2e::token(user)).send();
    // Bucket 0's two coupons.
    for user in &users[..2] {
        assert_eq!(press(user).await?.status().as_u16(), 201);
    }
    scope.wait_for_rows(&round, 2, Duration::from_secs(20)).await?;

    let (home, donor) = (RoundKeys::bucket(&round, 0), RoundKeys::bucket(&round, 1));
    let mut redis = scope.redis().await?;
    backends(&["stop", "kafka"]).await?;
    let broker = scope.env.kafka_brokers.clone();
    wait_until("the broker to refuse connections", Duration::from_secs(10), || async {
        Ok(tokio::net::TcpStream::connect(&broker).await.is_err())
    })
    .await?;
    let spilled_user = &users[2];
    let refused = press(spilled_user).await?;
    let status = refused.status().as_u16();
    let winners: HashMap<String, u32> = redis.hgetall(&home.winners).await?;
    let reservations: HashMap<String, String> = redis.hgetall(&home.spill_reservations).await?;
    let given: HashMap<String, String> = redis.hgetall(&donor.spilled).await?;
    let donor_meta = round_meta(&mut redis, &donor).await?.context("bucket 1")?;
    backends(&["up", "kafka"]).await?;
    assert_eq!(status, 503, "Kafka refused the spilled coupon");
    assert_eq!(winners.len(), 2, "the spilled user is not a winner: {winners:?}");
    assert!(reservations.is_empty(), "the reservation is gone: {reservations:?}");
    assert!(given.is_empty(), "bucket 1 took its coupon back: {given:?}");
    assert_eq!((donor_meta.remaining, donor_meta.seq), (2, 1), "back in stock; its seq is not handed out again");

    let client = reqwest::Client::new();
    let admitted = std::sync::Mutex::new(None);
    wait_until("the broker to take coupons again", Duration::from_secs(60), || async {
        let response = client.post(&url).bearer_auth(couponrush_e2e::token(spilled_user)).send().await?;
        let code = response.status().as_u16();
        let body: serde_json::Value = response.json().await?;
        if code == 201 {
            *admitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = body["seq"].as_u64();
        }
        Ok(code == 201)
    })
    .await?;
    let seq = *admitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(seq, Some(u64::from(seq_of(1, 3, 2))), "bucket 1's second seq");
    scope.wait_for_rows(&round, 3, Duration::from_secs(30)).await?;
    let stored: HashMap<String, u32> = rows(&scope.pool().await?, &round).await?.into_iter().collect();
    assert_eq!(stored.get(spilled_user), Some(&seq_of(1, 3, 2)));
    consumer.stop().await?;
    issuer.stop().await
}
