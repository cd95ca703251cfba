//! Configuration of `couponrush-consumer`: every flag is also an environment variable,
//! named in [`couponrush_core::workload::env`] (the names the operator writes into the
//! consumer Deployment).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use couponrush_core::duration::parse as parse_duration;
use couponrush_core::workload::{CONSUMER, env, local_backends};

#[derive(Debug, Clone, Parser)]
#[command(name = "couponrush-consumer", version, about = "Makes every admitted coupon durable in MySQL, exactly once.")]
pub struct Config {
    /// Kafka bootstrap servers.
    #[arg(long, env = env::KAFKA_BROKERS, default_value = local_backends::KAFKA_BROKERS)]
    pub kafka_brokers: String,
    /// Topic of admitted coupons; undecodable messages go to `<topic>.dlq`.
    #[arg(long, env = env::KAFKA_TOPIC, default_value = couponrush_core::kafka::DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// Consumer group; replicas of one deployment share it.
    #[arg(long, env = env::KAFKA_GROUP, default_value = "couponrush-consumer")]
    pub kafka_group: String,
    /// Redis URL (or cluster seeds with --redis-cluster), where admissions are confirmed.
    #[arg(long, env = env::REDIS_URL, default_value = local_backends::REDIS_URL)]
    pub redis_url: String,
    /// Treat --redis-url as the seeds of a Redis Cluster.
    #[arg(long, env = env::REDIS_CLUSTER)]
    pub redis_cluster: bool,
    /// MySQL URL.
    #[arg(long, env = env::DATABASE_URL, default_value = local_backends::DATABASE_URL)]
    pub database_url: String,
    /// Most messages written in one transaction.
    #[arg(long, env = env::BATCH_MAX, default_value_t = 1000)]
    pub batch_max: usize,
    /// Longest wait for a batch to fill once its first message arrived.
    #[arg(long, env = env::BATCH_WAIT, default_value = "10ms", value_parser = parse_duration)]
    pub batch_wait: Duration,
    /// Rows per second written at most, to protect the database (0: no limit).
    #[arg(long, env = env::MAX_ROWS_PER_SECOND, default_value_t = 0)]
    pub max_rows_per_second: u32,
    /// Address of /healthz, /readyz and /metrics (loopback unless told otherwise; the
    /// Deployment sets every interface).
    #[arg(long, env = env::LISTEN, default_value_t = CONSUMER.local_listen())]
    pub listen: SocketAddr,
    /// Upper bound for finishing the current batch on shutdown.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long, env = env::LOG_JSON)]
    pub log_json: bool,
    /// TLS and authentication for managed backends.
    #[command(flatten)]
    pub tls: couponrush_core::backend_tls::BackendTls,
}

#[cfg(test)]
mod tests {
    use super::*;
    use couponrush_core::workload::testing;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn child_parses() {
        let Some(argv) = testing::child_argv() else { return };
        let config = Config::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let parsed = serde_json::json!({
            "listen": config.listen.to_string(),
            "kafka_topic": config.kafka_topic,
            "kafka_group": config.kafka_group,
            "redis_cluster": config.redis_cluster,
            "batch_wait_ms": config.batch_wait.as_millis() as u64,
            "log_json": config.log_json,
        });
        println!("PARSED {parsed}");
    }

    /// The Deployment's way: the binary alone, everything in the environment.
    #[test]
    fn no_arguments_runs_with_the_environment() {
        let parsed = testing::parse_in_child(
            "config::tests::child_parses",
            &["couponrush-consumer".to_owned()],
            [
                ("LISTEN", "0.0.0.0:19090"),
                ("KAFKA_TOPIC", "couponrush.ns.ev"),
                ("KAFKA_GROUP", "couponrush-ns-ev"),
                ("REDIS_CLUSTER", "true"),
                ("BATCH_WAIT", "25ms"),
                ("LOG_JSON", "true"),
            ],
        );
        let expected = serde_json::json!({
            "listen": "0.0.0.0:19090",
            "kafka_topic": "couponrush.ns.ev",
            "kafka_group": "couponrush-ns-ev",
            "redis_cluster": true,
            "batch_wait_ms": 25,
            "log_json": true,
        });
        assert_eq!(serde_json::from_str::<serde_json::Value>(&parsed).expect("json"), expected);
    }

    #[test]
    fn without_environment_it_listens_on_loopback() {
        let parsed = testing::parse_in_child("config::tests::child_parses", &["couponrush-consumer".to_owned()], []);
        let parsed: serde_json::Value = serde_json::from_str(&parsed).expect("json");
        assert_eq!(parsed["listen"], CONSUMER.local_listen().to_string());
        assert_eq!(parsed["log_json"], false);
    }
}
