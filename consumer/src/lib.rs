//! couponrush-consumer: makes every admitted coupon durable in MySQL, exactly once.
//!
//! [`pipeline`] holds the loop (Kafka batch → Redis confirm → one MySQL transaction →
//! offsets); this module connects the backends, applies the schema and serves the ops
//! endpoints.

pub mod config;
pub mod error;
pub mod metrics;
pub mod pipeline;

use std::time::Duration;

use couponrush_core::kafka::{dead_letter_topic, producer_config};
use couponrush_core::ops::{self, Ops};
use couponrush_core::{db, kafka};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, RateLimit};

/// Runs the consumer until `shutdown`; serves ops endpoints on `listener`.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ops = Ops::new(registry);
    let ops_server = tokio::spawn(ops::serve(listener, ops.router(), shutdown.clone()));

    let pool = config.tls.connect_database(&config.database_url, 4).await.map_err(StartError::Database)?;
    db::migrate(&pool).await.map_err(StartError::Migrate)?;
    let redis = config.tls.redis(&config.redis_url, config.redis_cluster).connect().await.map_err(StartError::Redis)?;
    let kafka = kafka::KafkaTarget::new(&config.kafka_brokers, &config.tls);
    kafka::ensure_topics(&kafka, &config.kafka_topic, 4).await.map_err(StartError::Topics)?;

    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", &config.kafka_group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        // Offsets are stored by hand, only once their rows are committed.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // Let the broker gather a batch (up to 64 KiB or 20 ms) instead of answering
        // every fetch with the few messages that arrived since the last one: far fewer
        // fetch requests for the broker under load, at most 20 ms more to persist.
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "20")
        .create()
        .map_err(StartError::Kafka)?;
    consumer.subscribe(&[&config.kafka_topic]).map_err(StartError::Kafka)?;
    let dead_letters = producer_config(&kafka, Duration::from_secs(10)).create().map_err(StartError::Kafka)?;

    let pipeline = Pipeline {
        consumer,
        dead_letters,
        dead_letter_topic: dead_letter_topic(&config.kafka_topic),
        redis,
        db: pool,
        metrics,
        // Under a rate limit, small batches keep the writes smooth instead of bursting.
        batch_max: match config.max_rows_per_second {
            0 => config.batch_max,
            rate => config.batch_max.min((rate as usize / 10).max(1)),
        },
        batch_wait: config.batch_wait,
        rate: RateLimit::new(config.max_rows_per_second),
    };
    ops.set_ready(true);
    tracing::info!(topic = %config.kafka_topic, group = %config.kafka_group, "consuming");
    let work = tokio::spawn(pipeline.run(shutdown.clone()));
    shutdown.cancelled().await;
    ops.set_ready(false);
    if tokio::time::timeout(config.shutdown_grace, work).await.is_err() {
        tracing::warn!("the batch in hand outlived the shutdown grace period; it will be redelivered");
    }
    let _ = ops_server.await;
    tracing::info!("consumer stopped");
    Ok(())
}
