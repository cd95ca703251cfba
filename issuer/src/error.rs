//! Why a request could not be decided. Every variant becomes a 503; the chain goes to
//! the log only. What the answer may claim depends on the variant: most prove that
//! nothing was admitted (`UNAVAILABLE`), some leave it unknown ([`IssueError::outcome_unknown`]:
//! `OUTCOME_UNKNOWN`, and a retry tells), and a round whose Redis state vanished or went
//! back in time is paused ([`IssueError::round_paused`]).

use couponrush_core::round_store::admission::{ScriptError, may_have_run};

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("looking up the event in Redis failed")]
    LookupEvent(#[source] redis::RedisError),
    #[error("the admission script failed")]
    Admit(#[source] ScriptError),
    #[error("publishing the coupon to Kafka failed")]
    Publish(#[source] rdkafka::error::KafkaError),
    #[error("the database transaction failed")]
    Database(#[source] sqlx::Error),
    #[error("taking the round's Redis lock failed")]
    Lock(#[source] redis::RedisError),
    #[error("the round's Redis lock stayed taken past the wait limit")]
    LockTimeout,
    #[error("the Redis gate failed")]
    Gate(#[source] redis::RedisError),
    #[error("the queue script failed")]
    Queue(#[source] ScriptError),
    #[error("reading the caller's result failed")]
    ReadResult(#[source] ScriptError),
    #[error("the round's keys vanished from Redis while it was live (Redis restarted without its data, or flushed)")]
    RoundVanished,
    #[error(
        "Redis' seq counter of the round is {seq_in_redis}, below seq {seen} already handed out: Redis lost writes"
    )]
    RoundRegressed { seq_in_redis: u32, seen: u32 },
    #[error("the admission task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("another request of the user is taking a coupon from another stock bucket (retry in {retry_after_ms} ms)")]
    SpillPending { retry_after_ms: i64 },
    #[error("a newer request of the user took over this request's stock-bucket reservation")]
    SpillSuperseded,
}

impl IssueError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IssueError::LookupEvent(_) => "lookup_event",
            IssueError::Admit(_) => "admit",
            IssueError::Publish(_) => "publish",
            IssueError::Database(_) => "database",
            IssueError::Lock(_) | IssueError::LockTimeout => "lock",
            IssueError::Gate(_) => "gate",
            IssueError::Queue(_) => "queue",
            IssueError::ReadResult(_) => "read_result",
            IssueError::RoundVanished | IssueError::RoundRegressed { .. } => "round_lost",
            IssueError::Panicked(_) => "panicked",
            IssueError::SpillPending { .. } => "spill_pending",
            IssueError::SpillSuperseded => "spill_superseded",
        }
    }

    /// Whether the request may have been admitted although it failed: a write whose
    /// reply never came (a timeout, a dropped connection) or a transaction whose commit
    /// was not acknowledged. The answer must not say "nothing was issued" then; a retry
    /// is safe and tells (the winners hash or the unique keys return the same seq).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            IssueError::Admit(ScriptError::Redis(error)) | IssueError::Queue(ScriptError::Redis(error)) => {
                may_have_run(error)
            }
            IssueError::Database(error) => commit_may_have_happened(error),
            IssueError::Panicked(_) => true,
            // Another request of the user decides; a retry (or GET) tells.
            IssueError::SpillPending { .. } | IssueError::SpillSuperseded => true,
            _ => false,
        }
    }

    /// Whether a task must settle the outcome after the answer (publish what the user
    /// holds): an unknown outcome of this request's own writes, not another request's.
    pub fn needs_settling(&self) -> bool {
        self.outcome_unknown() && !matches!(self, IssueError::SpillPending { .. })
    }

    /// Whether the round must stop admitting until its Redis state is recovered.
    pub fn round_paused(&self) -> bool {
        matches!(self, IssueError::RoundVanished | IssueError::RoundRegressed { .. })
    }
}

/// A lost connection or a broken protocol mid-transaction may hide a commit that
/// happened; an error the server answered (or one from the pool before any statement)
/// proves the transaction did not commit.
fn commit_may_have_happened(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Why the issuer could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the token settings are invalid")]
    Auth(#[source] crate::auth::AuthConfigError),
    #[error("connecting to Redis failed")]
    Redis(#[source] redis::RedisError),
    #[error("the MySQL settings are invalid")]
    Database(#[source] sqlx::Error),
    #[error("creating the Kafka producer failed")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error("serving HTTP failed")]
    Http(#[source] std::io::Error),
    #[error("flushing Kafka on shutdown failed")]
    Flush(#[source] rdkafka::error::KafkaError),
    #[error("the Kafka flush task failed")]
    FlushTask(#[source] tokio::task::JoinError),
}
