//! Test harness for couponrush's end-to-end tests: the real Redis, Kafka and MariaDB
//! that `local/backends.sh up` starts, issuers and consumers run in-process (or, where a
//! test kills one, as a child process), and the load generator ([`load`]): the spike that
//! fires many distinct users at an event concurrently and tallies the answers, and the
//! benchmark's open model.

pub mod load;
pub mod timeline;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use couponrush_core::backend_tls::BackendTls;
use couponrush_core::event::{EventId, RoundId, RoundSpec, Strategy};
use couponrush_core::kafka::KafkaTarget;
use couponrush_core::redis_conn::{RedisConn, RedisTarget};
use couponrush_core::workload::local_backends;
use couponrush_core::{db, kafka, prewarm};
use couponrush_issuer::config::{Backends, ServeConfig};
use sqlx::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The HS256 secret test issuers accept.
pub const JWT_SECRET: &str = "e2e-test-secret";

/// The issuer's defaults, with the tests' token secret.
pub fn issuer_config() -> ServeConfig {
    ServeConfig { jwt_hs256_secret: Some(JWT_SECRET.to_owned()), ..ServeConfig::default() }
}

/// Where the local backends are (the same defaults and variables as local/backends.sh).
#[derive(Clone, Debug)]
pub struct Env {
    pub redis_url: String,
    pub redis_cluster_urls: String,
    pub database_url: String,
    pub kafka_brokers: String,
    /// TLS and authentication (`BACKENDS_TLS=1 local/backends.sh env` sets them; unset:
    /// plaintext).
    pub tls: BackendTls,
}

impl Env {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Self {
            redis_url: var("REDIS_URL", local_backends::REDIS_URL),
            redis_cluster_urls: var(
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:17001,redis://127.0.0.1:17002,redis://127.0.0.1:17003",
            ),
            database_url: var("DATABASE_URL", local_backends::DATABASE_URL),
            kafka_brokers: var("KAFKA_BROKERS", local_backends::KAFKA_BROKERS),
            tls: BackendTls::from_lookup(|key| std::env::var(key).ok())
                .unwrap_or_else(|error| panic!("the backends' TLS settings in the environment: {error}")),
        }
    }

    pub fn kafka(&self) -> KafkaTarget {
        KafkaTarget::new(&self.kafka_brokers, &self.tls)
    }
}

/// A unique lowercase name, so tests sharing the backends never see each other's data.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Everything one test needs: its own database, Kafka topic and event names.
#[derive(Clone, Debug)]
pub struct Scope {
    pub env: Env,
    pub cluster: bool,
    pub database_url: String,
    pub topic: String,
    pub namespace: String,
}

impl Scope {
    /// Creates a fresh database (schema applied) and a fresh topic.
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        Self::with_redis(name, false).await
    }

    /// The same against the three-node Redis Cluster (`local/backends.sh up redis-cluster`).
    pub async fn new_on_redis_cluster(name: &str) -> anyhow::Result<Self> {
        Self::with_redis(name, true).await
    }

    async fn with_redis(name: &str, cluster: bool) -> anyhow::Result<Self> {
        let env = Env::from_env();
        let database = unique(&format!("t_{name}")).replace('-', "_");
        let admin = env
            .tls
            .connect_database(&env.database_url, 1)
            .await
            .context("MariaDB is not answering: run local/backends.sh up")?;
        sqlx::query(&format!("CREATE DATABASE `{database}`")).execute(&admin).await?;
        // The same server and options (`?ssl-mode=...`), another database.
        let (address, options) = env.database_url.split_once('?').unwrap_or((env.database_url.as_str(), ""));
        let base = address.rsplit_once('/').map_or(address, |(base, _)| base);
        let database_url =
            if options.is_empty() { format!("{base}/{database}") } else { format!("{base}/{database}?{options}") };
        db::migrate(&env.tls.connect_database(&database_url, 1).await?).await?;
        let topic = unique(&format!("test.{name}"));
        kafka::ensure_topics(&env.kafka(), &topic, 4)
            .await
            .context("Kafka is not answering: run local/backends.sh up")?;
        Ok(Self { env, cluster, database_url, topic, namespace: unique("ns") })
    }

    pub fn redis_target(&self) -> RedisTarget {
        if self.cluster {
            self.env.tls.redis(&self.env.redis_cluster_urls, true)
        } else {
            self.env.tls.redis(&self.env.redis_url, false)
        }
    }

    pub async fn redis(&self) -> anyhow::Result<RedisConn> {
        Ok(self.redis_target().connect().await?)
    }

    pub async fn pool(&self) -> anyhow::Result<MySqlPool> {
        Ok(self.env.tls.connect_database(&self.database_url, 4).await?)
    }

    pub fn backends(&self) -> Backends {
        let target = self.redis_target();
        Backends {
            redis_url: target.urls.join(","),
            redis_cluster: self.cluster,
            database_url: self.database_url.clone(),
            kafka_brokers: self.env.kafka_brokers.clone(),
            kafka_topic: self.topic.clone(),
            kafka_delivery_timeout: Duration::from_secs(3),
            tls: self.env.tls.clone(),
        }
    }

    pub fn round(&self, name: &str) -> anyhow::Result<RoundId> {
        Ok(EventId::new(&self.namespace, name)?.round(1))
    }

    /// Pre-warms a round that opens `opens_in` from now (by this machine's clock).
    pub async fn prewarm(
        &self,
        round: &RoundId,
        strategy: Strategy,
        stock: u32,
        opens_in: Duration,
    ) -> anyhow::Result<()> {
        let spec = RoundSpec {
            stock,
            per_user: 1,
            start_ms: couponrush_core::wall_clock_ms() + i64::try_from(opens_in.as_millis())?,
            end_ms: None,
            strategy,
            buckets: 1,
        };
        self.prewarm_spec(round, &spec).await
    }

    pub async fn prewarm_spec(&self, round: &RoundId, spec: &RoundSpec) -> anyhow::Result<()> {
        prewarm::prewarm(&mut self.redis().await?, &self.pool().await?, round, spec).await?;
        Ok(())
    }

    /// Starts an issuer in this process on a free port.
    pub async fn start_issuer(&self) -> anyhow::Result<Issuer> {
        self.start_issuer_with(self.backends(), issuer_config()).await
    }

    /// Starts an issuer in this process with the given configuration.
    pub async fn start_issuer_with(&self, backends: Backends, config: ServeConfig) -> anyhow::Result<Issuer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let run = couponrush_issuer::run(backends, config, listener, shutdown.clone());
        let task = tokio::spawn(async move { Ok(run.await?) });
        let issuer = Issuer { addr, shutdown, task: Some(task) };
        wait_until("issuer ready", Duration::from_secs(20), || async {
            Ok(reqwest::get(format!("{}/readyz", issuer.base_url())).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(issuer)
    }

    pub fn consumer_config(&self) -> couponrush_consumer::config::Config {
        let target = self.redis_target();
        couponrush_consumer::config::Config {
            kafka_brokers: self.env.kafka_brokers.clone(),
            kafka_topic: self.topic.clone(),
            kafka_group: format!("{}-consumer", self.topic),
            redis_url: target.urls.join(","),
            redis_cluster: self.cluster,
            database_url: self.database_url.clone(),
            batch_max: 1000,
            batch_wait: Duration::from_millis(10),
            max_rows_per_second: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace: Duration::from_secs(5),
            log_json: false,
            tls: self.env.tls.clone(),
        }
    }

    /// Starts a consumer in this process.
    pub async fn start_consumer(&self) -> anyhow::Result<Service> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let run = couponrush_consumer::run(self.consumer_config(), listener, shutdown.clone());
        let task = tokio::spawn(async move { Ok(run.await?) });
        let service = Service { addr, shutdown, task: Some(task) };
        wait_until("consumer ready", Duration::from_secs(30), || async {
            Ok(reqwest::get(format!("http://{}/readyz", service.addr)).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(service)
    }

    /// Starts the `couponrush-consumer` binary as a child process (for kill -9 tests),
    /// writing at most `max_rows_per_second` (0: no limit).
    pub fn spawn_consumer_process(&self, max_rows_per_second: u32) -> anyhow::Result<tokio::process::Child> {
        let config = self.consumer_config();
        let child = tokio::process::Command::new(binary("couponrush-consumer")?)
            .env("KAFKA_BROKERS", &config.kafka_brokers)
            .env("KAFKA_TOPIC", &config.kafka_topic)
            .env("KAFKA_GROUP", &config.kafka_group)
            .env("REDIS_URL", &config.redis_url)
            .env("DATABASE_URL", &config.database_url)
            .env("LISTEN", "127.0.0.1:0")
            .env("MAX_ROWS_PER_SECOND", max_rows_per_second.to_string())
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    /// Waits until MySQL holds `rows` coupons of the round.
    /// The first message of this scope's dead-letter topic (a reader of its own group, from
    /// the earliest offset), waiting at most 20 s.
    pub async fn first_dead_letter(&self) -> anyhow::Result<rdkafka::message::OwnedMessage> {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        let reader: StreamConsumer = self
            .env
            .kafka()
            .client_config()
            .set("group.id", format!("{}-dlq-reader", self.topic))
            .set("auto.offset.reset", "earliest")
            .create()?;
        reader.subscribe(&[&kafka::dead_letter_topic(&self.topic)])?;
        let letter = tokio::time::timeout(Duration::from_secs(20), reader.recv()).await??;
        Ok(letter.detach())
    }

    pub async fn wait_for_rows(&self, round: &RoundId, rows: u64, within: Duration) -> anyhow::Result<()> {
        let pool = self.pool().await?;
        wait_until(&format!("{rows} rows of {round}"), within, || async {
            Ok(db::count_coupons(&pool, round).await? >= rows)
        })
        .await
    }
}

/// A binary of this workspace, next to the test executable's `deps` folder.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|deps| deps.parent()).context("test binary has no parent folder")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} is missing: build the workspace first (cargo build --workspace)", path.display());
    }
    Ok(path)
}

/// An in-process service that stops when asked (or dropped).
pub struct Service {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await.context("service did not stop in time")???;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub type Issuer = Service;

impl Service {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn issue_url(&self, round: &RoundId) -> String {
        format!("{}/api/v1/events/{}/{}/issue", self.base_url(), round.event.namespace, round.event.name)
    }
}

/// Polls `check` until it says yes, failing after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(error) => bail!("timed out after {within:?} waiting for {what}; last error: {error:#}"),
                None => bail!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A signed HS256 token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_signed_with(JWT_SECRET, user, Duration::from_secs(3600))
}

/// An HS256 JWT for `user` signed with `secret`, valid for `ttl`.
pub fn token_signed_with(secret: &str, user: &str, ttl: Duration) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: i64,
    }
    let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = Claims { sub: user, exp: couponrush_core::wall_clock_ms() / 1000 + ttl_s };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// An HS256 JWT with exactly `claims`, signed with [`JWT_SECRET`].
pub fn token_with_claims(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// A one-off CouponEvent as the operator tests apply it: `stock` coupons opening
/// `starts_in` from now after a 3 s warm-up, sized for `expected_peak_rps` on t3.medium.
pub fn coupon_event(
    name: &str,
    stock: u32,
    starts_in: Duration,
    teardown_after: &str,
    expected_peak_rps: u32,
) -> anyhow::Result<couponrush_crds::CouponEvent> {
    let start = jiff::Timestamp::now() + jiff::SignedDuration::try_from(starts_in)?;
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "couponrush.io/v1alpha1",
        "kind": "CouponEvent",
        "metadata": {"name": name},
        "spec": {
            "coupon": {"name": "10,000 KRW off", "amount": 10000, "currency": "KRW"},
            "stock": stock,
            "startTime": start.to_string(),
            "warmup": "3s",
            "teardownAfter": teardown_after,
            "capacity": {"expectedPeakRps": expected_peak_rps, "nodeProfile": "t3.medium"}
        }
    }))?)
}

/// Applies the CouponEvent CRD (as the chart's crds/ would) and waits until it is served.
pub async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Patch, PatchParams};
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let crd = couponrush_crds::CouponEvent::crd();
    crds.patch("couponevents.couponrush.io", &PatchParams::apply("couponrush-e2e").force(), &Patch::Apply(crd)).await?;
    wait_until("the CRD is established", Duration::from_secs(30), || async {
        let crd = crds.get("couponevents.couponrush.io").await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await
}

/// The label of the namespaces the control-plane tests make, so that the next test can
/// remove them: [`clear_test_namespaces`].
pub const TEST_NAMESPACE_LABEL: &str = "couponrush.io/e2e-test";

/// Every test runs its own operator, which would also reconcile what an earlier test
/// left (events whose finalizer no operator will run now, and their workloads on the
/// fake nodes). Removes it: finalizers dropped, namespaces deleted (the namespace
/// controller removes the rest).
pub async fn clear_test_namespaces(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::ResourceExt;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    for namespace in namespaces.list(&ListParams::default().labels(TEST_NAMESPACE_LABEL)).await? {
        let name = namespace.name_any();
        let events: kube::Api<couponrush_crds::CouponEvent> = kube::Api::namespaced(client.clone(), &name);
        for event in events.list(&ListParams::default()).await? {
            let release = serde_json::json!({"metadata": {"finalizers": null}});
            let _ = events.patch(&event.name_any(), &PatchParams::default(), &Patch::Merge(&release)).await;
        }
        if namespace.metadata.deletion_timestamp.is_none() {
            namespaces.delete(&name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}
