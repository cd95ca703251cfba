//! The Lua scripts that make admission atomic, and their typed outcomes.
//!
//! Three scripts share one arbitration rule, so that every admitted coupon ends up as
//! exactly one MySQL row whatever fails in between:
//!
//! - [`admit`] (issuer): start/end gate against Redis `TIME`, the winners lookup (a
//!   retry gets its seq back), the stock check and decrement, the never-decremented seq
//!   counter and, on the last coupon, the sold-out publish — one round trip, for one
//!   user or a batch of them ([`admit_many_above`]).
//! - [`roll_back`] (issuer, after Kafka definitely refused the message): undoes an
//!   admission unless the consumer already confirmed it.
//! - [`confirm`] (consumer, before inserting rows): marks admissions as persisted-to-be,
//!   and tells which messages belong to admissions that were rolled back.
//!
//! Whichever of `roll_back` and `confirm` runs first for a seq wins; Redis runs scripts
//! one at a time, so there is no third outcome.
//!
//! A round split into stock buckets ([`super::buckets`]) adds the spill path, for a user
//! whose home bucket is empty (the issuer's `kafka_async` strategy runs it):
//! [`admit_home`] records a spill reservation in the home bucket instead of answering
//! SOLD_OUT: user → the request's *stamp*, `ms:token` (Redis `TIME` of the reservation and
//! a token of the request); [`take_from_donor`] takes a coupon in another bucket,
//! idempotently per user (the bucket's `spilled` hash, user → `seq:stamp`), a later
//! reservation's request taking over an earlier one's take but never the reverse;
//! [`confirm_spill`] makes it the user's coupon in the home bucket's winners, only if the
//! reservation is still this request's; [`release_spill`], [`unconfirm_spill`] and
//! [`give_back`] undo the steps. The home bucket's winners stay the one-per-user authority; [`confirm`] accepts a
//! seq recorded in its bucket's winners or `spilled` hash, so the roll-back-or-confirm
//! rule holds per bucket.

use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

use crate::redis_conn::RedisConn;
use crate::round_store::buckets::SEQ_OF_LUA;
use crate::round_store::keys::{RoundKeys, SOLD_OUT_CHANNEL, winner_field};

/// How long a spill reservation blocks its user's other requests (they get PENDING): a
/// request that held it longer (an issuer that died mid-way, a Redis that stalled) is
/// taken over by the user's next request. The request that lost it finds out at its
/// confirm and undoes its own take, so this only bounds how long a crash blocks a user.
pub const SPILL_RESERVATION_TTL: Duration = Duration::from_secs(10);

/// Outcome of one admission attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Issued {
        seq: u32,
        /// Which of the user's `per_user` coupons this is (1-based).
        slot: u32,
        remaining: u32,
        /// Redis server time of the admission.
        at_ms: i64,
    },
    /// The user already holds `per_user` coupons; `seq` is the latest.
    AlreadyIssued {
        seq: u32,
    },
    SoldOut,
    NotStarted {
        starts_at_ms: i64,
    },
    Ended,
    /// The round's keys are not in Redis (never pre-warmed, or cleaned up).
    UnknownRound,
    /// Redis holds the round with a seq counter below one this caller already saw: its
    /// data went back in time (a restart that lost writes, a failover to a lagging
    /// replica). Admitting would hand out seqs a second time, so nothing was admitted.
    Regressed {
        seq_in_redis: u32,
    },
}

/// Whether a failed Redis call may still have run on the server. Only a refused
/// connection or an error reply from Redis itself (`LOADING`, `BUSY`, `READONLY`, a
/// script error: the command was not executed, or our scripts failed before writing)
/// proves it did not; a timeout or a dropped connection leaves it unknown.
pub fn may_have_run(error: &redis::RedisError) -> bool {
    !(error.is_connection_refusal() || matches!(error.kind(), redis::ErrorKind::Server(_)))
}

/// Clone: one failed batch call is every batched caller's error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    #[error("script answered {0:?}, which this version does not understand")]
    UnexpectedReply(Vec<String>),
}

/// The admission script of a round of one bucket (every round but those split into stock
/// buckets, which admit with [`ADMIT_HOME`]). It decides for a batch of users at once (the issuer gathers
/// the admissions of one round that arrive while its earlier calls are in flight): the
/// gate, the meta read and the meta write are paid once per batch, and each user costs
/// one winners lookup and one winners write. Users are decided in the order given, as if
/// each had come alone; a user named twice gets ALREADY_ISSUED the second time (with
/// one coupon per user). The counters are carried in locals and written once: Redis runs
/// the script alone, so nothing can change them in between.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, winners = KEYS[1], KEYS[2]
local channel, label, floor = ARGV[1], ARGV[2], tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'remaining', 'per_user', 'seq')
if not m[1] then return {'UNKNOWN'} end
local seq_before = tonumber(m[5])
if seq_before < floor then return {'REGRESSED', m[5]} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(m[1]) then return {'NOT_STARTED', m[1]} end
local ends = tonumber(m[2])
if ends > 0 and now >= ends then return {'ENDED'} end
local remaining, per_user, seq = tonumber(m[3]), tonumber(m[4]), seq_before
local out = {'DECIDED', tostring(now)}
for i = 4, #ARGV do
  local user = ARGV[i]
  local free, free_field, last = nil, nil, nil
  for k = 1, per_user do
    local field = user
    if k > 1 then field = user .. '\31' .. k end
    local s = redis.call('HGET', winners, field)
    if s then last = s elseif not free then free, free_field = k, field end
  end
  if not free then
    table.insert(out, 'ALREADY_ISSUED'); table.insert(out, last)
    table.insert(out, '0'); table.insert(out, '0')
  elseif remaining <= 0 then
    table.insert(out, 'SOLD_OUT'); table.insert(out, '0')
    table.insert(out, '0'); table.insert(out, '0')
  else
    remaining = remaining - 1
    seq = seq + 1
    redis.call('HSET', winners, free_field, seq)
    table.insert(out, 'ISSUED'); table.insert(out, tostring(seq))
    table.insert(out, tostring(free)); table.insert(out, tostring(remaining))
  end
end
if seq ~= seq_before then
  redis.call('HSET', meta, 'remaining', remaining, 'seq', seq)
  if remaining == 0 then redis.call('PUBLISH', channel, label) end
end
return out
"#,
    )
});

/// The admission script in a bucketed round's home bucket, one user per run: as
/// [`ADMIT`] while the bucket has stock, and the spill reservation when it has none.
static ADMIT_HOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
{SEQ_OF_LUA}
local meta, winners, reservations = KEYS[1], KEYS[2], KEYS[3]
local user = ARGV[1]
local m = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'remaining', 'per_user', 'seq', 'buckets', 'bucket')
if not m[1] then return {{'UNKNOWN'}} end
if tonumber(m[5]) < tonumber(ARGV[4]) then return {{'REGRESSED', m[5]}} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(m[1]) then return {{'NOT_STARTED', m[1]}} end
local ends = tonumber(m[2])
if ends > 0 and now >= ends then return {{'ENDED'}} end
local free, last = nil, nil
for k = 1, tonumber(m[4]) do
  local field = user
  if k > 1 then field = user .. '\31' .. k end
  local s = redis.call('HGET', winners, field)
  if s then last = s elseif not free then free = k end
end
if not free then return {{'ALREADY_ISSUED', last}} end
local buckets, bucket = 1, 0
if m[6] then buckets, bucket = tonumber(m[6]), tonumber(m[7]) end
if buckets > 1 then
  -- This is the user's home bucket: a request of the user taking a coupon elsewhere
  -- must finish (or expire) before another may decide.
  local held = redis.call('HGET', reservations, user)
  local took_over = 0
  if held then
    local since = tonumber(string.match(held, '^(%d+):'))
    local ttl = tonumber(ARGV[6])
    if since and now - since < ttl then return {{'PENDING', tostring(since + ttl - now)}} end
    took_over = 1
  end
  if tonumber(m[3]) <= 0 then
    redis.call('HSET', reservations, user, tostring(now) .. ':' .. ARGV[5])
    return {{'SPILL', tostring(took_over), tostring(now)}}
  end
  if held then redis.call('HDEL', reservations, user) end
end
if tonumber(m[3]) <= 0 then return {{'SOLD_OUT'}} end
local remaining = redis.call('HINCRBY', meta, 'remaining', -1)
local seq = seq_of(bucket, buckets, redis.call('HINCRBY', meta, 'seq', 1))
local field = user
if free > 1 then field = user .. '\31' .. free end
redis.call('HSET', winners, field, seq)
if remaining == 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return {{'ISSUED', tostring(seq), tostring(free), tostring(remaining), tostring(now)}}
"#
    ))
});

/// What the home bucket decided ([`admit_home`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HomeAdmission {
    /// A final answer, as for a round of one bucket.
    Decided(Admission),
    /// The home bucket is empty; the user's spill reservation is now this request's, with
    /// the stamp `at_ms:token` ([`spill_stamp`]). `took_over`: it replaced an expired
    /// reservation, whose request may have taken a coupon in a bucket since sold out (try
    /// every bucket, not only those with stock, so that [`take_from_donor`] finds it).
    Spill { took_over: bool, at_ms: i64 },
    /// Another request of the user holds a live reservation.
    Pending { retry_after_ms: i64 },
}

/// Admits `user` to the round if the gate is open, stock is left and the user holds
/// fewer than `per_user` coupons. One round trip, atomic.
pub async fn admit(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    round_label: &str,
    user: &str,
) -> Result<Admission, ScriptError> {
    admit_above(conn, keys, round_label, user, 0).await
}

/// [`admit`] by a caller that has seen the round's seq counter at `seq_floor`: if Redis'
/// counter is below it, Redis lost writes and the script admits nothing
/// ([`Admission::Regressed`]). The counter never goes down otherwise (roll-backs keep it).
/// For a round of one bucket (a bucketed round admits with [`admit_home`]).
pub async fn admit_above(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    round_label: &str,
    user: &str,
    seq_floor: u32,
) -> Result<Admission, ScriptError> {
    let mut decided = admit_many_above(conn, keys, round_label, &[user], seq_floor).await?;
    Ok(decided.remove(0))
}

/// A spill request's stamp: its reservation's time (Redis `TIME`, from
/// [`HomeAdmission::Spill`]) and its token. The reservation holds exactly this; a donor
/// bucket keeps it with the coupon it gave, and compares the times to let a later
/// reservation's request take the coupon over, never an earlier one's.
pub fn spill_stamp(at_ms: i64, token: &str) -> String {
    format!("{at_ms}:{token}")
}

/// [`admit_above`] in the user's home bucket `keys` (`round_label`: that bucket's label,
/// the sold-out payload), for any number of buckets: a bucketed round whose home bucket
/// is empty answers [`HomeAdmission::Spill`] with a reservation carrying `token`.
pub async fn admit_home(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    round_label: &str,
    user: &str,
    seq_floor: u32,
    token: &str,
) -> Result<HomeAdmission, ScriptError> {
    let reply: Vec<String> = ADMIT_HOME
        .key(&keys.meta)
        .key(&keys.winners)
        .key(&keys.spill_reservations)
        .arg(user)
        .arg(SOLD_OUT_CHANNEL)
        .arg(round_label)
        .arg(seq_floor)
        .arg(token)
        .arg(SPILL_RESERVATION_TTL.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    parse_home_admission(reply)
}

fn parse_home_admission(reply: Vec<String>) -> Result<HomeAdmission, ScriptError> {
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    match reply.first().map(String::as_str) {
        Some("SPILL") => match (number(1), number(2)) {
            (Some(took_over), Some(at_ms)) => Ok(HomeAdmission::Spill { took_over: took_over == 1, at_ms }),
            _ => Err(ScriptError::UnexpectedReply(reply)),
        },
        Some("PENDING") => match number(1) {
            Some(retry_after_ms) => Ok(HomeAdmission::Pending { retry_after_ms }),
            None => Err(ScriptError::UnexpectedReply(reply)),
        },
        _ => parse_admission(reply).map(HomeAdmission::Decided),
    }
}

/// [`admit_above`] for several users in one atomic script run: one outcome per user, in
/// the order given, the same as if each had been admitted alone in that order. An
/// outcome of the round rather than of a user (not started, ended, unknown, regressed)
/// is every user's.
pub async fn admit_many_above(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    round_label: &str,
    users: &[&str],
    seq_floor: u32,
) -> Result<Vec<Admission>, ScriptError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = ADMIT.key(&keys.meta);
    invocation.key(&keys.winners).arg(SOLD_OUT_CHANNEL).arg(round_label).arg(seq_floor);
    for user in users {
        invocation.arg(*user);
    }
    let reply: Vec<String> = invocation.invoke_async(conn).await?;
    parse_admissions(reply, users.len())
}

/// Fields per user in a DECIDED reply: outcome, seq, slot, remaining.
const FIELDS_PER_USER: usize = 4;

fn parse_admissions(reply: Vec<String>, users: usize) -> Result<Vec<Admission>, ScriptError> {
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    if reply.first().map(String::as_str) != Some("DECIDED") {
        return match outcome_of_the_round(&reply) {
            Some(outcome) => Ok(vec![outcome; users]),
            None => Err(ScriptError::UnexpectedReply(reply)),
        };
    }
    let per_user = reply.get(2..).unwrap_or_default();
    let decided = match number(1) {
        Some(at_ms) if per_user.len() == users * FIELDS_PER_USER => per_user
            .chunks(FIELDS_PER_USER)
            .map(|fields| {
                let number = |i: usize| fields[i].parse::<i64>().ok();
                match fields[0].as_str() {
                    "ISSUED" => match (number(1), number(2), number(3)) {
                        (Some(seq), Some(slot), Some(remaining)) => Some(Admission::Issued {
                            seq: to_u32(seq),
                            slot: to_u32(slot),
                            remaining: to_u32(remaining),
                            at_ms,
                        }),
                        _ => None,
                    },
                    "ALREADY_ISSUED" => number(1).map(|seq| Admission::AlreadyIssued { seq: to_u32(seq) }),
                    "SOLD_OUT" => Some(Admission::SoldOut),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    decided.ok_or(ScriptError::UnexpectedReply(reply))
}

/// The reply of [`ADMIT_HOME`] that decides (not a spill): one user's outcome.
fn parse_admission(reply: Vec<String>) -> Result<Admission, ScriptError> {
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    let outcome = match reply.first().map(String::as_str) {
        Some("ISSUED") => match (number(1), number(2), number(3), number(4)) {
            (Some(seq), Some(slot), Some(remaining), Some(at_ms)) => {
                Some(Admission::Issued { seq: to_u32(seq), slot: to_u32(slot), remaining: to_u32(remaining), at_ms })
            }
            _ => None,
        },
        Some("ALREADY_ISSUED") => number(1).map(|seq| Admission::AlreadyIssued { seq: to_u32(seq) }),
        Some("SOLD_OUT") => Some(Admission::SoldOut),
        _ => outcome_of_the_round(&reply),
    };
    outcome.ok_or(ScriptError::UnexpectedReply(reply))
}

/// The outcomes both admission scripts give for the round as a whole, before any user is
/// looked at: the gate, the round's keys, the seq floor.
fn outcome_of_the_round(reply: &[String]) -> Option<Admission> {
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    match reply.first().map(String::as_str) {
        Some("NOT_STARTED") => number(1).map(|starts_at_ms| Admission::NotStarted { starts_at_ms }),
        Some("ENDED") => Some(Admission::Ended),
        Some("UNKNOWN") => Some(Admission::UnknownRound),
        Some("REGRESSED") => number(1).map(|seq| Admission::Regressed { seq_in_redis: to_u32(seq) }),
        _ => None,
    }
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// The `(slot, seq)` of every coupon `user` holds in the round, lowest slot first (read
/// with the round's per-user limit; none if the round's keys are gone).
pub async fn held_coupons(conn: &mut RedisConn, keys: &RoundKeys, user: &str) -> redis::RedisResult<Vec<(u32, u32)>> {
    let per_user = super::meta::per_user(conn, keys).await?;
    let slots: Vec<u32> = (1..=per_user.unwrap_or(1).max(1)).collect();
    let fields: Vec<String> = slots.iter().map(|slot| winner_field(user, *slot)).collect();
    let held: Vec<Option<u32>> = redis::cmd("HMGET").arg(&keys.winners).arg(&fields).query_async(conn).await?;
    Ok(slots.into_iter().zip(held).filter_map(|(slot, seq)| seq.map(|seq| (slot, seq))).collect())
}

/// Outcome of [`roll_back`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollBack {
    /// The admission is undone and its coupon is back in stock.
    RolledBack,
    /// The consumer already confirmed it: the admission stands.
    AlreadyConfirmed,
    /// Nothing to undo (the admission is not in the winners hash).
    Absent,
}

static ROLL_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, winners, confirmed = KEYS[1], KEYS[2], KEYS[3]
local field, seq = ARGV[1], ARGV[2]
if redis.call('HEXISTS', confirmed, seq) == 1 then return 'CONFIRMED' end
if redis.call('HGET', winners, field) ~= seq then return 'ABSENT' end
redis.call('HDEL', winners, field)
redis.call('HINCRBY', meta, 'remaining', 1)
return 'ROLLED_BACK'
"#,
    )
});

/// Undoes the admission of `user`'s `slot` with `seq`, unless the consumer confirmed it
/// first. The seq counter is not decremented: a seq is never handed out twice.
pub async fn roll_back(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    user: &str,
    slot: u32,
    seq: u32,
) -> Result<RollBack, ScriptError> {
    let reply: String = ROLL_BACK
        .key(&keys.meta)
        .key(&keys.winners)
        .key(&keys.confirmed)
        .arg(winner_field(user, slot))
        .arg(seq)
        .invoke_async(conn)
        .await?;
    match reply.as_str() {
        "ROLLED_BACK" => Ok(RollBack::RolledBack),
        "CONFIRMED" => Ok(RollBack::AlreadyConfirmed),
        "ABSENT" => Ok(RollBack::Absent),
        _ => Err(ScriptError::UnexpectedReply(vec![reply])),
    }
}

/// What a bucket other than the user's home answered ([`take_from_donor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DonorTake {
    /// The bucket's coupon for the user: a new one, or the one an earlier request of the
    /// user took there (now carrying this request's stamp).
    Taken {
        seq: u32,
        remaining: u32,
        at_ms: i64,
    },
    /// The bucket gave the user a coupon under a later reservation than this request's:
    /// a newer request of the user owns the spill; this one must stop.
    Superseded,
    SoldOut,
    UnknownRound,
    /// The bucket's seq counter is below the caller's floor for it: Redis lost writes.
    Regressed {
        seq_in_redis: u32,
    },
}

static TAKE_FROM_DONOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
{SEQ_OF_LUA}
local meta, spilled = KEYS[1], KEYS[2]
local user, stamp = ARGV[1], ARGV[2]
local m = redis.call('HMGET', meta, 'remaining', 'seq', 'buckets', 'bucket')
if not m[1] then return {{'UNKNOWN'}} end
if tonumber(m[2]) < tonumber(ARGV[5]) then return {{'REGRESSED', m[2]}} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local given = redis.call('HGET', spilled, user)
if given then
  -- Only a request of a later reservation may take the coupon over: an earlier one that
  -- resumes late must not re-stamp (and then give back) its successor's coupon.
  local seq, since = string.match(given, '^(%d+):(%d+):')
  if tonumber(string.match(stamp, '^(%d+):')) < tonumber(since) then return {{'SUPERSEDED'}} end
  redis.call('HSET', spilled, user, seq .. ':' .. stamp)
  return {{'TAKEN', seq, m[1], tostring(now)}}
end
if tonumber(m[1]) <= 0 then return {{'SOLD_OUT'}} end
local remaining = redis.call('HINCRBY', meta, 'remaining', -1)
local seq = seq_of(tonumber(m[4]), tonumber(m[3]), redis.call('HINCRBY', meta, 'seq', 1))
redis.call('HSET', spilled, user, tostring(seq) .. ':' .. stamp)
if remaining == 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return {{'TAKEN', tostring(seq), tostring(remaining), tostring(now)}}
"#
    ))
});

/// Takes a coupon for `user` in the bucket `keys` (not the user's home bucket), with the
/// request's `stamp` ([`spill_stamp`]); `bucket_label` is the bucket's sold-out payload
/// and `seq_floor` the caller's floor for this bucket's counter. Idempotent per user: a
/// bucket that already gave the user a coupon gives the same one again to a request of
/// the same or a later reservation (re-stamped, so that the request that took it first
/// can no longer give it back), and [`DonorTake::Superseded`] to one of an earlier.
pub async fn take_from_donor(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    bucket_label: &str,
    user: &str,
    stamp: &str,
    seq_floor: u32,
) -> Result<DonorTake, ScriptError> {
    let reply: Vec<String> = TAKE_FROM_DONOR
        .key(&keys.meta)
        .key(&keys.spilled)
        .arg(user)
        .arg(stamp)
        .arg(SOLD_OUT_CHANNEL)
        .arg(bucket_label)
        .arg(seq_floor)
        .invoke_async(conn)
        .await?;
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    let outcome = match reply.first().map(String::as_str) {
        Some("TAKEN") => match (number(1), number(2), number(3)) {
            (Some(seq), Some(remaining), Some(at_ms)) => {
                Some(DonorTake::Taken { seq: to_u32(seq), remaining: to_u32(remaining), at_ms })
            }
            _ => None,
        },
        Some("SOLD_OUT") => Some(DonorTake::SoldOut),
        Some("SUPERSEDED") => Some(DonorTake::Superseded),
        Some("UNKNOWN") => Some(DonorTake::UnknownRound),
        Some("REGRESSED") => number(1).map(|seq| DonorTake::Regressed { seq_in_redis: to_u32(seq) }),
        _ => None,
    };
    outcome.ok_or(ScriptError::UnexpectedReply(reply))
}

static CONFIRM_SPILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local winners, reservations = KEYS[1], KEYS[2]
local user, stamp, seq = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', reservations, user) ~= stamp then return 0 end
redis.call('HSET', winners, user, seq)
redis.call('HDEL', reservations, user)
return 1
"#,
    )
});

/// In the user's home bucket `home`: makes `seq` (taken in another bucket) the user's
/// coupon, only if the user's spill reservation is still `stamp`'s. `false`: another
/// request took the reservation over (or it is gone); this request must give its take
/// back ([`give_back`]) and publish nothing.
pub async fn confirm_spill(
    conn: &mut RedisConn,
    home: &RoundKeys,
    user: &str,
    stamp: &str,
    seq: u32,
) -> Result<bool, ScriptError> {
    let confirmed: i64 = CONFIRM_SPILL
        .key(&home.winners)
        .key(&home.spill_reservations)
        .arg(user)
        .arg(stamp)
        .arg(seq)
        .invoke_async(conn)
        .await?;
    Ok(confirmed == 1)
}

static RELEASE_SPILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// In the user's home bucket: drops the user's spill reservation if it is still
/// `stamp`'s (every other bucket was sold out, or the take was given back). Returns
/// whether it did.
pub async fn release_spill(
    conn: &mut RedisConn,
    home: &RoundKeys,
    user: &str,
    stamp: &str,
) -> Result<bool, ScriptError> {
    let released: i64 = RELEASE_SPILL.key(&home.spill_reservations).arg(user).arg(stamp).invoke_async(conn).await?;
    Ok(released == 1)
}

static UNCONFIRM_SPILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local winners, reservations = KEYS[1], KEYS[2]
local user, seq, stamp = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', winners, user) ~= seq then return 0 end
redis.call('HDEL', winners, user)
redis.call('HSET', reservations, user, stamp)
return 1
"#,
    )
});

/// The first step of rolling back a spilled coupon that Kafka refused, in the user's
/// home bucket: if the user's winner is `seq`, it becomes this request's reservation
/// (`stamp`) again: the user's other requests wait while the coupon is given back in its
/// bucket, then [`release_spill`], or [`confirm_spill`] again if the consumer had already
/// confirmed it. (The reservation keeps its first time, so it may expire sooner; a
/// request that takes it over then owns the coupon, and giving it back finds that.)
/// Returns whether the winner was `seq`.
pub async fn unconfirm_spill(
    conn: &mut RedisConn,
    home: &RoundKeys,
    user: &str,
    seq: u32,
    stamp: &str,
) -> Result<bool, ScriptError> {
    let done: i64 = UNCONFIRM_SPILL
        .key(&home.winners)
        .key(&home.spill_reservations)
        .arg(user)
        .arg(seq)
        .arg(stamp)
        .invoke_async(conn)
        .await?;
    Ok(done == 1)
}

static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, spilled, confirmed = KEYS[1], KEYS[2], KEYS[3]
local user, seq, stamp = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', confirmed, seq) == 1 then return 'CONFIRMED' end
if redis.call('HGET', spilled, user) ~= seq .. ':' .. stamp then return 'ABSENT' end
redis.call('HDEL', spilled, user)
redis.call('HINCRBY', meta, 'remaining', 1)
return 'ROLLED_BACK'
"#,
    )
});

/// Gives a coupon taken with [`take_from_donor`] back to its bucket `donor`: unless the
/// consumer already confirmed `seq`, and only while the take carries `stamp` (a request
/// of the user that took it over since owns it now: [`RollBack::Absent`]).
pub async fn give_back(
    conn: &mut RedisConn,
    donor: &RoundKeys,
    user: &str,
    seq: u32,
    stamp: &str,
) -> Result<RollBack, ScriptError> {
    let reply: String = GIVE_BACK
        .key(&donor.meta)
        .key(&donor.spilled)
        .key(&donor.confirmed)
        .arg(user)
        .arg(seq)
        .arg(stamp)
        .invoke_async(conn)
        .await?;
    match reply.as_str() {
        "ROLLED_BACK" => Ok(RollBack::RolledBack),
        "CONFIRMED" => Ok(RollBack::AlreadyConfirmed),
        "ABSENT" => Ok(RollBack::Absent),
        _ => Err(ScriptError::UnexpectedReply(vec![reply])),
    }
}

static CONFIRM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, winners, confirmed, spilled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local out = {}
-- A round whose keys are gone (cleaned up after it completed, or a Redis that lost its
-- data) cannot arbitrate: keep every message and let MySQL's unique keys decide.
local known = redis.call('EXISTS', meta) == 1
for i = 1, #ARGV, 2 do
  local field, seq = ARGV[i], ARGV[i + 1]
  local ok = 0
  if not known or redis.call('HEXISTS', confirmed, seq) == 1 then
    ok = 1
  elseif redis.call('HGET', winners, field) == seq then
    redis.call('HSET', confirmed, seq, field)
    ok = 1
  else
    -- A coupon this bucket gave to a user of another home bucket (one per user: the
    -- field is the user).
    local given = redis.call('HGET', spilled, field)
    if given and string.match(given, '^(%d+):') == seq then
      redis.call('HSET', confirmed, seq, field)
      ok = 1
    end
  end
  table.insert(out, ok)
end
return out
"#,
    )
});

/// Confirms admissions of one bucket of a round (the bucket that handed their seqs
/// out: [`super::buckets::bucket_of_seq`]) before their rows are inserted. Returns, for
/// each `(user, slot, seq)`, whether it stands (`true`) or was rolled back (`false`: skip
/// the row).
pub async fn confirm(
    conn: &mut RedisConn,
    keys: &RoundKeys,
    admissions: &[(&str, u32, u32)],
) -> Result<Vec<bool>, ScriptError> {
    if admissions.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = CONFIRM.key(&keys.meta);
    invocation.key(&keys.winners).key(&keys.confirmed).key(&keys.spilled);
    for (user, slot, seq) in admissions {
        invocation.arg(winner_field(user, *slot)).arg(*seq);
    }
    let reply: Vec<i64> = invocation.invoke_async(conn).await?;
    Ok(reply.into_iter().map(|ok| ok == 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_every_outcome() -> anyhow::Result<()> {
        let decided = reply(&[
            "DECIDED",
            "1700000000000", //
            "ISSUED",
            "7",
            "1",
            "993", //
            "ALREADY_ISSUED",
            "9",
            "0",
            "0", //
            "SOLD_OUT",
            "0",
            "0",
            "0",
        ]);
        assert_eq!(
            parse_admissions(decided, 3)?,
            vec![
                Admission::Issued { seq: 7, slot: 1, remaining: 993, at_ms: 1_700_000_000_000 },
                Admission::AlreadyIssued { seq: 9 },
                Admission::SoldOut,
            ]
        );
        let every = |parts: &[&str]| parse_admissions(reply(parts), 2);
        assert_eq!(every(&["NOT_STARTED", "42"])?, vec![Admission::NotStarted { starts_at_ms: 42 }; 2]);
        assert_eq!(every(&["ENDED"])?, vec![Admission::Ended; 2]);
        assert_eq!(every(&["UNKNOWN"])?, vec![Admission::UnknownRound; 2]);
        assert_eq!(every(&["REGRESSED", "3"])?, vec![Admission::Regressed { seq_in_redis: 3 }; 2]);
        Ok(())
    }

    #[test]
    fn only_a_refusal_or_an_error_reply_proves_a_call_did_not_run() {
        use std::io::{Error, ErrorKind};
        let io = |kind| redis::RedisError::from(Error::new(kind, "test"));
        assert!(may_have_run(&io(ErrorKind::TimedOut)));
        assert!(may_have_run(&io(ErrorKind::ConnectionReset)));
        assert!(may_have_run(&io(ErrorKind::UnexpectedEof)));
        assert!(!may_have_run(&io(ErrorKind::ConnectionRefused)));
        let loading =
            redis::RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading), "LOADING"));
        assert!(!may_have_run(&loading));
    }

    #[test]
    fn parses_the_spill_answers() -> anyhow::Result<()> {
        assert_eq!(
            parse_home_admission(reply(&["SPILL", "1", "1700000000000"]))?,
            HomeAdmission::Spill { took_over: true, at_ms: 1_700_000_000_000 }
        );
        assert_eq!(
            parse_home_admission(reply(&["PENDING", "2500"]))?,
            HomeAdmission::Pending { retry_after_ms: 2_500 }
        );
        assert_eq!(parse_home_admission(reply(&["SOLD_OUT"]))?, HomeAdmission::Decided(Admission::SoldOut));
        assert_eq!(
            parse_home_admission(reply(&["ISSUED", "7", "1", "993", "1700000000000"]))?,
            HomeAdmission::Decided(Admission::Issued { seq: 7, slot: 1, remaining: 993, at_ms: 1_700_000_000_000 })
        );
        assert_eq!(
            parse_home_admission(reply(&["REGRESSED", "3"]))?,
            HomeAdmission::Decided(Admission::Regressed { seq_in_redis: 3 })
        );
        assert!(parse_home_admission(reply(&["SPILL"])).is_err());
        Ok(())
    }

    #[test]
    fn rejects_replies_it_does_not_understand() {
        assert!(parse_admissions(reply(&["DECIDED", "1", "ISSUED", "x", "1", "1"]), 1).is_err());
        assert!(parse_admissions(reply(&["DECIDED", "1", "MAYBE", "1", "1", "1"]), 1).is_err());
        // One outcome too few or too many for the users asked about.
        assert!(parse_admissions(reply(&["DECIDED", "1", "SOLD_OUT", "0", "0", "0"]), 2).is_err());
        assert!(parse_admissions(reply(&["DECIDED", "1"]), 1).is_err());
        assert!(parse_admissions(reply(&["MAYBE"]), 1).is_err());
        assert!(parse_admissions(Vec::new(), 1).is_err());
    }
}
