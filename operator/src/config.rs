//! Configuration of `couponrush-operator`: every flag is also an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use couponrush_core::duration::parse as parse_duration;

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
    /// Image of the issuer Deployments the operator creates.
    #[arg(long, env = "ISSUER_IMAGE", default_value = "ghcr.io/couponrush/couponrush:0.1.0")]
    pub issuer_image: String,
    /// Image of the consumer Deployments the operator creates.
    #[arg(long, env = "CONSUMER_IMAGE", default_value = "ghcr.io/couponrush/couponrush:0.1.0")]
    pub consumer_image: String,
    /// Secret (in the event's namespace) with the backends' addresses, for events that
    /// name none.
    #[arg(long, env = "DEFAULT_BACKENDS_SECRET", default_value = "couponrush-backends")]
    pub default_backends_secret: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEADER_ELECTION_LEASE", default_value = "couponrush-operator")]
    pub leader_election_lease: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "couponrush-operator")]
    pub identity: String,
    /// How long a leader's Lease stays valid without renewal.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
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
