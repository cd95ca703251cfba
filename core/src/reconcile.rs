//! Reconciliation: every admission in Redis must end up as a MySQL row. When an issuer
//! dies between admitting and publishing, or the delivery outcome was unknown, the
//! winners hash holds a seq that MySQL lacks; this re-publishes those. Re-publishing is
//! always safe: the consumer confirms against Redis and inserts idempotently.

use std::collections::HashSet;

use redis::AsyncCommands;
use sqlx::MySqlPool;

use crate::event::RoundId;
use crate::kafka::Publisher;
use crate::keys::{RoundKeys, parse_winner_field};
use crate::message::IssuedCoupon;
use crate::redis_conn::RedisConn;
use crate::{db, wall_clock_ms};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the winners from Redis failed")]
    Redis(#[from] redis::RedisError),
    #[error("reading the persisted coupons from MySQL failed")]
    Database(#[from] sqlx::Error),
    #[error("re-publishing a missing coupon failed")]
    Publish(#[from] rdkafka::error::KafkaError),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub admitted: u64,
    pub persisted: u64,
    pub republished: u64,
}

/// Compares the round's winners with its rows and re-publishes what is missing.
pub async fn reconcile_round(
    redis: &mut RedisConn,
    pool: &MySqlPool,
    publisher: &Publisher,
    round: &RoundId,
) -> Result<ReconcileReport, ReconcileError> {
    let keys = RoundKeys::new(round);
    let winners: Vec<(String, u32)> = redis.hgetall(&keys.winners).await?;
    let persisted: HashSet<u32> = db::persisted_seqs(pool, round).await?.into_iter().collect();
    let mut report =
        ReconcileReport { admitted: winners.len() as u64, persisted: persisted.len() as u64, republished: 0 };
    for (field, seq) in winners {
        if persisted.contains(&seq) {
            continue;
        }
        let (user, slot) = parse_winner_field(&field);
        tracing::info!(round = %round, user, seq, "re-publishing an admitted coupon without a row");
        publisher.publish(&IssuedCoupon::new(round, user, seq, slot, wall_clock_ms())).await?;
        report.republished += 1;
    }
    Ok(report)
}
