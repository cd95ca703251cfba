//! Configuration of `couponrush-issuer`: every flag is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use couponrush_core::duration::parse as parse_duration;
use couponrush_core::event::Strategy;

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
    #[arg(long, env = "LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeConfig),
    /// Write a round's Redis keys and MySQL row (what the operator does while Warming).
    Prewarm(PrewarmArgs),
    /// Re-publish admitted coupons of a round that have no MySQL row.
    Reconcile(RoundArgs),
    /// Apply the MySQL schema migrations and exit.
    Migrate,
}

/// Where the backends are; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Backends {
    /// Redis URL, or comma-separated cluster seed URLs with --redis-cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:16379", global = true)]
    pub redis_url: String,
    /// Treat --redis-url as the seeds of a Redis Cluster.
    #[arg(long, env = "REDIS_CLUSTER", global = true)]
    pub redis_cluster: bool,
    /// MySQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "mysql://couponrush:couponrush@127.0.0.1:13306/couponrush",
        global = true
    )]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092", global = true)]
    pub kafka_brokers: String,
    /// Topic of admitted coupons.
    #[arg(long, env = "KAFKA_TOPIC", default_value = couponrush_core::kafka::DEFAULT_TOPIC, global = true)]
    pub kafka_topic: String,
    /// How long Kafka may take to acknowledge a coupon before its admission is rolled back.
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub kafka_delivery_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the HTTP API (and /healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// HS256 secret for verifying bearer tokens.
    #[arg(long, env = "JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC P-256 for ES256) for verifying bearer tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `aud` claim, if any.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// LOAD TESTS ONLY: take the user id from the X-User-Id header without any proof.
    #[arg(long, env = "TRUST_USER_HEADER")]
    pub trust_user_header: bool,
    /// MySQL connections of this process (synchronous strategies hold one per request).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
    /// How long a request may wait for the redis-lock strategy's lock.
    #[arg(long, env = "LOCK_WAIT", default_value = "5s", value_parser = parse_duration)]
    pub lock_wait: Duration,
    /// Upper bound for finishing in-flight requests and flushing Kafka on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_hs256_secret: None,
            jwt_public_key_file: None,
            jwt_audience: None,
            trust_user_header: false,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
