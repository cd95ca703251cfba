//! Kafka settings every couponrush binary agrees on: topic names, the idempotent
//! producer, topic creation, and the publisher the issuer and reconciliation use.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::backend_tls::BackendTls;
use crate::message::IssuedCoupon;

/// Where Kafka is (bootstrap servers) and how to reach it (TLS, SASL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KafkaTarget {
    pub brokers: String,
    pub tls: BackendTls,
}

impl KafkaTarget {
    /// Brokers reached with the security settings of `tls`.
    pub fn new(brokers: &str, tls: &BackendTls) -> Self {
        Self { brokers: brokers.to_owned(), tls: tls.clone() }
    }

    /// Brokers reached in plaintext, as on a developer's machine.
    pub fn plaintext(brokers: &str) -> Self {
        Self { brokers: brokers.to_owned(), tls: BackendTls::default() }
    }

    /// A librdkafka configuration with the bootstrap servers and the security settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.tls.apply_to_kafka(&mut config);
        config
    }
}

/// Topic of admitted coupons.
pub const DEFAULT_TOPIC: &str = "couponrush.issued";

/// Where the consumer puts messages it cannot decode.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Producer settings: idempotent, `acks=all`, a short linger so that a spike's
/// messages leave in batches, and a bounded delivery time after which a message
/// counts as failed (and its admission is rolled back unless already confirmed).
///
/// The linger is the price of a 201 (it waits for the ack) against the cost per coupon:
/// measured on the benchmark machine (a probe against a warm broker, 512 connections;
/// BENCH.md), 5 ms instead of 2 ms cut the issuer's CPU per admission from 47 to 29 µs
/// and the broker's from 37 to 11 µs.
pub fn producer_config(kafka: &KafkaTarget, delivery_timeout: Duration) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
        .set("socket.keepalive.enable", "true");
    config
}

/// Creates `topic` (and its dead-letter topic) if missing. Safe to call repeatedly.
pub async fn ensure_topics(kafka: &KafkaTarget, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let dead_letter = dead_letter_topic(topic);
    let topics = [
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dead_letter, 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Publishes admitted coupons, keyed by user id.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaTarget, topic: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        Ok(Self { producer: producer_config(kafka, delivery_timeout).create()?, topic: topic.to_owned() })
    }

    /// Resolves when the broker acknowledged the message (all in-sync replicas), or
    /// with the error once delivery failed for good.
    pub async fn publish(&self, coupon: &IssuedCoupon) -> Result<(), KafkaError> {
        let payload = coupon.encode();
        let record = FutureRecord::to(&self.topic).key(&coupon.user).payload(&payload);
        self.producer.send(record, Duration::from_secs(0)).await.map(|_| ()).map_err(|(error, _)| error)
    }

    /// Waits for messages still in flight, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Every coupon of `round` in `topic`, read from the start of each partition up to its
/// end as it was when the call began (a fresh reader, no consumer group, nothing
/// committed). Blocking: call it from `spawn_blocking`. Gives up at `deadline`.
pub fn read_round_coupons(
    kafka: &KafkaTarget,
    topic: &str,
    round: &crate::event::RoundId,
    deadline: std::time::Instant,
) -> Result<Vec<IssuedCoupon>, KafkaError> {
    use std::collections::HashMap;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let call_timeout = Duration::from_secs(10);
    let reader: BaseConsumer = kafka
        .client_config()
        // Required by the client; nothing is ever committed under it.
        .set("group.id", "couponrush-recovery")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let metadata = reader.fetch_metadata(Some(topic), call_timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for partition in partitions {
        let (low, high) = reader.fetch_watermarks(topic, partition, call_timeout)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
        }
    }
    reader.assign(&assignment)?;
    let (event, number) = (round.event.to_string(), round.round);
    let mut found = Vec::new();
    while !ends.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut));
        }
        let Some(message) = reader.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        // Anything that does not decode went (or goes) to the dead-letter topic: not a coupon.
        if let Some(coupon) = message.payload().and_then(|payload| IssuedCoupon::decode(payload).ok())
            && coupon.event == event
            && coupon.round == number
        {
            found.push(coupon);
        }
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
    }
    Ok(found)
}
