//! A round's settings and counters (the `meta` hash) and the event's pointer to its
//! current round (a hash with `round` and `strategy`). The field names live here and in
//! the Lua scripts of this folder, nowhere else.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

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
}

/// The round's meta, or `None` when its keys are not in Redis. A field that is there but
/// not a number is an error (redis' own conversion), never a default.
pub async fn round_meta(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<Option<RoundMeta>> {
    type Fields = (Option<u32>, Option<i64>, Option<u32>, Option<u32>, Option<i64>, Option<i64>, Option<u8>);
    let (stock, remaining, seq, per_user, start_ms, end_ms, paused): Fields = redis::cmd("HMGET")
        .arg(&keys.meta)
        .arg(&[
            field::STOCK,
            field::REMAINING,
            field::SEQ,
            field::PER_USER,
            field::START_MS,
            field::END_MS,
            field::PAUSED,
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
        }),
        _ => None,
    })
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

/// Creates the round's meta from `spec`, or updates an existing one in one atomic step
/// (a concurrent admission cannot slip between reading what was issued and writing the
/// new `remaining`).
pub async fn write_settings(
    redis: &mut RedisConn,
    keys: &RoundKeys,
    spec: &RoundSpec,
) -> redis::RedisResult<SettingsWritten> {
    let (state, value): (i64, i64) = WRITE_SETTINGS
        .key(&keys.meta)
        .arg(spec.stock)
        .arg(spec.per_user)
        .arg(spec.start_ms)
        .arg(spec.end_ms.unwrap_or(0))
        .arg(spec.strategy.as_str())
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

/// Removes the event's pointer if it names `round`, then every key of the round.
pub async fn remove_keys(redis: &mut RedisConn, round: &RoundId) -> redis::RedisResult<()> {
    if let Some((current, _)) = current_round(redis, &round.event).await?
        && current == *round
    {
        let _: () = redis.del(current_round_key(&round.event)).await?;
    }
    delete_round_keys(redis, &RoundKeys::new(round)).await
}

/// Deletes every key of a round. One DEL per key: in a cluster a multi-key DEL must stay
/// in one slot, which these do, but separate calls keep this independent of that detail.
pub async fn delete_round_keys(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<()> {
    for key in keys.all() {
        let _: () = redis.del(key).await?;
    }
    Ok(())
}

/// A reply this version does not understand, as a Redis type error.
pub(crate) fn unexpected(what: &'static str, reply: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what, reply))
}
