//! Kafka → MySQL, exactly once in effect: a batch of messages is decoded, confirmed
//! against Redis (which skips admissions the issuer rolled back), inserted in one
//! transaction with idempotent unique keys, and only then are its offsets stored.
//! A crash anywhere before that redelivers the batch, and redelivery inserts nothing
//! twice. Undecodable messages go to the dead-letter topic and never block a partition;
//! database errors are retried with backoff, never skipped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use couponrush_core::message::IssuedCoupon;
use couponrush_core::redis_conn::RedisConn;
use couponrush_core::round_store::admission;
use couponrush_core::round_store::buckets::bucket_of_seq;
use couponrush_core::round_store::keys::{RoundKeys, winner_field};
use couponrush_core::round_store::meta;
use couponrush_core::{db, error_chain, reconcile};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

use crate::error::BatchError;
use crate::metrics::{ErrorLabels, Metrics};

/// One message, detached from the consumer so a batch can outlive the next `recv`.
#[derive(Debug)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

pub struct Pipeline {
    pub consumer: StreamConsumer,
    pub dead_letters: FutureProducer,
    pub dead_letter_topic: String,
    pub redis: RedisConn,
    pub db: MySqlPool,
    pub metrics: Metrics,
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub rate: RateLimit,
}

impl Pipeline {
    /// Consumes until `shutdown`; the batch in hand when it comes is finished first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last_lag = Instant::now();
        while let Some(batch) = self.next_batch(&shutdown).await {
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            if !self.make_durable(&batch, &shutdown).await {
                // Shut down while retrying: the offsets stay unstored, the batch comes back.
                break;
            }
            self.store_offsets(&batch);
            self.metrics.batch_size.observe(batch.len() as f64);
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            if last_lag.elapsed() > Duration::from_secs(1) {
                self.update_lag();
                last_lag = Instant::now();
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::debug!(%error, "final offset commit failed; the next owner redelivers, harmlessly");
        }
    }

    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<Record>> {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return None,
            message = self.consumer.recv() => message,
        };
        let mut batch = Vec::new();
        match first {
            Ok(message) => batch.push(detach(&message)),
            Err(error) => {
                tracing::warn!(%error, "receiving from Kafka failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Some(batch);
            }
        }
        let deadline = tokio::time::Instant::now() + self.batch_wait;
        while batch.len() < self.batch_max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(detach(&message)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "receiving from Kafka failed");
                    break;
                }
                Err(_) => break,
            }
        }
        self.metrics.consumed.inc_by(batch.len() as u64);
        Some(batch)
    }

    /// Makes every message of the batch durable (a row, a skip, or a dead letter),
    /// retrying with backoff until it succeeds or `shutdown` comes.
    async fn make_durable(&mut self, batch: &[Record], shutdown: &CancellationToken) -> bool {
        let mut coupons = Vec::with_capacity(batch.len());
        for record in batch {
            match IssuedCoupon::decode(&record.payload) {
                Ok(coupon) => coupons.push(coupon),
                Err(error) => {
                    let reason = error_chain(&error);
                    let dead_lettered = retry(shutdown, &self.metrics, || self.dead_letter(record, &reason)).await;
                    if !dead_lettered {
                        return false;
                    }
                }
            }
        }
        if coupons.is_empty() {
            return true;
        }
        let wait = self.rate.reserve(coupons.len());
        if !wait.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let redis = self.redis.clone();
        retry(shutdown, &self.metrics, || confirm_and_insert(redis.clone(), &self.db, &coupons, &self.metrics)).await
    }

    async fn dead_letter(&self, record: &Record, reason: &str) -> Result<(), BatchError> {
        tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, reason, "dead-lettering an undecodable message");
        let headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(reason) })
            .insert(Header { key: "origin-topic", value: Some(&record.topic) })
            .insert(Header { key: "origin-partition", value: Some(&record.partition.to_string()) })
            .insert(Header { key: "origin-offset", value: Some(&record.offset.to_string()) });
        let key = format!("{}/{}/{}", record.topic, record.partition, record.offset);
        let message = FutureRecord::to(&self.dead_letter_topic).key(&key).payload(&record.payload).headers(headers);
        self.dead_letters
            .send(message, Duration::from_secs(5))
            .await
            .map_err(|(error, _)| BatchError::DeadLetter(error))?;
        self.metrics.dead_lettered.inc();
        Ok(())
    }

    fn store_offsets(&self, batch: &[Record]) {
        let mut highest: HashMap<(&str, i32), i64> = HashMap::new();
        for record in batch {
            let offset = highest.entry((&record.topic, record.partition)).or_insert(record.offset);
            *offset = (*offset).max(record.offset);
        }
        for ((topic, partition), offset) in highest {
            // Stores offset + 1: the next message to read.
            if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                // Usually a rebalance took the partition away; its new owner redelivers.
                tracing::debug!(%error, topic, partition, offset, "storing the offset failed");
            }
        }
    }

    fn update_lag(&self) {
        let (Ok(assignment), Ok(position)) = (self.consumer.assignment(), self.consumer.position()) else {
            return;
        };
        let mut lag = 0;
        for element in assignment.elements() {
            // A short blocking broker call, once a second at most.
            let watermarks = tokio::task::block_in_place(|| {
                self.consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_millis(200))
            });
            let Ok((_, high)) = watermarks else {
                continue;
            };
            let next = position
                .find_partition(element.topic(), element.partition())
                .and_then(|p| p.offset().to_raw())
                .filter(|offset| *offset >= 0)
                .unwrap_or(high);
            lag += (high - next).max(0);
        }
        self.metrics.lag.set(lag);
    }
}

fn detach(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Confirms the batch's admissions round by round (and, in a round split into stock
/// buckets, in the bucket that handed each seq out), then inserts those that stand in
/// one transaction.
async fn confirm_and_insert(
    mut redis: RedisConn,
    pool: &MySqlPool,
    coupons: &[IssuedCoupon],
    metrics: &Metrics,
) -> Result<(), BatchError> {
    let mut by_round: BTreeMap<(&str, u32), Vec<&IssuedCoupon>> = BTreeMap::new();
    for coupon in coupons {
        by_round.entry((&coupon.event, coupon.round)).or_default().push(coupon);
    }
    let mut standing = Vec::with_capacity(coupons.len());
    for group in by_round.values() {
        let Some(Ok(round)) = group.first().map(|c| c.round_id()) else {
            continue;
        };
        // A round whose keys are gone confirms as one bucket: its confirm keeps every
        // message and lets MySQL's unique keys decide.
        let buckets =
            meta::round_buckets(&mut redis, &round).await.map_err(|error| BatchError::Confirm(error.into()))?;
        let buckets = buckets.unwrap_or(1);
        let mut by_bucket: BTreeMap<u32, Vec<&IssuedCoupon>> = BTreeMap::new();
        for coupon in group {
            by_bucket.entry(bucket_of_seq(coupon.seq, buckets)).or_default().push(coupon);
        }
        for (bucket, group) in by_bucket {
            let admissions: Vec<(&str, u32, u32)> = group.iter().map(|c| (c.user.as_str(), c.slot, c.seq)).collect();
            let keys = RoundKeys::bucket(&round, bucket);
            let verdicts = admission::confirm(&mut redis, &keys, &admissions).await.map_err(BatchError::Confirm)?;
            for (coupon, stands) in group.iter().zip(verdicts) {
                if stands {
                    standing.push((*coupon).clone());
                } else {
                    tracing::info!(round = %round, user = %coupon.user, seq = coupon.seq, "skipping a rolled-back admission");
                    metrics.revoked.inc();
                }
            }
        }
    }
    let inserted = db::insert_coupons(pool, &standing).await.map_err(BatchError::Insert)?;
    metrics.inserted.inc_by(inserted);
    let skipped = (standing.len() as u64).saturating_sub(inserted);
    if skipped > 0 {
        // Usually redelivery (the same coupon again); a different coupon under a taken seq
        // or user slot means Redis handed something out twice, and must not pass quietly.
        let conflicts = report_conflicts(pool, &standing).await;
        metrics.conflicts.inc_by(conflicts);
        metrics.duplicates.inc_by(skipped.saturating_sub(conflicts));
    }
    Ok(())
}

/// Logs (at error level) and counts the coupons of `coupons` that lost to another row
/// with their seq or user slot. The rows are committed already; a failed check is only
/// a warning.
async fn report_conflicts(pool: &MySqlPool, coupons: &[IssuedCoupon]) -> u64 {
    let mut by_round: BTreeMap<(&str, u32), Vec<&IssuedCoupon>> = BTreeMap::new();
    for coupon in coupons {
        by_round.entry((&coupon.event, coupon.round)).or_default().push(coupon);
    }
    let mut total = 0;
    for group in by_round.values() {
        let Some(Ok(round)) = group.first().map(|c| c.round_id()) else {
            continue;
        };
        let seqs: Vec<u32> = group.iter().map(|c| c.seq).collect();
        let users: Vec<&str> = group.iter().map(|c| c.user.as_str()).collect();
        let rows = match db::coupons_matching(pool, &round, &seqs, &users).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, %round, "checking skipped coupons for conflicts failed");
                continue;
            }
        };
        let winners: Vec<(String, u32)> = group.iter().map(|c| (winner_field(&c.user, c.slot), c.seq)).collect();
        for conflict in reconcile::compare(&winners, &rows).conflicts {
            conflict.log(&round);
            total += 1;
        }
    }
    total
}

/// Runs `attempt` until it succeeds (true) or `shutdown` comes (false), backing off
/// from 100 ms to 5 s and reporting each failure.
async fn retry<F, Fut>(shutdown: &CancellationToken, metrics: &Metrics, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BatchError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(error) => {
                metrics.errors.get_or_create(&ErrorLabels { kind: error.kind() }).inc();
                tracing::warn!(error = %error_chain(&error), retry_in_ms = backoff.as_millis() as u64, "batch failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Spaces batches so that at most `rows_per_second` rows are written (0: no limit).
#[derive(Debug)]
pub struct RateLimit {
    rows_per_second: u32,
    next_free: Instant,
}

impl RateLimit {
    pub fn new(rows_per_second: u32) -> Self {
        Self { rows_per_second, next_free: Instant::now() }
    }

    /// Reserves `rows` and returns how long to wait before writing them.
    pub fn reserve(&mut self, rows: usize) -> Duration {
        if self.rows_per_second == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let start = self.next_free.max(now);
        self.next_free = start + Duration::from_secs_f64(rows as f64 / f64::from(self.rows_per_second));
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_spaces_batches() {
        let mut unlimited = RateLimit::new(0);
        assert_eq!(unlimited.reserve(10_000), Duration::ZERO);

        let mut limit = RateLimit::new(100);
        assert_eq!(limit.reserve(50), Duration::ZERO);
        let wait = limit.reserve(50);
        assert!(wait > Duration::from_millis(450) && wait <= Duration::from_millis(500), "{wait:?}");
        let wait = limit.reserve(100);
        assert!(wait > Duration::from_millis(950) && wait <= Duration::from_millis(1000), "{wait:?}");
    }
}
