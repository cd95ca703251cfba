//! A round's settings in Redis and MySQL: written before the round opens (pre-warm),
//! read by the issuers, removed after the round is done. The operator and the
//! `couponrush-issuer prewarm` admin command call the same functions.

use redis::AsyncCommands;
use sqlx::MySqlPool;

use crate::db;
use crate::event::{RoundId, RoundSpec, Strategy};
use crate::redis_conn::RedisConn;
use crate::round_store::buckets::MAX_STOCK_BUCKETS;
use crate::round_store::keys::{RoundKeys, winner_field};
use crate::round_store::meta::{self, RoundMeta, SettingsWritten, round_buckets, round_meta};

#[derive(Debug, thiserror::Error)]
pub enum PrewarmError {
    #[error("writing the round's Redis keys failed")]
    Redis(#[from] redis::RedisError),
    #[error("writing the round's MySQL row failed")]
    Database(#[from] sqlx::Error),
    #[error("stock {requested} is below the {issued} coupons already issued")]
    StockBelowIssued { requested: u32, issued: u32 },
    #[error("stock and per-user limit must be at least 1")]
    ZeroStock,
    #[error("the queue strategy gives one coupon per user; perUser must be 1")]
    QueueAllowsOnePerUser,
    #[error(
        "{buckets} stock buckets: buckets are 1 to {MAX_STOCK_BUCKETS}, more than 1 only for kafka-async with perUser 1, and at most the stock"
    )]
    InvalidBuckets { buckets: u32 },
    #[error(
        "round {round} was pre-warmed with {existing} stock buckets; a round keeps its buckets (the next round may change them)"
    )]
    BucketsChanged { round: String, existing: u32 },
    #[error("round {0} already ran (its coupons are in MySQL); a new round needs a new number or event name")]
    RoundAlreadyRan(String),
    #[error(
        "round {0} was pre-warmed before but its Redis keys are gone (Redis lost its data): writing them afresh would hand out its seqs a second time; recover the round from Kafka and MySQL instead"
    )]
    RedisLostRound(String),
}

/// What pre-warming found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prewarmed {
    /// The round's keys did not exist before.
    pub created: bool,
    pub remaining: u32,
}

/// Writes the round's keys (or updates them: raising stock adds the difference to what
/// remains; lowering it below what was issued is refused), its MySQL stock row, and
/// finally points the event at this round, so issuers only ever see a complete round.
/// Idempotent.
pub async fn prewarm(
    redis: &mut RedisConn,
    pool: &MySqlPool,
    round: &RoundId,
    spec: &RoundSpec,
) -> Result<Prewarmed, PrewarmError> {
    if spec.stock == 0 || spec.per_user == 0 {
        return Err(PrewarmError::ZeroStock);
    }
    // The queue keeps one result per user (its scheduler admits a user once).
    if spec.strategy.max_per_user().is_some_and(|max| spec.per_user > max) {
        return Err(PrewarmError::QueueAllowsOnePerUser);
    }
    // The spill path exists in kafka-async only, and keeps one coupon per user.
    let bucketed_ok = spec.strategy == Strategy::KafkaAsync && spec.per_user == 1 && spec.buckets <= spec.stock;
    if spec.buckets == 0 || spec.buckets > MAX_STOCK_BUCKETS || (spec.buckets > 1 && !bucketed_ok) {
        return Err(PrewarmError::InvalidBuckets { buckets: spec.buckets });
    }
    if let Some(row) = db::round_row(pool, round).await?
        && row.issued > spec.stock
    {
        return Err(PrewarmError::StockBelowIssued { requested: spec.stock, issued: row.issued });
    }
    // Keys gone but rows present: the round was torn down (or Redis lost it). Writing
    // fresh keys would hand out its seqs again, and MySQL would drop those coupons as
    // duplicates; refuse instead.
    let existing = round_buckets(redis, round).await?;
    if existing.is_none() && db::count_coupons(pool, round).await? > 0 {
        return Err(PrewarmError::RoundAlreadyRan(round.to_string()));
    }
    if let Some(existing) = existing.filter(|existing| *existing != spec.buckets) {
        return Err(PrewarmError::BucketsChanged { round: round.to_string(), existing });
    }
    // The stock row is written after the keys, so a row without keys (of any bucket)
    // means the keys were lost. For kafka-async, coupons may still be on their way
    // through Kafka with seqs that fresh keys would hand out again; the synchronous
    // strategies and the queue decide in MySQL, which still holds the truth.
    if spec.strategy == Strategy::KafkaAsync && db::round_row(pool, round).await?.is_some() {
        for bucket in 0..spec.buckets {
            let exists: bool = redis.exists(RoundKeys::bucket(round, bucket).meta).await?;
            if !exists {
                return Err(PrewarmError::RedisLostRound(round.to_string()));
            }
        }
    }
    // Every bucket's share checked before any is written, so a refused stock leaves the
    // round as it was; bucket 0 (where the round is looked up) written last.
    for bucket in 0..spec.buckets {
        if let Some(meta) = round_meta(redis, &RoundKeys::bucket(round, bucket)).await? {
            let share = crate::round_store::buckets::split_stock(spec.stock, spec.buckets)[bucket as usize];
            if share < meta.stock.saturating_sub(meta.remaining) {
                let issued = round_issued(redis, round, spec.buckets).await?;
                return Err(PrewarmError::StockBelowIssued { requested: spec.stock, issued });
            }
        }
    }
    let (mut created, mut remaining) = (true, 0);
    for bucket in (0..spec.buckets).rev() {
        let (bucket_created, bucket_remaining) = match meta::write_settings(redis, round, bucket, spec).await? {
            SettingsWritten::Created { remaining } => (true, remaining),
            SettingsWritten::Updated { remaining } => (false, remaining),
            SettingsWritten::StockBelowIssued { .. } => {
                let issued = round_issued(redis, round, spec.buckets).await?;
                return Err(PrewarmError::StockBelowIssued { requested: spec.stock, issued });
            }
        };
        created &= bucket_created;
        remaining += bucket_remaining;
    }
    db::upsert_round(pool, round, spec).await?;
    meta::point_at(redis, round, spec.strategy).await?;
    Ok(Prewarmed { created, remaining })
}

/// Coupons taken over every bucket of the round (stock − remaining, summed).
async fn round_issued(redis: &mut RedisConn, round: &RoundId, buckets: u32) -> redis::RedisResult<u32> {
    let mut issued = 0u32;
    for meta in meta::bucket_metas(redis, round, buckets).await?.into_iter().flatten() {
        issued = issued.saturating_add(meta.stock.saturating_sub(meta.remaining));
    }
    Ok(issued)
}

/// Removes the round's Redis keys, the event's pointer if it names this round, and the
/// MySQL stock row. Coupon rows stay: they are the record. The stock row goes first: a
/// stock row without keys reads as "Redis lost this round" to [`prewarm`].
pub async fn remove_round(redis: &mut RedisConn, pool: &MySqlPool, round: &RoundId) -> Result<(), PrewarmError> {
    db::delete_round(pool, round).await?;
    meta::remove_keys(redis, round).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("reading or writing the round's Redis keys failed")]
    Redis(#[from] redis::RedisError),
    #[error("reading the round from MySQL failed")]
    Database(#[from] sqlx::Error),
    #[error("reading the round's coupons from Kafka failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("round {0} has no MySQL stock row: it was never pre-warmed, or it was removed after it completed")]
    NotPrewarmed(String),
    #[error(
        "round {0} is intact in Redis (its seq counter and winners cover everything in Kafka and MySQL); nothing to recover"
    )]
    Intact(String),
    #[error(
        "round {round} has {buckets} stock buckets; recovering a bucketed round is not built (each bucket's seq counter, winners and spilled coupons would have to be rebuilt): restore Redis from its own persistence instead"
    )]
    Bucketed { round: String, buckets: u32 },
}

/// What a recovery wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Winners written back (every admitted coupon found in MySQL or Kafka).
    pub winners: u32,
    /// Of those, found in Kafka only (the consumer had not stored them yet).
    pub from_kafka_only: u32,
    /// Kafka messages whose user slot or seq another coupon holds (Redis had handed a
    /// seq out twice before the recovery); the consumer reports them the same way.
    pub conflicts: u32,
    /// The seq counter written back: the highest seq ever handed out that was found.
    pub seq: u32,
    pub remaining: u32,
}

/// The round's winners rebuilt from MySQL's rows (user, slot, seq), which win, and the
/// Kafka messages, which add a winner when neither its user slot nor its seq is taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuiltWinners {
    pub winners: std::collections::BTreeMap<(String, u32), u32>,
    pub from_kafka_only: u32,
    pub conflicts: u32,
    pub highest_seq: u32,
}

pub fn rebuild_winners(rows: &[(String, u32, u32)], messages: &[crate::message::IssuedCoupon]) -> RebuiltWinners {
    let mut rebuilt = RebuiltWinners::default();
    let mut seqs = std::collections::HashSet::new();
    for (user, slot, seq) in rows {
        rebuilt.winners.insert((user.clone(), *slot), *seq);
        seqs.insert(*seq);
        rebuilt.highest_seq = rebuilt.highest_seq.max(*seq);
    }
    for coupon in messages {
        // Every seq in Kafka was handed out, whatever became of it: never hand it out again.
        rebuilt.highest_seq = rebuilt.highest_seq.max(coupon.seq);
        let slot = (coupon.user.clone(), coupon.slot);
        match rebuilt.winners.get(&slot) {
            Some(seq) if *seq == coupon.seq => {} // the same coupon (stored, or published twice)
            Some(_) => rebuilt.conflicts += 1,
            None if seqs.contains(&coupon.seq) => rebuilt.conflicts += 1,
            None => {
                rebuilt.winners.insert(slot, coupon.seq);
                seqs.insert(coupon.seq);
                rebuilt.from_kafka_only += 1;
            }
        }
    }
    rebuilt
}

/// Rebuilds a round's Redis state after Redis lost it (a flush, a restart without
/// persistence, a failover to a stale replica), from what MySQL and Kafka hold: the
/// settings from the MySQL stock row, the winners from the coupon rows and the coupons
/// still in the topic, the seq counter above every seq found, `remaining` = stock −
/// winners. Every recovered winner is written as confirmed (it is in Kafka or MySQL, so
/// it can no longer be rolled back). The meta hash is written last, so issuers see the
/// round again only once it is whole; they resume on their own.
///
/// Refuses a round whose Redis state is intact: while a round admits, rewriting its
/// keys from a snapshot of Kafka and MySQL would forget the admissions in between.
#[allow(clippy::too_many_arguments)]
pub async fn recover_round(
    redis: &mut RedisConn,
    pool: &MySqlPool,
    kafka: &crate::kafka::KafkaTarget,
    topic: &str,
    round: &RoundId,
    strategy: Strategy,
    deadline: std::time::Instant,
) -> Result<Recovered, RecoverError> {
    let row = db::round_row(pool, round).await?.ok_or_else(|| RecoverError::NotPrewarmed(round.to_string()))?;
    // The stock row keeps the round's buckets: the recovery of a round whose Redis keys
    // are all gone still knows it had buckets.
    if row.buckets > 1 {
        return Err(RecoverError::Bucketed { round: round.to_string(), buckets: row.buckets });
    }
    let rows = db::round_coupons(pool, round).await?;
    let messages = if strategy.persists_through_kafka() {
        let (kafka, topic, wanted) = (kafka.clone(), topic.to_owned(), round.clone());
        tokio::task::spawn_blocking(move || crate::kafka::read_round_coupons(&kafka, &topic, &wanted, deadline))
            .await
            .map_err(|_| rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::Fail))??
    } else {
        Vec::new()
    };
    let rebuilt = rebuild_winners(&rows, &messages);
    let keys = RoundKeys::new(round);
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    // Where the strategy keeps its counts: Redis' winners, or MySQL's stock row.
    let issued = if strategy.counts_in_redis() { count(rebuilt.winners.len()) } else { row.issued };
    let seq = rebuilt.highest_seq.max(issued);
    if let Some(meta) = round_meta(redis, &keys).await? {
        let winners: u64 = redis.hlen(&keys.winners).await?;
        if meta.seq >= seq && (!strategy.counts_in_redis() || winners >= rebuilt.winners.len() as u64) {
            return Err(RecoverError::Intact(round.to_string()));
        }
    }
    meta::delete_round_keys(redis, &keys).await?;
    if strategy.counts_in_redis() {
        let winners: Vec<(String, u32)> =
            rebuilt.winners.iter().map(|((user, slot), seq)| (winner_field(user, *slot), *seq)).collect();
        let users: Vec<&str> = rebuilt.winners.keys().map(|(user, _)| user.as_str()).collect();
        for (chunk, users) in winners.chunks(1_000).zip(users.chunks(1_000)) {
            let _: () = redis.hset_multiple(&keys.winners, chunk).await?;
            let confirmed: Vec<(u32, &str)> = chunk.iter().zip(users).map(|((_, seq), user)| (*seq, *user)).collect();
            let _: () = redis.hset_multiple(&keys.confirmed, &confirmed).await?;
        }
    }
    let remaining = row.stock.saturating_sub(issued);
    let recovered = RoundMeta {
        stock: row.stock,
        remaining,
        seq,
        per_user: row.per_user,
        start_ms: row.start_ms,
        end_ms: (row.end_ms > 0).then_some(row.end_ms),
        paused: false,
        buckets: 1,
    };
    meta::write_meta(redis, &keys, &recovered, strategy).await?;
    meta::point_at(redis, round, strategy).await?;
    Ok(Recovered {
        winners: count(rebuilt.winners.len()),
        from_kafka_only: rebuilt.from_kafka_only,
        conflicts: rebuilt.conflicts,
        seq,
        remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;
    use crate::message::IssuedCoupon;

    fn coupon(user: &str, slot: u32, seq: u32) -> IssuedCoupon {
        let round = EventId::new("shop", "sale").map(|e| e.round(1)).expect("valid");
        IssuedCoupon::new(&round, user, seq, slot, 0)
    }

    fn row(user: &str, slot: u32, seq: u32) -> (String, u32, u32) {
        (user.to_owned(), slot, seq)
    }

    #[test]
    fn rows_and_messages_make_the_winners_and_the_highest_seq() {
        let rows = [row("ann", 1, 1), row("bo", 1, 2)];
        // bo's coupon again (re-published), cy's only in Kafka, seq 7 the highest handed out.
        let messages = [coupon("bo", 1, 2), coupon("cy", 1, 7), coupon("ann", 2, 3)];
        let rebuilt = rebuild_winners(&rows, &messages);
        assert_eq!(rebuilt.winners.len(), 4);
        assert_eq!(rebuilt.winners.get(&("cy".to_owned(), 1)), Some(&7));
        assert_eq!((rebuilt.from_kafka_only, rebuilt.conflicts, rebuilt.highest_seq), (2, 0, 7));
    }

    #[test]
    fn a_row_wins_over_a_message_that_contradicts_it() {
        let rows = [row("ann", 1, 1), row("bo", 1, 2)];
        // ann's slot under another seq, and seq 2 for someone else: both conflicts, not winners.
        let messages = [coupon("ann", 1, 5), coupon("dee", 1, 2)];
        let rebuilt = rebuild_winners(&rows, &messages);
        assert_eq!(rebuilt.winners.len(), 2);
        assert_eq!(rebuilt.winners.get(&("ann".to_owned(), 1)), Some(&1));
        assert_eq!((rebuilt.from_kafka_only, rebuilt.conflicts), (0, 2));
        assert_eq!(rebuilt.highest_seq, 5, "seq 5 was handed out: never again");
    }

    #[test]
    fn user_ids_are_kept_byte_for_byte() {
        let messages = [coupon("alice", 1, 1), coupon("alice ", 1, 2), coupon("한국 사용자", 1, 3)];
        assert_eq!(rebuild_winners(&[], &messages).winners.len(), 3);
    }
}
