//! Issue 11, finding 3 (issuer and backends side): Redis losing a round mid-Live.
//!
//! - Redis killed with SIGKILL mid-spike and restarted with the persistence couponrush
//!   requires (AOF, `appendfsync always`, as `local/backends.sh` runs it): every 201 is
//!   persisted exactly once, no seq is handed out twice, and the round sells its stock.
//! - The round's keys flushed (FLUSHALL) mid-Live: the issuer stops admitting (503
//!   UNAVAILABLE) instead of starting over, a fresh pre-warm is refused;
//!   `couponrush-issuer recover` rebuilds the round from the coupons in Kafka, the issuer
//!   resumes by itself, and the round sells out with every seq handed out once.
//!
//! These stop, kill and flush this checkout's own Redis (`local/backends.sh`, with the
//! port variables of the caller); run them one at a time.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use couponrush_core::event::{RoundSpec, Strategy};
use couponrush_core::prewarm::{self, PrewarmError};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::round_store::meta::round_meta;
use couponrush_e2e::load::{Spike, Tally, rows};
use couponrush_e2e::{Scope, token, wait_until};
use redis::AsyncCommands;

async fn backends(args: &[&str]) -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../local/backends.sh");
    let status = tokio::process::Command::new("bash").arg(script).args(args).status().await?;
    anyhow::ensure!(status.success(), "local/backends.sh {args:?} failed");
    Ok(())
}

/// The persistence `local/backends.sh` gives Redis, read back from the running server.
async fn require_documented_persistence(scope: &Scope) -> anyhow::Result<()> {
    let mut redis = scope.redis().await?;
    for (name, wanted) in [("appendonly", "yes"), ("appendfsync", "always")] {
        let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut redis).await?;
        anyhow::ensure!(
            got.get(1).map(String::as_str) == Some(wanted),
            "Redis runs with {name} {got:?}, not {wanted}: restart it with local/backends.sh"
        );
    }
    Ok(())
}

struct Run {
    status: std::process::ExitStatus,
    log: String,
}

/// `couponrush-issuer recover`, as an operator would run it against the event's backends.
async fn recover(scope: &Scope, round: &couponrush_core::event::RoundId) -> anyhow::Result<Run> {
    let backends = scope.backends();
    let output = tokio::process::Command::new(couponrush_e2e::binary("couponrush-issuer")?)
        .args(["recover", "--namespace", &round.event.namespace, "--name", &round.event.name])
        .args(["--round", &round.round.to_string()])
        .env("REDIS_URL", &backends.redis_url)
        .env("DATABASE_URL", &backends.database_url)
        .env("KAFKA_BROKERS", &backends.kafka_brokers)
        .env("KAFKA_TOPIC", &backends.kafka_topic)
        .env("NO_COLOR", "1")
        .output()
        .await?;
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok(Run { status: output.status, log })
}

fn answered(tallies: &[&Tally]) -> Vec<(String, u32)> {
    tallies.iter().flat_map(|t| t.issued.iter().chain(&t.already).cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_spike_and_restarted_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("redis-kill").await?;
    require_documented_persistence(&scope).await?;
    let round = scope.round("kill")?;
    let stock = 1_000;
    scope.prewarm(&round, Strategy::KafkaAsync, stock, Duration::from_millis(500)).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let urls = vec![issuer.issue_url(&round)];
    let spike = Spike { users: 5_000, requests_per_user: 2, concurrency: 64 };
    let first = {
        let (spike, urls) = (spike.clone(), urls.clone());
        tokio::spawn(async move { spike.run(&urls).await })
    };
    let keys = RoundKeys::new(&round);
    let redis = scope.redis().await?;
    wait_until("200 admissions before the kill", Duration::from_secs(30), || {
        let (mut redis, keys) = (redis.clone(), keys.clone());
        async move { Ok(round_meta(&mut redis, &keys).await?.is_some_and(|meta| meta.seq >= 200)) }
    })
    .await?;
    backends(&["kill", "redis"]).await?;
    let address = scope.env.redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    wait_until("Redis to refuse connections", Duration::from_secs(10), || async {
        Ok(tokio::net::TcpStream::connect(&address).await.is_err())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // requests meet a dead Redis
    backends(&["up", "redis"]).await?;
    let first = first.await??;
    println!("during the kill: {:?}", first.by_status);
    // Everyone tries once more (a user who saw 503 retries): the round sells out and every
    // admission whose answer was lost is answered (and published) now.
    let retry = spike.run(&urls).await?;
    println!("after the restart: {:?}", retry.by_status);
    assert_eq!(retry.server_errors(), 0, "{:?}", retry.by_code);

    let mut redis = scope.redis().await?;
    let meta = round_meta(&mut redis, &keys).await?.ok_or_else(|| anyhow::anyhow!("the round's keys are gone"))?;
    assert_eq!(meta.remaining, 0, "the round sells out after the restart");
    let winners: HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
    assert_eq!(winners.len(), stock as usize);
    scope.wait_for_rows(&round, u64::from(stock), Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late extra row would show now
    let mut rows = rows(&scope.pool().await?, &round).await?;
    let mut winners: Vec<(String, u32)> = winners.into_iter().collect();
    rows.sort();
    winners.sort();
    assert_eq!(rows, winners, "rows are exactly the winners Redis kept");
    let seqs: HashSet<u32> = rows.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len(), rows.len(), "no seq given twice");
    let by_user: HashMap<&str, u32> = rows.iter().map(|(user, seq)| (user.as_str(), *seq)).collect();
    for (user, seq) in answered(&[&first, &retry]) {
        assert_eq!(by_user.get(user.as_str()), Some(&seq), "{user} was answered seq {seq}");
    }
    consumer.stop().await?;
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_round_stops_admitting_until_recovered_from_kafka() -> anyhow::Result<()> {
    let scope = Scope::new("redis-flush").await?;
    let round = scope.round("flush")?;
    let spec = RoundSpec {
        stock: 100,
        per_user: 1,
        start_ms: couponrush_core::wall_clock_ms(),
        end_ms: None,
        strategy: Strategy::KafkaAsync,
        buckets: 1,
    };
    scope.prewarm_spec(&round, &spec).await?;
    let issuer = scope.start_issuer().await?;
    let url = issuer.issue_url(&round);
    let client = reqwest::Client::new();
    let post = |user: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(&url).bearer_auth(token(&user)).send().await?;
            let code = response.status().as_u16();
            anyhow::Ok((code, response.json::<serde_json::Value>().await?))
        }
    };
    // Ten coupons admitted and in Kafka; no consumer yet, so none is in MySQL.
    for i in 0..10 {
        assert_eq!(post(format!("early-{i}")).await?.0, 201);
    }
    let _: () = redis::cmd("FLUSHALL").query_async(&mut scope.redis().await?).await?;

    // At once (the script finds no keys) and after the issuer's refresh noticed.
    for (when, user) in [("at once", "late-1"), ("after the refresh", "late-2")] {
        if when != "at once" {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        let (code, body) = post(user.to_owned()).await?;
        assert_eq!(code, 503, "{when}: {body}");
        assert_eq!(body["status"], "UNAVAILABLE", "{when}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("paused")), "{when}: {body}");
    }
    // The operator would pre-warm again: refused, since fresh keys would reuse seqs 1..10.
    let again = prewarm::prewarm(&mut scope.redis().await?, &scope.pool().await?, &round, &spec).await;
    assert!(matches!(again, Err(PrewarmError::RedisLostRound(_))), "{again:?}");
    // The recovery (README, "Redis durability"): the ten coupons are in Kafka only, so
    // the round is rebuilt from the topic; the issuer resumes on its own.
    let recovered = recover(&scope, &round).await?;
    assert!(recovered.status.success(), "recover failed: {}", recovered.log);
    assert!(recovered.log.contains("from_kafka_only=10"), "{}", recovered.log);
    let meta = round_meta(&mut scope.redis().await?, &RoundKeys::new(&round)).await?;
    let meta = meta.ok_or_else(|| anyhow::anyhow!("no meta after the recovery"))?;
    assert_eq!((meta.stock, meta.remaining, meta.seq), (100, 90, 10));
    let winners: u32 = scope.redis().await?.hlen(RoundKeys::new(&round).winners).await?;
    assert_eq!(winners, 10);
    // The first admission after it gets seq 11, never one of 1..10 again.
    let resumed_by = std::time::Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let (code, body) = post("late-3".to_owned()).await?;
        if code != 503 || std::time::Instant::now() > resumed_by {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((code, body["seq"].as_u64()), (201, Some(11)), "{body}");
    // The round runs to its end: the consumer stores all of it, each coupon once.
    let consumer = scope.start_consumer().await?;
    let rest = Spike { users: 300, requests_per_user: 1, concurrency: 16 }.run(std::slice::from_ref(&url)).await?;
    assert_eq!(rest.server_errors(), 0);
    assert_eq!(rest.issued.len(), 89);
    scope.wait_for_rows(&round, 100, Duration::from_secs(30)).await?;
    let rows = rows(&scope.pool().await?, &round).await?;
    let seqs: HashSet<u32> = rows.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=100).collect::<HashSet<u32>>(), "every seq once");
    let by_user: HashMap<&str, u32> = rows.iter().map(|(user, seq)| (user.as_str(), *seq)).collect();
    for (user, seq) in rest.issued.iter().chain([&("late-3".to_owned(), 11)]) {
        assert_eq!(by_user.get(user.as_str()), Some(seq), "{user} was answered seq {seq}");
    }
    assert_eq!(rows.iter().filter(|(user, _)| user.starts_with("early-")).count(), 10);
    // An intact round is never rewritten from a snapshot.
    let again = recover(&scope, &round).await?;
    assert!(!again.status.success() && again.log.contains("intact"), "{}", again.log);
    consumer.stop().await?;
    issuer.stop().await
}
