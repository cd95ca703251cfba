//! Where an event's Redis, Kafka and MySQL are (its Secret, read as the same
//! environment variables the workloads get), and one set of connections per distinct
//! set of addresses, shared by every event that uses it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use couponrush_core::backend_tls::BackendTls;
use couponrush_core::kafka::{KafkaTarget, Publisher};
use couponrush_core::redis_conn::RedisConn;
use couponrush_core::workload::env;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sqlx::MySqlPool;
use tokio::sync::Mutex;

use crate::error::Error;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub redis_url: String,
    pub redis_cluster: bool,
    pub database_url: String,
    pub kafka_brokers: String,
    /// TLS and authentication, for managed backends (all unset: plaintext).
    pub tls: BackendTls,
}

pub struct Clients {
    pub redis: RedisConn,
    pub db: MySqlPool,
    pub kafka: KafkaTarget,
    migrated: std::sync::atomic::AtomicBool,
    /// Topics (with their partition count) already made sure of: a Kafka admin client
    /// is built once per topic and size, not on every pass.
    topics: std::sync::Mutex<HashSet<(String, i32)>>,
}

impl Clients {
    pub async fn migrate_once(&self) -> Result<(), Error> {
        if !self.migrated.load(std::sync::atomic::Ordering::Relaxed) {
            couponrush_core::db::migrate(&self.db).await.map_err(Error::Migrate)?;
            self.migrated.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The next [`Clients::migrate_once`] applies the migrations again (they are
    /// idempotent) and the next [`Clients::ensure_topic_once`] asks Kafka again: after a
    /// failed pre-warm nothing remembered about the backends is trusted.
    pub fn schema_unverified(&self) {
        self.migrated.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut topics) = self.topics.lock() {
            topics.clear();
        }
    }

    pub async fn ensure_topic_once(&self, topic: &str, partitions: i32) -> Result<(), Error> {
        let wanted = (topic.to_owned(), partitions);
        if self.topics.lock().is_ok_and(|topics| topics.contains(&wanted)) {
            return Ok(());
        }
        couponrush_core::kafka::ensure_topics(&self.kafka, topic, partitions).await.map_err(Error::CreateTopic)?;
        if let Ok(mut topics) = self.topics.lock() {
            topics.insert(wanted);
        }
        Ok(())
    }

    pub fn publisher(&self, topic: &str) -> Result<Publisher, Error> {
        Publisher::new(&self.kafka, topic, Duration::from_secs(10)).map_err(Error::CreateTopic)
    }
}

/// Reads the backends' addresses from `secret` in `namespace`.
pub async fn endpoints(client: &kube::Client, namespace: &str, secret: &str) -> Result<Endpoints, Error> {
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret)
        .await
        .map_err(|source| Error::ReadBackendsSecret { name: secret.to_owned(), source })?;
    let data = found.data.unwrap_or_default();
    let string_data = found.string_data.unwrap_or_default();
    let value = |key: &'static str| {
        data.get(key)
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
            .or_else(|| string_data.get(key).cloned())
            .ok_or(Error::BackendsSecretKey { name: secret.to_owned(), key })
    };
    Ok(Endpoints {
        redis_url: value(env::REDIS_URL)?,
        redis_cluster: value(env::REDIS_CLUSTER).is_ok_and(|v| v == "true"),
        database_url: value(env::DATABASE_URL)?,
        kafka_brokers: value(env::KAFKA_BROKERS)?,
        tls: BackendTls::from_lookup(|key| value(key).ok())
            .map_err(|source| Error::BackendsSecretValue { name: secret.to_owned(), source })?,
    })
}

/// Connections by addresses; connecting happens once per distinct set.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<Endpoints, Arc<Clients>>>,
}

impl ClientCache {
    /// The connections for `endpoints`, made on first use. The map is not locked while
    /// connecting: an event whose backends are slow or gone must not hold up the passes
    /// of every other event.
    pub async fn get(&self, endpoints: &Endpoints) -> Result<Arc<Clients>, Error> {
        if let Some(found) = self.clients.lock().await.get(endpoints) {
            return Ok(found.clone());
        }
        let redis = tokio::time::timeout(
            Duration::from_secs(5),
            endpoints.tls.redis(&endpoints.redis_url, endpoints.redis_cluster).connect(),
        )
        .await
        .map_err(|_| Error::ConnectRedis(redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"))))?
        .map_err(Error::ConnectRedis)?;
        let db = endpoints.tls.connect_database(&endpoints.database_url, 4).await.map_err(Error::ConnectDatabase)?;
        let made = Arc::new(Clients {
            redis,
            db,
            kafka: KafkaTarget::new(&endpoints.kafka_brokers, &endpoints.tls),
            migrated: std::sync::atomic::AtomicBool::new(false),
            topics: std::sync::Mutex::new(HashSet::new()),
        });
        // Two passes may have connected at once: the first one stored is kept.
        Ok(self.clients.lock().await.entry(endpoints.clone()).or_insert(made).clone())
    }
}
