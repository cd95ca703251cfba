//! Why a reconcile failed. Every variant is retried with backoff by the error policy and
//! reported in the event's status; `metric_label` names it in the error metric.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the backends Secret {name} failed")]
    ReadBackendsSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the backends Secret {name} lacks {key}")]
    BackendsSecretKey { name: String, key: &'static str },
    #[error("the backends Secret {name} has an invalid value")]
    BackendsSecretValue { name: String, source: couponrush_core::backend_tls::InvalidValue },
    #[error("connecting to Redis failed")]
    ConnectRedis(#[source] redis::RedisError),
    #[error("connecting to MySQL failed")]
    ConnectDatabase(#[source] sqlx::Error),
    #[error("migrating the MySQL schema failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("creating the Kafka topic failed")]
    CreateTopic(#[source] rdkafka::error::KafkaError),
    #[error("reading the round's counts failed")]
    ObserveRedis(#[source] redis::RedisError),
    #[error("reading the round's rows failed")]
    ObserveDatabase(#[source] sqlx::Error),
    #[error("pre-warming the round failed")]
    Prewarm(#[source] couponrush_core::prewarm::PrewarmError),
    #[error("re-publishing missing coupons failed")]
    ReconcileCoupons(#[source] couponrush_core::reconcile::ReconcileError),
    #[error("applying {kind} {name} failed")]
    ApplyWorkload {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name} failed")]
    DeleteWorkload {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status failed")]
    PatchStatus(#[source] kube::Error),
    #[error("encoding the status failed")]
    EncodeStatus(#[source] serde_json::Error),
    #[error("the finalizer failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the event has no namespace")]
    NoNamespace,
}

impl Error {
    /// Every value [`Error::metric_label`] gives, so that each failure series exists (at 0)
    /// from the start and `rate()` over it works before the first failure.
    pub const METRIC_LABELS: [&'static str; 10] = [
        "backends_secret",
        "redis",
        "mysql",
        "kafka",
        "prewarm",
        "reconcile_coupons",
        "workloads",
        "status",
        "finalizer",
        "spec",
    ];

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadBackendsSecret { .. } | Error::BackendsSecretKey { .. } | Error::BackendsSecretValue { .. } => {
                "backends_secret"
            }
            Error::ConnectRedis(_) | Error::ObserveRedis(_) => "redis",
            Error::ConnectDatabase(_) | Error::ObserveDatabase(_) | Error::Migrate(_) => "mysql",
            Error::CreateTopic(_) => "kafka",
            Error::Prewarm(_) => "prewarm",
            Error::ReconcileCoupons(_) => "reconcile_coupons",
            Error::ApplyWorkload { .. } | Error::DeleteWorkload { .. } => "workloads",
            Error::PatchStatus(_) | Error::EncodeStatus(_) => "status",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "spec",
        }
    }
}

pub use couponrush_core::error_chain as chain;

/// Why the operator stopped with an error (a pod restart is the remedy for each).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG)")]
    NoKubernetesConfig(#[source] kube::Error),
    #[error(
        "cannot list CouponEvents{}: is the CRD installed (kubectl apply -f crds/couponevent.yaml) and the operator granted list on them?",
        .namespace.as_ref().map(|namespace| format!(" in namespace {namespace}")).unwrap_or_default()
    )]
    CannotList {
        namespace: Option<String>,
        #[source]
        source: kube::Error,
    },
    #[error("leader election stopped")]
    ElectionStopped,
    #[error("lost the leader Lease; stopping so that only one replica reconciles")]
    LostLease,
}
