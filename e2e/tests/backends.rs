//! The local backends answer over real connections (local/backends.sh up).

use std::time::Duration;

use couponrush_core::redis_conn::RedisTarget;
use couponrush_e2e::Env;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[tokio::test]
async fn redis_answers_ping() -> anyhow::Result<()> {
    let mut redis = RedisTarget::new(&Env::from_env().redis_url, false).connect().await?;
    let pong: String = redis::cmd("PING").query_async(&mut redis).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[tokio::test]
async fn mariadb_answers_a_query() -> anyhow::Result<()> {
    let pool = couponrush_core::db::connect(&Env::from_env().database_url, 1).await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&pool).await?;
    assert!(version.to_lowercase().contains("mariadb") || version.starts_with('8'), "{version}");
    Ok(())
}

#[tokio::test]
async fn kafka_answers_a_metadata_request() -> anyhow::Result<()> {
    let brokers = Env::from_env().kafka_brokers;
    let metadata = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        consumer.fetch_metadata(None, Duration::from_secs(10))
    })
    .await??;
    assert_eq!(metadata.brokers().len(), 1, "one local broker");
    Ok(())
}
