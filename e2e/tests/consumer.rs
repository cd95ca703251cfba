//! The consumer and reconciliation against the real servers: an undecodable message
//! goes to the dead-letter topic with its reason and origin without blocking its
//! partition, and an admission that never reached Kafka (an issuer that died after
//! admitting) is re-published by reconciliation and persisted once.

use std::time::Duration;

use couponrush_core::event::Strategy;
use couponrush_core::kafka::Publisher;
use couponrush_core::message::IssuedCoupon;
use couponrush_core::round_store::admission::{self, Admission};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::{db, reconcile};
use couponrush_e2e::Scope;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_do_not_block() -> anyhow::Result<()> {
    let scope = Scope::new("dlq").await?;
    let round = scope.round("dlq")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let consumer = scope.start_consumer().await?;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &scope.env.kafka_brokers).create()?;
    // Same key, so the same partition: the garbage sits right before a good message.
    let mut redis = scope.redis().await?;
    let admitted = admission::admit(&mut redis, &RoundKeys::new(&round), &round.to_string(), "carol").await?;
    let Admission::Issued { seq, slot, at_ms, .. } = admitted else { anyhow::bail!("not admitted: {admitted:?}") };
    let good = IssuedCoupon::new(&round, "carol", seq, slot, at_ms).encode();
    for payload in [b"{not a coupon".to_vec(), good] {
        producer
            .send(FutureRecord::to(&scope.topic).key("carol").payload(&payload), Duration::from_secs(5))
            .await
            .map_err(|(error, _)| error)?;
    }
    scope.wait_for_rows(&round, 1, Duration::from_secs(20)).await?;

    let letter = scope.first_dead_letter().await?;
    assert_eq!(letter.payload(), Some(&b"{not a coupon"[..]));
    let headers = letter.headers().ok_or_else(|| anyhow::anyhow!("no headers"))?;
    let header = |name: &str| {
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("origin-topic").as_deref(), Some(scope.topic.as_str()));
    assert!(header("origin-offset").is_some() && header("origin-partition").is_some());
    assert!(header("reason").is_some_and(|r| r.contains("not a coupon message")), "{:?}", header("reason"));
    consumer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_republishes_an_admission_that_never_reached_kafka() -> anyhow::Result<()> {
    let scope = Scope::new("reconcile").await?;
    let round = scope.round("lost")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let consumer = scope.start_consumer().await?;
    // Admitted in Redis, then the issuer "died": nothing was published.
    let mut redis = scope.redis().await?;
    for user in ["dave", "erin"] {
        admission::admit(&mut redis, &RoundKeys::new(&round), &round.to_string(), user).await?;
    }
    let pool = scope.pool().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db::count_coupons(&pool, &round).await?, 0);

    let publisher = Publisher::new(&scope.env.kafka(), &scope.topic, Duration::from_secs(5))?;
    let report = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!((report.admitted, report.persisted, report.republished), (2, 0, 2));
    scope.wait_for_rows(&round, 2, Duration::from_secs(20)).await?;
    // Running it again finds nothing missing.
    let again = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!(again.republished, 0);
    assert_eq!(db::count_coupons(&pool, &round).await?, 2);
    consumer.stop().await
}

/// Issue 11, finding 3: after Redis lost an admission (a failover to a replica that lacked
/// it), it hands the same seq to another user. That coupon can never be stored under its
/// seq: reconciliation must call it a conflict, not count it as persisted, and the
/// consumer must count it rather than pass it as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_reused_for_another_user_is_a_conflict_not_a_persisted_coupon() -> anyhow::Result<()> {
    let scope = Scope::new("conflict").await?;
    let round = scope.round("failover")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let consumer = scope.start_consumer().await?;
    let keys = RoundKeys::new(&round);
    let mut redis = scope.redis().await?;
    let publisher = Publisher::new(&scope.env.kafka(), &scope.topic, Duration::from_secs(5))?;
    let pool = scope.pool().await?;

    let ann = admission::admit(&mut redis, &keys, &round.to_string(), "ann").await?;
    let Admission::Issued { seq, slot, at_ms, .. } = ann else { anyhow::bail!("ann not admitted: {ann:?}") };
    publisher.publish(&IssuedCoupon::new(&round, "ann", seq, slot, at_ms)).await?;
    scope.wait_for_rows(&round, 1, Duration::from_secs(20)).await?;

    // The failover: Redis forgets ann's admission and its confirmation.
    let _: () = redis::cmd("HDEL").arg(&keys.winners).arg("ann").query_async(&mut redis).await?;
    let _: () = redis::cmd("DEL").arg(&keys.confirmed).query_async(&mut redis).await?;
    let _: () =
        redis::cmd("HSET").arg(&keys.meta).arg("seq").arg(0).arg("remaining").arg(5).query_async(&mut redis).await?;
    let bob = admission::admit(&mut redis, &keys, &round.to_string(), "bob").await?;
    let Admission::Issued { seq: bob_seq, slot, at_ms, .. } = bob else { anyhow::bail!("bob not admitted: {bob:?}") };
    assert_eq!(bob_seq, seq, "the failover hands ann's seq to bob");

    let report = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!((report.admitted, report.persisted, report.conflicts, report.republished), (1, 0, 1, 0), "{report:?}");

    // The consumer receives bob's coupon: the row keeps ann; the loss is counted.
    publisher.publish(&IssuedCoupon::new(&round, "bob", bob_seq, slot, at_ms)).await?;
    couponrush_e2e::wait_until("the consumer to count the conflict", Duration::from_secs(20), || async {
        let metrics = reqwest::get(format!("{}/metrics", consumer.base_url())).await?.text().await?;
        Ok(metrics.lines().any(|line| line == "couponrush_consumer_conflicts_total 1"))
    })
    .await?;
    assert_eq!(db::count_coupons(&pool, &round).await?, 1);
    consumer.stop().await
}
