//! Why a request could not be decided. Every variant is a backend that did not answer,
//! so every one becomes 503 with nothing admitted; the chain goes to the log only.

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("looking up the event in Redis failed")]
    LookupEvent(#[source] redis::RedisError),
    #[error("the admission script failed")]
    Admit(#[source] couponrush_core::admission::ScriptError),
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
    Queue(#[source] redis::RedisError),
    #[error("reading the caller's result failed")]
    ReadResult(#[source] redis::RedisError),
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
        }
    }
}
