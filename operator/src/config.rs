//! Configuration of `couponrush-operator`: every flag is also an environment variable.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "couponrush-operator",
    version,
    about = "Runs CouponEvents: pre-warms Redis, creates the Kafka topic, sizes and scales the issuer and consumer, reports status, tears down after sell-out."
)]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
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
