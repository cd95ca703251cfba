//! The start-up contract of the couponrush binaries in a pod: the command line, the
//! environment variables, the port and the probe paths.
//!
//! The operator writes the issuer and consumer Deployments from these definitions, and
//! the binaries' clap configurations read the same names (`#[arg(env = env::LISTEN)]`),
//! so the two sides cannot drift apart by a rename on one of them. The operator's unit
//! tests go one step further: they parse the containers it builds with the binaries'
//! own parsers ([`testing`]).
//!
//! Every binary listens on loopback unless told otherwise (`LISTEN`), so that a process
//! started by hand is not reachable from the network; in a pod the operator (or the
//! chart, for the operator itself) sets [`Workload::pod_listen`], all interfaces, so
//! that the kubelet's probes and the Service reach it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where the backends are when nothing says otherwise: the local ones the backends
/// script starts for the demo and the tests (its `REDIS_PORT`, `MYSQL_PORT`,
/// `KAFKA_PORT` defaults). A pod always gets them set (the operator's Deployments).
pub mod local_backends {
    pub const REDIS_URL: &str = "redis://127.0.0.1:16379";
    pub const DATABASE_URL: &str = "mysql://couponrush:couponrush@127.0.0.1:13306/couponrush";
    pub const KAFKA_BROKERS: &str = "127.0.0.1:19092";
}

/// Names of the environment variables the binaries read. Every flag of every binary is
/// also one of these; `--help` lists them.
pub mod env {
    /// Address of the HTTP server (the API of the issuer, and `/healthz`, `/readyz`,
    /// `/metrics` of every binary).
    pub const LISTEN: &str = "LISTEN";
    /// `true`: log JSON lines instead of text.
    pub const LOG_JSON: &str = "LOG_JSON";
    /// How long a binary may take to finish in-flight work on SIGTERM.
    pub const SHUTDOWN_GRACE: &str = "SHUTDOWN_GRACE";

    /// Redis URL, or comma-separated seeds of a Redis Cluster with [`REDIS_CLUSTER`].
    pub const REDIS_URL: &str = "REDIS_URL";
    /// `true`: [`REDIS_URL`] names the seeds of a Redis Cluster.
    pub const REDIS_CLUSTER: &str = "REDIS_CLUSTER";
    /// MySQL URL.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Kafka bootstrap servers.
    pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
    /// CA certificate (PEM text) Redis' TLS certificate is checked against.
    pub const REDIS_CA_PEM: &str = "REDIS_CA_PEM";
    /// CA certificate (PEM text) MySQL's TLS certificate is checked against.
    pub const DATABASE_CA_PEM: &str = "DATABASE_CA_PEM";
    /// Kafka security protocol: `PLAINTEXT` (default), `SSL`, `SASL_SSL` or `SASL_PLAINTEXT`.
    pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
    /// Kafka SASL mechanism: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    pub const KAFKA_SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
    /// Kafka SASL user.
    pub const KAFKA_SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
    /// Kafka SASL password.
    pub const KAFKA_SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
    /// CA certificate (PEM text) the Kafka brokers' TLS certificates are checked against.
    pub const KAFKA_CA_PEM: &str = "KAFKA_CA_PEM";
    /// Topic of admitted coupons (one per event when the operator runs the workloads).
    pub const KAFKA_TOPIC: &str = "KAFKA_TOPIC";
    /// The consumer's group (one per event when the operator runs the workloads).
    pub const KAFKA_GROUP: &str = "KAFKA_GROUP";
    /// How long Kafka may take to acknowledge a coupon.
    pub const KAFKA_DELIVERY_TIMEOUT: &str = "KAFKA_DELIVERY_TIMEOUT";

    /// HS256 secret the issuer verifies bearer tokens with.
    pub const JWT_HS256_SECRET: &str = "JWT_HS256_SECRET";
    /// PEM public key file the issuer verifies bearer tokens with.
    pub const JWT_PUBLIC_KEY_FILE: &str = "JWT_PUBLIC_KEY_FILE";
    /// `iss` claim the issuer requires.
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    /// `aud` claim the issuer requires.
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    /// Clock skew the issuer allows on `exp` and `nbf`.
    pub const JWT_LEEWAY: &str = "JWT_LEEWAY";
    /// Load tests only: the issuer trusts the `X-User-Id` header.
    pub const TRUST_USER_HEADER: &str = "TRUST_USER_HEADER";
    /// How long a client may take to send a request head to the issuer.
    pub const HTTP_HEADER_TIMEOUT: &str = "HTTP_HEADER_TIMEOUT";
    /// How long a client may take to send a request body to the issuer.
    pub const HTTP_BODY_TIMEOUT: &str = "HTTP_BODY_TIMEOUT";
    /// How long an issuer keeps an idle keep-alive connection.
    pub const HTTP_IDLE_TIMEOUT: &str = "HTTP_IDLE_TIMEOUT";
    /// Connections one issuer keeps open at once.
    pub const HTTP_MAX_CONNECTIONS: &str = "HTTP_MAX_CONNECTIONS";
    /// MySQL connections of one issuer.
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    /// How long a request waits for the redis-lock strategy's lock.
    pub const LOCK_WAIT: &str = "LOCK_WAIT";
    /// tokio's own variable: the runtime's worker threads (the operator sets it on
    /// issuers to the CPU limit's cores; tokio alone would round the quota down).
    pub const TOKIO_WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

    /// Most messages the consumer writes in one transaction.
    pub const BATCH_MAX: &str = "BATCH_MAX";
    /// Longest wait of the consumer for a batch to fill.
    pub const BATCH_WAIT: &str = "BATCH_WAIT";
    /// Rows per second the consumer writes at most.
    pub const MAX_ROWS_PER_SECOND: &str = "MAX_ROWS_PER_SECOND";

    /// Image of the issuer Deployments the operator creates.
    pub const ISSUER_IMAGE: &str = "ISSUER_IMAGE";
    /// Image of the consumer Deployments the operator creates.
    pub const CONSUMER_IMAGE: &str = "CONSUMER_IMAGE";
    /// Backends Secret of events that name none.
    pub const DEFAULT_BACKENDS_SECRET: &str = "DEFAULT_BACKENDS_SECRET";
    /// Namespace of the operator's leader-election Lease.
    pub const LEADER_ELECTION_NAMESPACE: &str = "LEADER_ELECTION_NAMESPACE";
    /// Name of the operator's leader-election Lease.
    pub const LEADER_ELECTION_LEASE: &str = "LEADER_ELECTION_LEASE";
    /// The operator replica's identity in the Lease: its pod name.
    pub const POD_NAME: &str = "POD_NAME";
    /// How long a leader's Lease stays valid without renewal.
    pub const LEASE_DURATION: &str = "LEASE_DURATION";
    /// Comma-separated namespaces the operator watches; unset or empty: all of them.
    pub const WATCH_NAMESPACES: &str = "WATCH_NAMESPACES";
}

/// Keys of an event's backends Secret. The workloads get the Secret as environment
/// (`envFrom`), so each key is the variable of the same name; the operator reads the
/// first four itself to pre-warm the event.
pub const BACKENDS_SECRET_KEYS: [&str; 5] =
    [env::REDIS_URL, env::REDIS_CLUSTER, env::DATABASE_URL, env::KAFKA_BROKERS, env::JWT_HS256_SECRET];

/// Optional keys of the backends Secret, for managed backends: TLS CAs and Kafka's SASL
/// login ([`crate::backend_tls::BackendTls`]). Redis and MySQL credentials go in their URLs.
pub const BACKENDS_SECRET_TLS_KEYS: [&str; 7] = [
    env::REDIS_CA_PEM,
    env::DATABASE_CA_PEM,
    env::KAFKA_SECURITY_PROTOCOL,
    env::KAFKA_SASL_MECHANISM,
    env::KAFKA_SASL_USERNAME,
    env::KAFKA_SASL_PASSWORD,
    env::KAFKA_CA_PEM,
];

/// Liveness: answers as soon as the process serves; no backend is asked.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: answers 200 only once the backends the binary needs are connected.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Name of the container port (and of the Service's target port).
pub const PORT_NAME: &str = "http";

/// User and group of the image (distroless `nonroot`); the pods run as it.
pub const RUN_AS_USER: i64 = 65532;

/// How one binary is started in a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `issuer`, `consumer` or `operator`: the container name and the name suffix.
    pub component: &'static str,
    /// The binary's path in the image.
    pub binary: &'static str,
    /// The arguments after the binary; all configuration is in the environment.
    pub args: &'static [&'static str],
    /// The port it listens on: the container port and the probes' port.
    pub port: u16,
}

impl Workload {
    /// The default of `LISTEN`: loopback only, for a process started by hand.
    pub const fn local_listen(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// `LISTEN` in a pod: every interface, so that probes and Services reach it.
    pub const fn pod_listen(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port)
    }

    /// The container's `command`.
    pub fn command(&self) -> Vec<String> {
        vec![self.binary.to_owned()]
    }

    /// The container's `args`.
    pub fn args(&self) -> Vec<String> {
        self.args.iter().map(|arg| (*arg).to_owned()).collect()
    }
}

/// The issuer: serves the API (the `serve` command, also what it does without one).
pub const ISSUER: Workload =
    Workload { component: "issuer", binary: "/usr/local/bin/couponrush-issuer", args: &["serve"], port: 8080 };

/// The consumer: it has a single job, so no command.
pub const CONSUMER: Workload =
    Workload { component: "consumer", binary: "/usr/local/bin/couponrush-consumer", args: &[], port: 9090 };

/// The operator (the image's entrypoint; the chart starts it).
pub const OPERATOR: Workload =
    Workload { component: "operator", binary: "/usr/local/bin/couponrush-operator", args: &[], port: 9443 };

/// Test support: parse a command line with a binary's own parser under exactly a given
/// environment. A process cannot change its own environment safely (`set_var` is
/// `unsafe`, and tests run in parallel), so the parse runs in a child process: the
/// calling test binary itself, filtered to one test that calls [`testing::child_argv`].
#[doc(hidden)]
pub mod testing {
    /// The variable that carries the command line (JSON) to the child.
    const ARGV: &str = "COUPONRUSH_TEST_CHILD_ARGV";

    /// Runs `child_test` (its full path in this test binary) in a child process whose
    /// environment is exactly `env` plus the command line, and returns what it printed
    /// after `PARSED ` (to the end of that line). Panics with the child's output if it failed.
    pub fn parse_in_child<'a>(
        child_test: &str,
        argv: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> String {
        let exe = std::env::current_exe().expect("the test binary's path");
        let output = std::process::Command::new(exe)
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env_clear()
            .env(ARGV, serde_json::to_string(argv).expect("argv as JSON"))
            .envs(env)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "the child failed:\n{stdout}\n{stderr}");
        // The harness prints `test <name> ... ` before the test runs: same line.
        let parsed = stdout.lines().find_map(|line| line.split_once("PARSED ").map(|(_, json)| json));
        parsed.unwrap_or_else(|| panic!("the child ran no parse (wrong test path {child_test}?):\n{stdout}")).to_owned()
    }

    /// In the child: the command line to parse; `None` when the test runs normally (it
    /// should then return at once).
    pub fn child_argv() -> Option<Vec<String>> {
        let argv = std::env::var(ARGV).ok()?;
        Some(serde_json::from_str(&argv).expect("argv as JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_listen_on_every_interface_and_processes_on_loopback() {
        assert_eq!(ISSUER.pod_listen().to_string(), "0.0.0.0:8080");
        assert_eq!(ISSUER.local_listen().to_string(), "127.0.0.1:8080");
        assert_eq!(CONSUMER.pod_listen().port(), 9090);
        assert_eq!(OPERATOR.local_listen().to_string(), "127.0.0.1:9443");
    }

    #[test]
    fn the_workloads_use_distinct_ports() {
        assert_ne!(ISSUER.port, CONSUMER.port);
        assert_ne!(ISSUER.port, OPERATOR.port);
        assert_ne!(CONSUMER.port, OPERATOR.port);
    }
}
