//! A round's settings and counters (the `meta` hash) and the event's pointer to its
//! current round (a hash with `round` and `strategy`). The field names live here and in
//! the Lua scripts of this folder, nowhere else.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::buckets::{MAX_STOCK_BUCKETS, split_stock};
use super::keys::{RoundKeys, current_round_key};
use crate::event::{EventId, RoundId, RoundSpec, Strategy};
use crate::redis_conn::RedisConn;

/// The fields of a round's `meta` hash.
pub mod field {
    pub const STOCK: &str = "stock";
    /// Coupons left; only the admission script (and the `queue` scheduler) lowers it.
    pub const REMAINING: &str = "remaining";
    /// Seqs handed out so far; never decremented, so a seq is never handed out twice.
    pub const SEQ: &str = "seq";
    pub const PER_USER: &str = "per_user";
    pub const START_MS: &str = "start_ms";
    /// 0 = no end.
    pub const END_MS: &str = "end_ms";
    pub const STRATEGY: &str = "strategy";
    /// Present and non-zero while the event's owner stops admissions.
    pub const PAUSED: &str = "paused";
    /// The round's number of stock buckets, in every bucket's meta; absent = 1 (a round
    /// of one bucket is written exactly as before buckets existed).
    pub const BUCKETS: &str = "buckets";
    /// Which bucket this meta belongs to; absent = 0.
    pub const BUCKET: &str = "bucket";
}

/// The fields of an event's current-round pointer.
mod pointer {
    pub const ROUND: &str = "round";
    pub const STRATEGY: &str = "strategy";
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
    /// The round's stock buckets ([`super::buckets`]); 1 for a round that has none.
    pub buckets: u32,
}

/// The round's meta, or `None` when its keys are not in Redis. A field that is there but
/// not a number is an error (redis' own conversion), never a default.
pub async fn round_meta(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<Option<RoundMeta>> {
    type Fields =
        (Option<u32>, Option<i64>, Option<u32>, Option<u32>, Option<i64>, Option<i64>, Option<u8>, Option<u32>);
    let (stock, remaining, seq, per_user, start_ms, end_ms, paused, buckets): Fields = redis::cmd("HMGET")
        .arg(&keys.meta)
        .arg(&[
            field::STOCK,
            field::REMAINING,
            field::SEQ,
            field::PER_USER,
            field::START_MS,
            field::END_MS,
            field::PAUSED,
            field::BUCKETS,
        ])
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
            buckets: buckets.unwrap_or(1).max(1),
        }),
        _ => None,
    })
}

/// The number of stock buckets of `round` (from bucket 0's meta), or `None` when the
/// round's keys are not in Redis.
pub async fn round_buckets(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<Option<u32>> {
    let keys = RoundKeys::new(round);
    let (exists, buckets): (bool, Option<u32>) =
        redis::pipe().exists(&keys.meta).hget(&keys.meta, field::BUCKETS).query_async(redis).await?;
    Ok(exists.then(|| buckets.unwrap_or(1).clamp(1, MAX_STOCK_BUCKETS)))
}

/// Every bucket's meta, bucket 0 first (`None` where a bucket's keys are gone).
pub async fn bucket_metas(
    redis: &mut RedisConn,
    round: &RoundId,
    buckets: u32,
) -> redis::RedisResult<Vec<Option<RoundMeta>>> {
    let mut metas = Vec::with_capacity(buckets as usize);
    for bucket in 0..buckets {
        metas.push(round_meta(redis, &RoundKeys::bucket(round, bucket)).await?);
    }
    Ok(metas)
}

/// A round's settings and counters over all its buckets: stock, remaining and seq (the
/// admissions ever made) summed, the settings of bucket 0. `None` when bucket 0's keys
/// are gone; `missing` counts the other buckets whose keys are gone (their numbers are
/// not in the sums).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundTotals {
    pub meta: RoundMeta,
    pub missing: u32,
}

pub async fn round_totals(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<Option<RoundTotals>> {
    let Some(first) = round_meta(redis, &RoundKeys::new(round)).await? else {
        return Ok(None);
    };
    let mut totals = RoundTotals { meta: first.clone(), missing: 0 };
    for bucket in 1..first.buckets.min(MAX_STOCK_BUCKETS) {
        match round_meta(redis, &RoundKeys::bucket(round, bucket)).await? {
            Some(meta) => {
                totals.meta.stock = totals.meta.stock.saturating_add(meta.stock);
                totals.meta.remaining = totals.meta.remaining.saturating_add(meta.remaining);
                totals.meta.seq = totals.meta.seq.saturating_add(meta.seq);
            }
            None => totals.missing += 1,
        }
    }
    Ok(Some(totals))
}

/// The admitted coupons of a round, over all its buckets: each user's record is in its
/// home bucket's winners, so the union of the buckets' winners is every coupon once.
pub async fn all_winners(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<Vec<(String, u32)>> {
    let buckets = round_buckets(redis, round).await?.unwrap_or(1);
    let mut winners = Vec::new();
    for bucket in 0..buckets {
        let some: Vec<(String, u32)> = redis.hgetall(RoundKeys::bucket(round, bucket).winners).await?;
        winners.extend(some);
    }
    Ok(winners)
}

/// How many coupons a round's winners hold, over all its buckets (see [`all_winners`]).
pub async fn count_winners(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<u64> {
    let buckets = round_buckets(redis, round).await?.unwrap_or(1);
    let mut count = 0;
    for bucket in 0..buckets {
        let some: u64 = redis.hlen(RoundKeys::bucket(round, bucket).winners).await?;
        count += some;
    }
    Ok(count)
}

/// The round's per-user limit, or `None` when its keys are not in Redis.
pub async fn per_user(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<Option<u32>> {
    redis.hget(&keys.meta, field::PER_USER).await
}

/// What [`write_settings`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsWritten {
    /// The round's meta did not exist; it now holds the whole stock.
    Created { remaining: u32 },
    /// The meta existed: the settings changed, and raising the stock added the
    /// difference to what remains.
    Updated { remaining: u32 },
    /// Refused: the new stock is below the coupons already issued.
    StockBelowIssued { issued: u32 },
}

static WRITE_SETTINGS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta = KEYS[1]
local stock = tonumber(ARGV[1])
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'stock', stock, 'remaining', stock, 'seq', 0, 'per_user', ARGV[2],
    'start_ms', ARGV[3], 'end_ms', ARGV[4], 'strategy', ARGV[5])
  -- A round of one bucket is written as it was before buckets existed.
  if tonumber(ARGV[6]) > 1 then redis.call('HSET', meta, 'buckets', ARGV[6], 'bucket', ARGV[7]) end
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

/// Creates bucket `bucket`'s meta from `spec` (with its share of the stock), or updates
/// an existing one in one atomic step (a concurrent admission cannot slip between
/// reading what was issued and writing the new `remaining`).
pub async fn write_settings(
    redis: &mut RedisConn,
    round: &RoundId,
    bucket: u32,
    spec: &RoundSpec,
) -> redis::RedisResult<SettingsWritten> {
    let share = split_stock(spec.stock, spec.buckets).get(bucket as usize).copied().unwrap_or(0);
    let (state, value): (i64, i64) = WRITE_SETTINGS
        .key(RoundKeys::bucket(round, bucket).meta)
        .arg(share)
        .arg(spec.per_user)
        .arg(spec.start_ms)
        .arg(spec.end_ms.unwrap_or(0))
        .arg(spec.strategy.as_str())
        .arg(spec.buckets)
        .arg(bucket)
        .invoke_async(redis)
        .await?;
    let value = u32::try_from(value.max(0)).unwrap_or(0);
    match state {
        1 => Ok(SettingsWritten::Created { remaining: value }),
        0 => Ok(SettingsWritten::Updated { remaining: value }),
        -1 => Ok(SettingsWritten::StockBelowIssued { issued: value }),
        other => Err(unexpected("the settings script", other.to_string())),
    }
}

/// Writes a whole meta at once, as a recovery rebuilt it (the owner's pause flag is the
/// operator's to set again).
pub async fn write_meta(
    redis: &mut RedisConn,
    keys: &RoundKeys,
    meta: &RoundMeta,
    strategy: Strategy,
) -> redis::RedisResult<()> {
    let fields: [(&str, String); 7] = [
        (field::STOCK, meta.stock.to_string()),
        (field::REMAINING, meta.remaining.to_string()),
        (field::SEQ, meta.seq.to_string()),
        (field::PER_USER, meta.per_user.to_string()),
        (field::START_MS, meta.start_ms.to_string()),
        (field::END_MS, meta.end_ms.unwrap_or(0).to_string()),
        (field::STRATEGY, strategy.as_str().to_owned()),
    ];
    redis.hset_multiple(&keys.meta, &fields).await
}

/// Sets `remaining` to 0: the `queue` scheduler's "MySQL says sold out".
pub async fn mark_none_remaining(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<()> {
    redis.hset(&keys.meta, field::REMAINING, 0).await
}

/// Lowers `remaining` by one: the `queue` scheduler admitted a user in MySQL.
pub async fn take_one(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<()> {
    let _left: i64 = redis.hincr(&keys.meta, field::REMAINING, -1).await?;
    Ok(())
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
/// must only ever be created whole, by pre-warm). Returns whether the round exists.
pub async fn set_paused(redis: &mut RedisConn, round: &RoundId, paused: bool) -> redis::RedisResult<bool> {
    let keys = RoundKeys::new(round);
    let found: i64 = SET_PAUSED.key(&keys.meta).arg(u8::from(paused)).invoke_async(redis).await?;
    Ok(found == 1)
}

/// Points the event at `round`: issuers serve the round the pointer names.
pub async fn point_at(redis: &mut RedisConn, round: &RoundId, strategy: Strategy) -> redis::RedisResult<()> {
    redis
        .hset_multiple(
            current_round_key(&round.event),
            &[(pointer::ROUND, round.round.to_string()), (pointer::STRATEGY, strategy.as_str().to_owned())],
        )
        .await
}

/// The event's current round and its strategy, if the event was pre-warmed. A pointer
/// naming a strategy this version does not know is an error.
pub async fn current_round(redis: &mut RedisConn, event: &EventId) -> redis::RedisResult<Option<(RoundId, Strategy)>> {
    let (round, strategy): (Option<u32>, Option<String>) = redis::cmd("HMGET")
        .arg(current_round_key(event))
        .arg(pointer::ROUND)
        .arg(pointer::STRATEGY)
        .query_async(redis)
        .await?;
    match (round, strategy) {
        (Some(round), Some(strategy)) => match strategy.parse::<Strategy>() {
            Ok(strategy) => Ok(Some((event.round(round), strategy))),
            Err(_) => Err(unexpected("the current-round pointer's strategy", strategy)),
        },
        _ => Ok(None),
    }
}

/// Removes the event's pointer if it names `round`, then every key of every bucket of
/// the round; bucket 0 last, so that a removal cut short is found (and finished) by the
/// next one. With bucket 0 gone the number of buckets is unknown: every bucket a round
/// may have whose meta is still there is removed.
pub async fn remove_keys(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<()> {
    if let Some((current, _)) = current_round(redis, &round.event).await?
        && current == *round
    {
        let _: () = redis.del(current_round_key(&round.event)).await?;
    }
    let known = round_buckets(redis, round).await?;
    for bucket in (0..known.unwrap_or(MAX_STOCK_BUCKETS)).rev() {
        let keys = RoundKeys::bucket(round, bucket);
        if known.is_some() || redis.exists(&keys.meta).await? {
            delete_round_keys(redis, &keys).await?;
        }
    }
    Ok(())
}

/// Deletes every key of a bucket, its meta last (a bucket whose meta is gone has no
/// other keys left). One DEL per key: in a cluster a multi-key DEL must stay in one
/// slot, which these do, but separate calls keep this independent of that detail.
pub async fn delete_round_keys(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<()> {
    for key in keys.all().iter().rev() {
        let _: () = redis.del(*key).await?;
    }
    Ok(())
}

/// A reply this version does not understand, as a Redis type error.
pub(crate) fn unexpected(what: &'static str, reply: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what, reply))
}
