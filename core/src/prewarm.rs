//! A round's settings in Redis and MySQL: written before the round opens (pre-warm),
//! read by the issuers, removed after the round is done. The operator and the
//! `couponrush-issuer prewarm` admin command call the same functions.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};
use sqlx::MySqlPool;

use crate::db;
use crate::event::{EventId, RoundId, RoundSpec, Strategy};
use crate::keys::{RoundKeys, current_round_key};
use crate::redis_conn::RedisConn;

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

static PREWARM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta = KEYS[1]
local stock = tonumber(ARGV[1])
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'stock', stock, 'remaining', stock, 'seq', 0, 'per_user', ARGV[2],
    'start_ms', ARGV[3], 'end_ms', ARGV[4], 'strategy', ARGV[5])
  return {1, stock}
end
local issued = tonumber(redis.call('HGET', meta, 'stock')) - tonumber(redis.call('HGET', meta, 'remaining'))
if stock < issued then return {-1, issued} end
redis.call('HSET', meta, 'stock', stock, 'remaining', stock - issued, 'per_user', ARGV[2],
  'start_ms', ARGV[3], 'end_ms', ARGV[4], 'strategy', ARGV[5])
return {0, stock - issued}
"#,
    )
});

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
    if let Some(row) = db::round_row(pool, round).await?
        && row.issued > spec.stock
    {
        return Err(PrewarmError::StockBelowIssued { requested: spec.stock, issued: row.issued });
    }
    let keys = RoundKeys::new(round);
    // Keys gone but rows present: the round was torn down (or Redis lost it). Writing
    // fresh keys would hand out its seqs again, and MySQL would drop those coupons as
    // duplicates; refuse instead.
    let exists: bool = redis.exists(&keys.meta).await?;
    if !exists && db::count_coupons(pool, round).await? > 0 {
        return Err(PrewarmError::RoundAlreadyRan(round.to_string()));
    }
    // The stock row is written after the keys, so a row without keys means the keys
    // were lost. For kafka-async, coupons may still be on their way through Kafka with
    // seqs that fresh keys would hand out again; the synchronous strategies and the
    // queue decide in MySQL, which still holds the truth.
    if !exists && spec.strategy == Strategy::KafkaAsync && db::round_row(pool, round).await?.is_some() {
        return Err(PrewarmError::RedisLostRound(round.to_string()));
    }
    let (state, value): (i64, i64) = PREWARM
        .key(&keys.meta)
        .arg(spec.stock)
        .arg(spec.per_user)
        .arg(spec.start_ms)
        .arg(spec.end_ms.unwrap_or(0))
        .arg(spec.strategy.as_str())
        .invoke_async(redis)
        .await?;
    let value = u32::try_from(value.max(0)).unwrap_or(0);
    if state < 0 {
        return Err(PrewarmError::StockBelowIssued { requested: spec.stock, issued: value });
    }
    db::upsert_round(pool, round, spec).await?;
    let _: () = redis
        .hset_multiple(
            current_round_key(&round.event),
            &[("round", round.round.to_string()), ("strategy", spec.strategy.as_str().to_owned())],
        )
        .await?;
    Ok(Prewarmed { created: state == 1, remaining: value })
}

/// The event's current round and its strategy, if the event was pre-warmed.
pub async fn current_round(redis: &mut RedisConn, event: &EventId) -> redis::RedisResult<Option<(RoundId, Strategy)>> {
    let (round, strategy): (Option<u32>, Option<String>) =
        redis::cmd("HMGET").arg(current_round_key(event)).arg("round").arg("strategy").query_async(redis).await?;
    Ok(match (round, strategy.and_then(|s| s.parse().ok())) {
        (Some(round), Some(strategy)) => Some((event.round(round), strategy)),
        _ => None,
    })
}

/// A round's settings and counters as Redis holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundMeta {
    pub stock: u32,
    pub remaining: u32,
    /// Seqs handed out so far (admissions, including any later rolled back).
    pub seq: u32,
    pub per_user: u32,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// Admissions stopped by the event's owner (`spec.paused`); see [`set_paused`].
    pub paused: bool,
}

pub async fn round_meta(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<Option<RoundMeta>> {
    type Fields = (Option<u32>, Option<i64>, Option<u32>, Option<u32>, Option<i64>, Option<i64>, Option<u8>);
    let (stock, remaining, seq, per_user, start_ms, end_ms, paused): Fields = redis::cmd("HMGET")
        .arg(&keys.meta)
        .arg(&["stock", "remaining", "seq", "per_user", "start_ms", "end_ms", "paused"])
        .query_async(redis)
        .await?;
    Ok(match (stock, remaining, seq, per_user, start_ms, end_ms) {
        (Some(stock), Some(remaining), Some(seq), Some(per_user), Some(start_ms), Some(end_ms)) => Some(RoundMeta {
            stock,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            seq,
            per_user,
            start_ms,
            end_ms: (end_ms > 0).then_some(end_ms),
            paused: paused.is_some_and(|flag| flag != 0),
        }),
        _ => None,
    })
}

static SET_PAUSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
"#,
    )
});

/// Stops (or resumes) admissions to a pre-warmed round: issuers read the flag with the
/// round's meta (every half second) and answer `503 PAUSED` while it is set. Only an
/// existing round is flagged (a flag alone would look like a round to nobody, but keys
/// must only ever be created whole, by [`prewarm`]). Returns whether the round exists.
pub async fn set_paused(redis: &mut RedisConn, round: &RoundId, paused: bool) -> redis::RedisResult<bool> {
    let keys = RoundKeys::new(round);
    let found: i64 = SET_PAUSED.key(&keys.meta).arg(u8::from(paused)).invoke_async(redis).await?;
    Ok(found == 1)
}

/// Removes the round's Redis keys, the event's pointer if it names this round, and the
/// MySQL stock row. Coupon rows stay: they are the record. The stock row goes first: a
/// stock row without keys reads as "Redis lost this round" to [`prewarm`].
pub async fn remove_round(redis: &mut RedisConn, pool: &MySqlPool, round: &RoundId) -> Result<(), PrewarmError> {
    db::delete_round(pool, round).await?;
    if let Some((current, _)) = current_round(redis, &round.event).await?
        && current == *round
    {
        let _: () = redis.del(current_round_key(&round.event)).await?;
    }
    // One DEL per key: in a cluster a multi-key DEL must stay in one slot, which these do,
    // but separate calls keep this independent of that detail.
    for key in RoundKeys::new(round).all() {
        let _: () = redis.del(key).await?;
    }
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
    for key in keys.all() {
        let _: () = redis.del(key).await?;
    }
    if strategy.counts_in_redis() {
        let winners: Vec<(String, u32)> =
            rebuilt.winners.iter().map(|((user, slot), seq)| (crate::keys::winner_field(user, *slot), *seq)).collect();
        for chunk in winners.chunks(1_000) {
            let _: () = redis.hset_multiple(&keys.winners, chunk).await?;
            let confirmed: Vec<(u32, &str)> = chunk.iter().map(|(field, seq)| (*seq, field.as_str())).collect();
            let confirmed: Vec<(u32, &str)> =
                confirmed.into_iter().map(|(seq, field)| (seq, crate::keys::parse_winner_field(field).0)).collect();
            let _: () = redis.hset_multiple(&keys.confirmed, &confirmed).await?;
        }
    }
    let remaining = row.stock.saturating_sub(issued);
    let meta: [(&str, String); 7] = [
        ("stock", row.stock.to_string()),
        ("remaining", remaining.to_string()),
        ("seq", seq.to_string()),
        ("per_user", row.per_user.to_string()),
        ("start_ms", row.start_ms.to_string()),
        ("end_ms", row.end_ms.to_string()),
        ("strategy", strategy.as_str().to_owned()),
    ];
    let _: () = redis.hset_multiple(&keys.meta, &meta).await?;
    let _: () = redis
        .hset_multiple(
            current_round_key(&round.event),
            &[("round", round.round.to_string()), ("strategy", strategy.as_str().to_owned())],
        )
        .await?;
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
