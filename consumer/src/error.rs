//! What can stop a batch. Each is retried with backoff; none skips a message.

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("confirming admissions in Redis failed")]
    Confirm(#[source] couponrush_core::round_store::admission::ScriptError),
    #[error("inserting coupons into MySQL failed")]
    Insert(#[source] sqlx::Error),
    #[error("dead-lettering a message failed")]
    DeadLetter(#[source] rdkafka::error::KafkaError),
}

impl BatchError {
    pub fn kind(&self) -> &'static str {
        match self {
            BatchError::Confirm(_) => "confirm",
            BatchError::Insert(_) => "insert",
            BatchError::DeadLetter(_) => "dead_letter",
        }
    }
}

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connecting to MySQL failed")]
    Database(#[source] sqlx::Error),
    #[error("migrating the MySQL schema failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("connecting to Redis failed")]
    Redis(#[source] redis::RedisError),
    #[error("making sure of the Kafka topics failed")]
    Topics(#[source] rdkafka::error::KafkaError),
    #[error("creating the Kafka consumer or the dead-letter producer failed")]
    Kafka(#[source] rdkafka::error::KafkaError),
}
