//! Configuration of `couponrush-consumer`: every flag is also an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use couponrush_core::duration::parse as parse_duration;

#[derive(Debug, Clone, Parser)]
#[command(name = "couponrush-consumer", version, about = "Makes every admitted coupon durable in MySQL, exactly once.")]
pub struct Config {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub kafka_brokers: String,
    /// Topic of admitted coupons; undecodable messages go to `<topic>.dlq`.
    #[arg(long, env = "KAFKA_TOPIC", default_value = couponrush_core::kafka::DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// Consumer group; replicas of one deployment share it.
    #[arg(long, env = "KAFKA_GROUP", default_value = "couponrush-consumer")]
    pub kafka_group: String,
    /// Redis URL (or cluster seeds with --redis-cluster), where admissions are confirmed.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:16379")]
    pub redis_url: String,
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// MySQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = "mysql://couponrush:couponrush@127.0.0.1:13306/couponrush")]
    pub database_url: String,
    /// Most messages written in one transaction.
    #[arg(long, env = "BATCH_MAX", default_value_t = 1000)]
    pub batch_max: usize,
    /// Longest wait for a batch to fill once its first message arrived.
    #[arg(long, env = "BATCH_WAIT", default_value = "10ms", value_parser = parse_duration)]
    pub batch_wait: Duration,
    /// Rows per second written at most, to protect the database (0: no limit).
    #[arg(long, env = "MAX_ROWS_PER_SECOND", default_value_t = 0)]
    pub max_rows_per_second: u32,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Upper bound for finishing the current batch on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
