//! Configuration of `couponrush-issuer`: every flag is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use couponrush_core::duration::parse as parse_duration;
use couponrush_core::event::Strategy;
use couponrush_core::workload::{ISSUER, env, local_backends};

/// The issuer's command line. Without a command it serves, configured by the same flags
/// and environment variables as `serve`: that is how its Deployment starts it.
#[derive(Debug, Parser)]
#[command(
    name = "couponrush-issuer",
    version,
    about = "Admits or rejects coupon requests in one atomic Redis step and hands admitted coupons to Kafka."
)]
pub struct Cli {
    #[command(flatten)]
    pub backends: Backends,
    /// Log as JSON lines instead of text.
    #[arg(long, env = env::LOG_JSON, global = true)]
    pub log_json: bool,
    /// The configuration of serving without a command. Read even when a command is
    /// given (then unused), so that the environment alone configures the default.
    #[command(flatten)]
    pub serve: ServeConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run; without one, serve with the top-level configuration.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeConfig),
    /// Write a round's Redis keys and MySQL row (what the operator does while Warming).
    Prewarm(PrewarmArgs),
    /// Re-publish admitted coupons of a round that have no MySQL row.
    Reconcile(RoundArgs),
    /// Rebuild a round's Redis state after Redis lost it, from MySQL and the Kafka topic.
    Recover(RecoverArgs),
    /// Write a round's winners (every stored coupon) to stdout as CSV or JSON lines.
    Export(ExportArgs),
    /// Apply the MySQL schema migrations and exit.
    Migrate,
}

/// Where the backends are; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Backends {
    /// Redis URL, or comma-separated cluster seed URLs with --redis-cluster.
    #[arg(long, env = env::REDIS_URL, default_value = local_backends::REDIS_URL, global = true)]
    pub redis_url: String,
    /// Treat --redis-url as the seeds of a Redis Cluster.
    #[arg(long, env = env::REDIS_CLUSTER, global = true)]
    pub redis_cluster: bool,
    /// MySQL URL.
    #[arg(
        long,
        env = env::DATABASE_URL,
        default_value = local_backends::DATABASE_URL,
        global = true
    )]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = env::KAFKA_BROKERS, default_value = local_backends::KAFKA_BROKERS, global = true)]
    pub kafka_brokers: String,
    /// Topic of admitted coupons.
    #[arg(long, env = env::KAFKA_TOPIC, default_value = couponrush_core::kafka::DEFAULT_TOPIC, global = true)]
    pub kafka_topic: String,
    /// How long Kafka may take to acknowledge a coupon before its admission is rolled back.
    #[arg(long, env = env::KAFKA_DELIVERY_TIMEOUT, default_value = "5s", value_parser = parse_duration, global = true)]
    pub kafka_delivery_timeout: Duration,
    /// TLS and authentication for managed backends.
    #[command(flatten)]
    pub tls: couponrush_core::backend_tls::BackendTls,
}

impl Backends {
    pub fn redis(&self) -> couponrush_core::redis_conn::RedisTarget {
        self.tls.redis(&self.redis_url, self.redis_cluster)
    }

    pub fn kafka(&self) -> couponrush_core::kafka::KafkaTarget {
        couponrush_core::kafka::KafkaTarget::new(&self.kafka_brokers, &self.tls)
    }

    pub async fn connect_database(&self, max_connections: u32) -> Result<sqlx::MySqlPool, sqlx::Error> {
        self.tls.connect_database(&self.database_url, max_connections).await
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the HTTP API (and /healthz, /readyz, /metrics).
    #[arg(long, env = env::LISTEN, default_value_t = ISSUER.local_listen())]
    pub listen: SocketAddr,
    /// HS256 secret for verifying bearer tokens.
    #[arg(long, env = env::JWT_HS256_SECRET, hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC P-256 for ES256) for verifying bearer tokens.
    #[arg(long, env = env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, if any: tokens without it or with another are refused.
    #[arg(long, env = env::JWT_ISSUER)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if any: tokens without it or not naming it are refused.
    #[arg(long, env = env::JWT_AUDIENCE)]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds; at most 5m).
    #[arg(long, env = env::JWT_LEEWAY, default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// LOAD TESTS ONLY: take the user id from the X-User-Id header without any proof.
    #[arg(long, env = env::TRUST_USER_HEADER)]
    pub trust_user_header: bool,
    /// How long a client may take to send a request's head: from the connection's
    /// accept, or from the first byte after an idle spell.
    #[arg(long, env = env::HTTP_HEADER_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// How long a client may take to send a request's body, once its head is in.
    #[arg(long, env = env::HTTP_BODY_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests (above the 60 s
    /// of common load balancers, so that they close first).
    #[arg(long, env = env::HTTP_IDLE_TIMEOUT, default_value = "75s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    #[arg(long, env = env::HTTP_MAX_CONNECTIONS, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// MySQL connections of this process (synchronous strategies hold one per request).
    #[arg(long, env = env::DATABASE_MAX_CONNECTIONS, default_value_t = 32)]
    pub database_max_connections: u32,
    /// How long a request may wait for the redis-lock strategy's lock.
    #[arg(long, env = env::LOCK_WAIT, default_value = "5s", value_parser = parse_duration)]
    pub lock_wait: Duration,
    /// Upper bound for finishing in-flight requests and flushing Kafka on shutdown.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// For tests that start an issuer in process. It reads no environment: binaries get
/// their configuration from [`Cli`] only.
impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: ISSUER.local_listen(),
            jwt_hs256_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(30),
            trust_user_header: false,
            http_header_timeout: Duration::from_secs(5),
            http_body_timeout: Duration::from_secs(5),
            http_idle_timeout: Duration::from_secs(75),
            http_max_connections: 4096,
            database_max_connections: 32,
            lock_wait: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RoundArgs {
    /// Namespace of the event.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Name of the event.
    #[arg(long)]
    pub name: String,
    /// Round number (1 for a one-off event).
    #[arg(long, default_value_t = 1)]
    pub round: u32,
}

#[derive(Debug, Clone, Args)]
pub struct PrewarmArgs {
    #[command(flatten)]
    pub round: RoundArgs,
    /// Coupons in the round.
    #[arg(long)]
    pub stock: u32,
    /// Coupons one user may hold.
    #[arg(long, default_value_t = 1)]
    pub per_user: u32,
    /// Opening instant (RFC 3339), or use --starts-in.
    #[arg(long, conflicts_with = "starts_in")]
    pub starts_at: Option<jiff::Timestamp>,
    /// Opening delay from now, e.g. 5s.
    #[arg(long, value_parser = parse_duration)]
    pub starts_in: Option<Duration>,
    /// Closing instant (RFC 3339); open until sold out without it.
    #[arg(long)]
    pub ends_at: Option<jiff::Timestamp>,
    #[arg(long, default_value = "kafka-async")]
    pub strategy: Strategy,
    /// Stock buckets (docs/scale.md): more than 1 spreads the round's admissions over as
    /// many Redis Cluster shards; kafka-async with --per-user 1 only.
    #[arg(long, default_value_t = 1)]
    pub stock_buckets: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub round: RoundArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: crate::export::Format,
}

#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub round: RoundArgs,
    /// The strategy the round was pre-warmed with (the event's `spec.strategy`).
    #[arg(long, default_value = "kafka-async")]
    pub strategy: Strategy,
    /// How long reading the topic may take.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use couponrush_core::workload::testing;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn child_parses() {
        let Some(argv) = testing::child_argv() else { return };
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let (topic, log_json) = (cli.backends.kafka_topic.clone(), cli.log_json);
        let Command::Serve(serve) = cli.into_command() else { panic!("not serve") };
        let parsed = serde_json::json!({
            "listen": serve.listen.to_string(),
            "jwt_hs256_secret": serve.jwt_hs256_secret,
            "jwt_audience": serve.jwt_audience,
            "shutdown_grace_ms": serve.shutdown_grace.as_millis() as u64,
            "kafka_topic": topic,
            "log_json": log_json,
        });
        println!("PARSED {parsed}");
    }

    /// The Deployment's way: the binary alone, everything in the environment.
    #[test]
    fn no_arguments_serves_with_the_environment() {
        let parsed = testing::parse_in_child(
            "config::tests::child_parses",
            &["couponrush-issuer".to_owned()],
            [
                ("LISTEN", "0.0.0.0:18080"),
                ("JWT_HS256_SECRET", "s3cret"),
                ("JWT_AUDIENCE", "coupons"),
                ("KAFKA_TOPIC", "couponrush.ns.ev"),
                ("LOG_JSON", "true"),
                ("SHUTDOWN_GRACE", "7s"),
            ],
        );
        let expected = serde_json::json!({
            "listen": "0.0.0.0:18080",
            "jwt_hs256_secret": "s3cret",
            "jwt_audience": "coupons",
            "shutdown_grace_ms": 7000,
            "kafka_topic": "couponrush.ns.ev",
            "log_json": true,
        });
        assert_eq!(serde_json::from_str::<serde_json::Value>(&parsed).expect("json"), expected);
    }
}
