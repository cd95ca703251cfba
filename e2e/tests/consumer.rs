//! The consumer and reconciliation against the real servers: an undecodable message
//! goes to the dead-letter topic with its reason and origin without blocking its
//! partition, and an admission that never reached Kafka (an issuer that died after
//! admitting) is re-published by reconciliation and persisted once.

use std::time::Duration;

use couponrush_core::admission::{self, Admission};
use couponrush_core::event::Strategy;
use couponrush_core::kafka::{Publisher, dead_letter_topic};
use couponrush_core::keys::RoundKeys;
use couponrush_core::message::IssuedCoupon;
use couponrush_core::{db, reconcile};
use couponrush_e2e::Scope;
use rdkafka::consumer::{Consumer, StreamConsumer};
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

    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.env.kafka_brokers)
        .set("group.id", format!("{}-dlq-reader", scope.topic))
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[&dead_letter_topic(&scope.topic)])?;
    let letter = tokio::time::timeout(Duration::from_secs(20), reader.recv()).await??;
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

    let publisher = Publisher::new(&scope.env.kafka_brokers, &scope.topic, Duration::from_secs(5))?;
    let report = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!((report.admitted, report.persisted, report.republished), (2, 0, 2));
    scope.wait_for_rows(&round, 2, Duration::from_secs(20)).await?;
    // Running it again finds nothing missing.
    let again = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!(again.republished, 0);
    assert_eq!(db::count_coupons(&pool, &round).await?, 2);
    consumer.stop().await
}
