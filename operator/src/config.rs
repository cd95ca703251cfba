//! Configuration of `couponrush-operator`: every flag is also an environment variable,
//! named in [`couponrush_core::workload::env`] (the chart sets them).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use couponrush_core::duration::parse as parse_duration;
use couponrush_core::workload::{OPERATOR, env};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "couponrush-operator",
    version,
    about = "Runs CouponEvents: pre-warms Redis, creates the Kafka topic, sizes and scales the issuer and consumer, reports status, tears down after sell-out."
)]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = env::LISTEN, default_value_t = OPERATOR.local_listen())]
    pub listen: SocketAddr,
    /// Image of the issuer Deployments the operator creates.
    #[arg(long, env = env::ISSUER_IMAGE, default_value = "ghcr.io/couponrush/couponrush:0.1.0")]
    pub issuer_image: String,
    /// Image of the consumer Deployments the operator creates.
    #[arg(long, env = env::CONSUMER_IMAGE, default_value = "ghcr.io/couponrush/couponrush:0.1.0")]
    pub consumer_image: String,
    /// Secret (in the event's namespace) with the backends' addresses, for events that
    /// name none.
    #[arg(long, env = env::DEFAULT_BACKENDS_SECRET, default_value = "couponrush-backends")]
    pub default_backends_secret: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = env::LEADER_ELECTION_NAMESPACE, default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = env::LEADER_ELECTION_LEASE, default_value = "couponrush-operator")]
    pub leader_election_lease: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = env::POD_NAME, default_value = "couponrush-operator")]
    pub identity: String,
    /// How long a leader's Lease stays valid without renewal.
    #[arg(long, env = env::LEASE_DURATION, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Namespaces whose CouponEvents the operator runs (comma-separated); empty means
    /// every namespace. With a list it watches, reads and writes only in those
    /// namespaces, so the chart can grant it namespaced Roles instead of a ClusterRole.
    #[arg(long, env = env::WATCH_NAMESPACES, value_delimiter = ',', value_parser = parse_namespace)]
    pub watch_namespaces: Vec<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = env::LOG_JSON)]
    pub log_json: bool,
}

/// A namespace name as the apiserver accepts it (an RFC 1123 label), so that a typo
/// fails at start-up rather than as a forbidden watch later.
fn parse_namespace(value: &str) -> Result<String, String> {
    let name = value.trim();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid { Ok(name.to_owned()) } else { Err(format!("{value:?} is not a namespace name (RFC 1123 label)")) }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use couponrush_core::workload::OPERATOR;

    #[test]
    fn cli_is_well_formed() {
        super::Config::command().debug_assert();
    }

    #[test]
    fn watch_namespaces_is_a_comma_separated_list_and_empty_means_all() {
        use clap::Parser;
        let parse = |args: &[&str]| super::Config::try_parse_from([&["couponrush-operator"], args].concat());
        let namespaces = |args: &[&str]| parse(args).map(|config| config.watch_namespaces);
        assert_eq!(namespaces(&[]).expect("no flag"), Vec::<String>::new());
        assert_eq!(namespaces(&["--watch-namespaces", "shop-a,shop-b"]).expect("two"), ["shop-a", "shop-b"]);
        assert_eq!(namespaces(&["--watch-namespaces", "shop-a, shop-b"]).expect("spaces"), ["shop-a", "shop-b"]);
        for bad in ["Shop", "shop_a", "-shop", "shop-a,,shop-b"] {
            assert!(parse(&["--watch-namespaces", bad]).is_err(), "{bad} was accepted");
        }
    }

    /// The chart's operator Deployment (a Helm template, so read as text).
    const CHART_DEPLOYMENT: &str = include_str!("../../charts/couponrush/templates/deployment.yaml");

    /// `(name, what follows it)` for every `- name: NAME` of the container's env: the
    /// literal value, or `fieldRef:<path>` for the downward API.
    fn chart_env() -> Vec<(String, String)> {
        let lines: Vec<&str> = CHART_DEPLOYMENT.lines().map(str::trim).collect();
        let start = lines.iter().position(|l| *l == "env:").expect("an env: block");
        let mut vars = Vec::new();
        for (i, line) in lines.iter().enumerate().skip(start + 1) {
            let Some(name) = line.strip_prefix("- name: ") else {
                if line.ends_with(':') && !line.starts_with("value") && !line.starts_with("fieldRef") {
                    break; // the next field of the container (ports:)
                }
                continue;
            };
            let next = lines.get(i + 1).copied().unwrap_or_default();
            let source = match next.strip_prefix("value: ") {
                Some(value) => value.trim_matches('"').to_owned(),
                None => {
                    format!("fieldRef:{}", lines.get(i + 3).and_then(|l| l.strip_prefix("fieldPath: ")).unwrap_or("?"))
                }
            };
            vars.push((name.to_owned(), source));
        }
        vars
    }

    #[test]
    fn the_chart_starts_the_operator_as_it_parses() {
        let vars = chart_env();
        let value = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        // Probes and the Service reach it: every interface, on the container port.
        assert_eq!(value("LISTEN"), Some(OPERATOR.pod_listen().to_string().as_str()));
        assert!(CHART_DEPLOYMENT.contains(&format!("containerPort: {}", OPERATOR.port)));
        // One identity per replica, and the Lease where the chart's Role allows it.
        assert_eq!(value("POD_NAME"), Some("fieldRef:metadata.name"));
        assert_eq!(value("LEADER_ELECTION_NAMESPACE"), Some("fieldRef:metadata.namespace"));
        for path in ["path: /healthz", "path: /readyz"] {
            assert!(CHART_DEPLOYMENT.contains(path), "{path}");
        }
        // Every variable the chart sets is read by the operator (RUST_LOG by its logger).
        let reads: Vec<String> = super::Config::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        for (name, _) in &vars {
            assert!(name == "RUST_LOG" || reads.contains(name), "the operator never reads {name}");
        }
        assert!(vars.len() >= 9, "{vars:?}");
    }
}
