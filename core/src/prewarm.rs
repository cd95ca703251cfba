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
}

pub async fn round_meta(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<Option<RoundMeta>> {
    type Fields = (Option<u32>, Option<i64>, Option<u32>, Option<u32>, Option<i64>, Option<i64>);
    let (stock, remaining, seq, per_user, start_ms, end_ms): Fields = redis::cmd("HMGET")
        .arg(&keys.meta)
        .arg(&["stock", "remaining", "seq", "per_user", "start_ms", "end_ms"])
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
        }),
        _ => None,
    })
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
