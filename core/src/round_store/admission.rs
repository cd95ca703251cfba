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

use redis::Script;
use std::sync::LazyLock;

use crate::redis_conn::RedisConn;
use crate::round_store::keys::{RoundKeys, SOLD_OUT_CHANNEL, winner_field};

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

/// The admission script. It decides for a batch of users at once (the issuer gathers
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
    let of_the_round = match reply.first().map(String::as_str) {
        Some("DECIDED") => None,
        Some("NOT_STARTED") => number(1).map(|starts_at_ms| Admission::NotStarted { starts_at_ms }),
        Some("ENDED") => Some(Admission::Ended),
        Some("UNKNOWN") => Some(Admission::UnknownRound),
        Some("REGRESSED") => number(1).map(|seq| Admission::Regressed { seq_in_redis: to_u32(seq) }),
        _ => return Err(ScriptError::UnexpectedReply(reply)),
    };
    if let Some(outcome) = of_the_round {
        return Ok(vec![outcome; users]);
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

static CONFIRM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, winners, confirmed = KEYS[1], KEYS[2], KEYS[3]
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
  end
  table.insert(out, ok)
end
return out
"#,
    )
});

/// Confirms admissions of one round before their rows are inserted. Returns, for each
/// `(user, slot, seq)`, whether it stands (`true`) or was rolled back (`false`: skip
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
    invocation.key(&keys.winners).key(&keys.confirmed);
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
