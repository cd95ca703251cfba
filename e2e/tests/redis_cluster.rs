//! The kafka-async spike against a three-node Redis Cluster (local/backends.sh up
//! redis-cluster): every key of a round (of a stock bucket, for a bucketed round) shares
//! one hash tag, so each Lua admission runs on one shard, and the guarantees hold as on a
//! single node: with one bucket, and with the stock split over three buckets whose users
//! spill into each other's stock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::ensure;
use couponrush_core::event::{RoundId, RoundSpec, Strategy};
use couponrush_core::round_store::buckets::{bucket_of_seq, home_bucket, seq_of, split_stock};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::round_store::meta::bucket_metas;
use couponrush_e2e::Scope;
use couponrush_e2e::load::{Spike, check_sold_out, rows, user_name};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_spike_on_a_redis_cluster() -> anyhow::Result<()> {
    let scope = Scope::new_on_redis_cluster("cluster").await?;
    let mut redis = scope.redis().await?;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut redis).await?;
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_size:3"), "{info}");

    let round = scope.round("spike")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1_000, Duration::from_millis(500)).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally =
        Spike { users: 10_000, requests_per_user: 5, concurrency: 128 }.run(&[issuer.issue_url(&round)]).await?;
    println!("kafka-async on Redis Cluster: 50000 requests in {:?}: {:?}", tally.elapsed, tally.by_status);
    assert_eq!(tally.server_errors(), 0, "{:?}", tally.by_code);
    scope.wait_for_rows(&round, 1_000, Duration::from_secs(30)).await?;
    check_sold_out(1_000, &tally.issued, &tally.already, &rows(&scope.pool().await?, &round).await?)?;
    consumer.stop().await?;
    issuer.stop().await
}

const BUCKETS: u32 = 3;

/// A kafka-async round of `stock` over three stock buckets, open now.
fn bucketed(stock: u32) -> RoundSpec {
    RoundSpec {
        stock,
        per_user: 1,
        start_ms: couponrush_core::wall_clock_ms() + 500,
        end_ms: None,
        strategy: Strategy::KafkaAsync,
        buckets: BUCKETS,
    }
}

/// `count` user names whose home bucket is `bucket`, skipping the names in `taken`.
fn users_of_bucket(bucket: u32, count: usize, taken: &HashSet<String>) -> Vec<String> {
    (0..)
        .map(user_name)
        .filter(|user| home_bucket(user, BUCKETS) == bucket && !taken.contains(user))
        .take(count)
        .collect()
}

/// The spike over three buckets with most of the crowd in bucket 0 (8,000 of 10,000
/// users for its 334 coupons), so that bucket 0 runs out first and its users go on
/// taking coupons from buckets 1 and 2: exactly the stock, one per user, seqs 1..=stock
/// each once (the three buckets' interleaved seqs cover them), every bucket empty, and
/// many coupons given by a bucket other than their user's home.
async fn spike_over_three_buckets(scope: &Scope, round: &RoundId) -> anyhow::Result<()> {
    let stock = 1_000;
    scope.prewarm_spec(round, &bucketed(stock)).await?;
    let mut users = users_of_bucket(0, 8_000, &HashSet::new());
    users.extend(users_of_bucket(1, 1_000, &HashSet::new()));
    users.extend(users_of_bucket(2, 1_000, &HashSet::new()));
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spike = Spike { users: users.len(), requests_per_user: 4, concurrency: 128 };
    let tally = spike.run_named(&[issuer.issue_url(round)], &users, None).await?;
    println!(
        "kafka-async over 3 stock buckets: {} requests in {:?}: {:?}",
        users.len() * 4,
        tally.elapsed,
        tally.by_status
    );
    // A user's second press while the first takes a coupon from another bucket waits:
    // 503 OUTCOME_UNKNOWN (the first one answers). Nothing else may fail.
    let failed: u64 = tally
        .by_status
        .iter()
        .filter(|(status, _)| !is_final(status) && status.as_str() != "OUTCOME_UNKNOWN")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0, "{:?} {:?}", tally.by_status, tally.by_code);
    assert_eq!(tally.transport_errors, 0, "{:?}", tally.first_transport_error);
    scope.wait_for_rows(round, u64::from(stock), Duration::from_secs(60)).await?;
    let stored = rows(&scope.pool().await?, round).await?;
    check_sold_out(stock, &tally.issued, &tally.already, &stored)?;

    let metas = bucket_metas(&mut scope.redis().await?, round, BUCKETS).await?;
    for (bucket, meta) in metas.iter().enumerate() {
        let meta = meta.as_ref().ok_or_else(|| anyhow::anyhow!("bucket {bucket}'s keys are gone"))?;
        assert_eq!(meta.remaining, 0, "bucket {bucket} is empty");
        assert_eq!(meta.stock, split_stock(stock, BUCKETS)[bucket]);
    }
    // Spilled coupons: seqs of one bucket held by users of another.
    let spilled =
        stored.iter().filter(|(user, seq)| bucket_of_seq(*seq, BUCKETS) != home_bucket(user, BUCKETS)).count();
    println!("{spilled} of {stock} coupons came from a bucket other than their user's home");
    assert!(spilled > 300, "bucket 0's crowd took most of buckets 1 and 2: {spilled}");
    consumer.stop().await?;
    issuer.stop().await
}

fn is_final(status: &str) -> bool {
    matches!(status, "ISSUED" | "ALREADY_ISSUED" | "SOLD_OUT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_spike_over_three_stock_buckets_on_a_redis_cluster() -> anyhow::Result<()> {
    let scope = Scope::new_on_redis_cluster("buckets").await?;
    let round = scope.round("spike")?;
    // Each bucket under its own hash tag: its own slot, so the cluster may put the three
    // on three shards.
    let mut redis = scope.redis().await?;
    let mut slots = HashSet::new();
    for bucket in 0..BUCKETS {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(RoundKeys::bucket(&round, bucket).meta)
            .query_async(&mut redis)
            .await?;
        slots.insert(slot);
    }
    assert_eq!(slots.len(), BUCKETS as usize, "{slots:?}");
    spike_over_three_buckets(&scope, &round).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_spike_over_three_stock_buckets_on_one_redis() -> anyhow::Result<()> {
    let scope = Scope::new("buckets-single").await?;
    let round = scope.round("spike")?;
    spike_over_three_buckets(&scope, &round).await
}

/// Two coupons per bucket, every user at home in bucket 0, one press at a time: bucket 0
/// gives its two, then its users are served by buckets 1 and 2 in turn (the round is
/// not sold out while they have stock, for this issuer or on GET), each user once, and
/// only the seventh user hears SOLD_OUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_bucket_is_empty_gets_a_coupon_from_the_next() -> anyhow::Result<()> {
    let scope = Scope::new_on_redis_cluster("spill").await?;
    let round = scope.round("spill")?;
    scope.prewarm_spec(&round, &bucketed(6)).await?;
    let users = users_of_bucket(0, 7, &HashSet::new());
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let client = reqwest::Client::new();
    let url = issuer.issue_url(&round);
    let event_url = url.trim_end_matches("/issue").to_owned();
    let press = |user: &str| {
        let request = client.post(&url).bearer_auth(couponrush_e2e::token(user));
        async move {
            let response = request.send().await?;
            let code = response.status().as_u16();
            anyhow::Ok((code, response.json::<Value>().await?))
        }
    };
    // Bucket 0 gives 1 and 4; bucket 1 gives 2 and 5; bucket 2 gives 3 and 6.
    let expected =
        [seq_of(0, 3, 1), seq_of(0, 3, 2), seq_of(1, 3, 1), seq_of(1, 3, 2), seq_of(2, 3, 1), seq_of(2, 3, 2)];
    assert_eq!(expected, [1, 4, 2, 5, 3, 6]);
    let mut held = HashMap::new();
    for (user, seq) in users.iter().zip(expected) {
        let (code, body) = press(user).await?;
        ensure!(code == 201 && body["seq"] == seq, "{user}: {code} {body}");
        held.insert(user.clone(), seq);
        if seq == 6 {
            break;
        }
        let state: Value = client.get(&event_url).send().await?.json().await?;
        ensure!(state["state"] == "LIVE", "with stock left in a bucket the round is live: {state}");
        // Pressing again returns the same coupon, from the home bucket's record.
        let (code, again) = press(user).await?;
        ensure!(code == 200 && again["status"] == "ALREADY_ISSUED" && again["seq"] == seq, "{user}: {code} {again}");
    }
    let (code, body) = press(&users[6]).await?;
    ensure!(code == 410 && body["status"] == "SOLD_OUT", "the seventh user: {code} {body}");
    let state: Value = client.get(&event_url).send().await?.json().await?;
    ensure!(state["state"] == "SOLD_OUT" && state["remaining"] == 0 && state["stock"] == 6, "{state}");
    scope.wait_for_rows(&round, 6, Duration::from_secs(30)).await?;
    let stored: HashMap<String, u32> = rows(&scope.pool().await?, &round).await?.into_iter().collect();
    assert_eq!(stored, held);
    // GET …/issue: a spilled coupon is its user's, and persisted.
    let mine: Value = client.get(&url).bearer_auth(couponrush_e2e::token(&users[5])).send().await?.json().await?;
    ensure!(mine["seq"] == 6 && mine["persisted"] == true, "{mine}");
    consumer.stop().await?;
    issuer.stop().await
}

/// The spill steps one by one, as a request that died half-way leaves them: its
/// reservation makes the user's next press wait (503 OUTCOME_UNKNOWN); once it expired,
/// the next press takes it over and finds the coupon the dead request took (not a second
/// one); the dead request, resuming, can neither confirm nor give that coupon back. Then
/// the roll-back rule in the donor bucket: a coupon given back is refused by the
/// consumer's confirm, and one confirmed first cannot be given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_left_by_a_dead_request_is_found_by_the_users_next_press() -> anyhow::Result<()> {
    use couponrush_core::round_store::admission::{self, DonorTake, HomeAdmission, RollBack};
    use couponrush_core::round_store::keys::bucket_label;

    let scope = Scope::new_on_redis_cluster("takeover").await?;
    let round = scope.round("takeover")?;
    let mut spec = bucketed(6);
    spec.start_ms = couponrush_core::wall_clock_ms();
    scope.prewarm_spec(&round, &spec).await?;
    let users = users_of_bucket(0, 4, &HashSet::new());
    let (home, donor) = (RoundKeys::bucket(&round, 0), RoundKeys::bucket(&round, 1));
    let mut redis = scope.redis().await?;
    // Bucket 0's two coupons go to two other users of bucket 0.
    for user in &users[..2] {
        let admitted = admission::admit_home(&mut redis, &home, &round.to_string(), user, 0, "t").await?;
        ensure!(
            matches!(
                admitted,
                HomeAdmission::Decided(couponrush_core::round_store::admission::Admission::Issued { .. })
            ),
            "{admitted:?}"
        );
    }
    // The dead request: reserved, took seq 2 in bucket 1, never confirmed.
    let user = &users[2];
    let reserved = admission::admit_home(&mut redis, &home, &round.to_string(), user, 0, "dead").await?;
    let HomeAdmission::Spill { took_over: false, at_ms } = reserved else {
        anyhow::bail!("{reserved:?}");
    };
    let dead = admission::spill_stamp(at_ms, "dead");
    let taken = admission::take_from_donor(&mut redis, &donor, &bucket_label(&round, 1), user, &dead, 0).await?;
    ensure!(matches!(taken, DonorTake::Taken { seq: 2, remaining: 1, .. }), "{taken:?}");

    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let client = reqwest::Client::new();
    let url = issuer.issue_url(&round);
    let press = || {
        let request = client.post(&url).bearer_auth(couponrush_e2e::token(user));
        async move {
            let response = request.send().await?;
            let code = response.status().as_u16();
            anyhow::Ok((code, response.json::<Value>().await?))
        }
    };
    let (code, body) = press().await?;
    ensure!(
        code == 503 && body["status"] == "OUTCOME_UNKNOWN",
        "a live reservation makes the user wait: {code} {body}"
    );
    // The reservation expires (aged by hand rather than waited for).
    let aged = couponrush_core::wall_clock_ms() - 11_000;
    let _: () = redis::cmd("HSET")
        .arg(&home.spill_reservations)
        .arg(user)
        .arg(format!("{aged}:dead"))
        .query_async(&mut redis)
        .await?;
    let (code, body) = press().await?;
    ensure!(code == 201 && body["seq"] == 2, "the coupon the dead request took: {code} {body}");
    let donor_meta = couponrush_core::round_store::meta::round_meta(&mut redis, &donor)
        .await?
        .ok_or_else(|| anyhow::anyhow!("bucket 1"))?;
    assert_eq!((donor_meta.remaining, donor_meta.seq), (1, 1), "bucket 1 gave one coupon, not two");
    // The dead request resumes: its reservation is gone and its take belongs to the new
    // one; taking it again (as if it had stalled before its take) is refused too.
    assert!(!admission::confirm_spill(&mut redis, &home, user, &dead, 2).await?);
    assert_eq!(admission::give_back(&mut redis, &donor, user, 2, &dead).await?, RollBack::Absent);
    let again = admission::take_from_donor(&mut redis, &donor, &bucket_label(&round, 1), user, &dead, 0).await?;
    assert_eq!(again, DonorTake::Superseded);
    // (The two coupons admitted by hand above were never published: one row.)
    scope.wait_for_rows(&round, 1, Duration::from_secs(30)).await?;
    let stored: HashMap<String, u32> = rows(&scope.pool().await?, &round).await?.into_iter().collect();
    assert_eq!(stored, HashMap::from([(user.clone(), 2)]));

    // In bucket 2 (two coupons left): given back first, the consumer's confirm refuses
    // it; confirmed first, it cannot be given back.
    let donor = RoundKeys::bucket(&round, 2);
    let (late, early) = (&users[3], "someone-else");
    for (who, stamp) in [(late.as_str(), "1:a"), (early, "1:b")] {
        let taken = admission::take_from_donor(&mut redis, &donor, &bucket_label(&round, 2), who, stamp, 0).await?;
        ensure!(matches!(taken, DonorTake::Taken { .. }), "{who}: {taken:?}");
    }
    let seq_of_user = |who: &str| {
        let mut redis = redis.clone();
        let spilled = donor.spilled.clone();
        let who = who.to_owned();
        async move {
            let given: String = redis::cmd("HGET").arg(spilled).arg(who).query_async(&mut redis).await?;
            anyhow::Ok(given.split(':').next().unwrap_or_default().parse::<u32>()?)
        }
    };
    let (late_seq, early_seq) = (seq_of_user(late).await?, seq_of_user(early).await?);
    assert_eq!(admission::give_back(&mut redis, &donor, late, late_seq, "1:a").await?, RollBack::RolledBack);
    assert_eq!(admission::confirm(&mut redis, &donor, &[(late.as_str(), 1, late_seq)]).await?, [false]);
    assert_eq!(admission::confirm(&mut redis, &donor, &[(early, 1, early_seq)]).await?, [true]);
    assert_eq!(admission::give_back(&mut redis, &donor, early, early_seq, "1:b").await?, RollBack::AlreadyConfirmed);
    consumer.stop().await?;
    issuer.stop().await
}

/// Pre-warm, stock changes, teardown and recovery of a bucketed round on the cluster:
/// bucket settings the schema also refuses are refused here, a round keeps its buckets,
/// raising the stock splits the difference over the buckets, removal takes every
/// bucket's keys (on whichever shard), and `recover` refuses a bucketed round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucketed_round_is_prewarmed_raised_removed_and_not_recovered() -> anyhow::Result<()> {
    use couponrush_core::prewarm::{PrewarmError, RecoverError, prewarm, recover_round, remove_round};

    let scope = Scope::new_on_redis_cluster("bucket-life").await?;
    let round = scope.round("life")?;
    let (mut redis, pool) = (scope.redis().await?, scope.pool().await?);
    // Opened, so that admissions below are not refused by the time gate.
    let bucketed = |stock| RoundSpec { start_ms: couponrush_core::wall_clock_ms() - 1_000, ..bucketed(stock) };
    let refused = [
        RoundSpec { per_user: 2, ..bucketed(1_000) },
        RoundSpec { strategy: Strategy::DbLock, ..bucketed(1_000) },
        RoundSpec { buckets: 65, ..bucketed(1_000) },
        RoundSpec { buckets: 0, ..bucketed(1_000) },
        bucketed(2),
    ];
    for spec in refused {
        let error = prewarm(&mut redis, &pool, &round, &spec).await.expect_err("refused");
        ensure!(matches!(error, PrewarmError::InvalidBuckets { .. }), "{spec:?}: {error}");
    }
    prewarm(&mut redis, &pool, &round, &bucketed(1_000)).await?;
    let error =
        prewarm(&mut redis, &pool, &round, &RoundSpec { buckets: 2, ..bucketed(1_000) }).await.expect_err("changed");
    ensure!(matches!(error, PrewarmError::BucketsChanged { existing: 3, .. }), "{error}");
    // Raised from 1,000 to 1,300: the shares become 434, 433, 433.
    let raised = prewarm(&mut redis, &pool, &round, &bucketed(1_300)).await?;
    assert_eq!((raised.created, raised.remaining), (false, 1_300));
    let metas = bucket_metas(&mut redis, &round, BUCKETS).await?;
    let stocks: Vec<u32> = metas.iter().flatten().map(|meta| meta.stock).collect();
    assert_eq!(stocks, [434, 433, 433]);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let kafka = scope.env.kafka();
    let error = recover_round(&mut redis, &pool, &kafka, &scope.topic, &round, Strategy::KafkaAsync, deadline)
        .await
        .expect_err("a bucketed round is not recovered");
    ensure!(matches!(error, RecoverError::Bucketed { buckets: 3, .. }), "{error}");

    // Something in every kind of key of every bucket: winners, a taken coupon of another
    // bucket's user, a spill reservation.
    use couponrush_core::round_store::admission;
    use couponrush_core::round_store::keys::bucket_label;
    for bucket in 0..BUCKETS {
        let user = &users_of_bucket(bucket, 1, &HashSet::new())[0];
        let (keys, label) = (RoundKeys::bucket(&round, bucket), bucket_label(&round, bucket));
        let _admitted = admission::admit_home(&mut redis, &keys, &label, user, 0, "t").await?;
        let _taken = admission::take_from_donor(&mut redis, &keys, &label, "someone", "1:t", 0).await?;
        let _: () =
            redis::cmd("HSET").arg(&keys.spill_reservations).arg("other").arg("1:t").query_async(&mut redis).await?;
    }
    for bucket in 0..BUCKETS {
        let keys = RoundKeys::bucket(&round, bucket);
        for key in [&keys.meta, &keys.winners, &keys.spilled, &keys.spill_reservations] {
            let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut redis).await?;
            assert!(exists, "{key} was written");
        }
    }
    remove_round(&mut redis, &pool, &round).await?;
    for bucket in 0..BUCKETS {
        for key in RoundKeys::bucket(&round, bucket).all() {
            let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut redis).await?;
            assert!(!exists, "{key} left behind");
        }
    }
    Ok(())
}
