//! The `queue` strategy's part of the contract: a sorted set of waiting users scored by
//! arrival ticket, a hash of decided users (user → [`QueueResult`]), and the lease that
//! picks the one scheduler per round.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::admission::{Admission, ScriptError};
use super::keys::RoundKeys;
use crate::redis_conn::RedisConn;

/// What the scheduler decided for a user, as stored in the results hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueResult {
    /// Admitted with this seq (`I:<seq>`).
    Issued { seq: u32 },
    /// Turned away: the round sold out first (`S`).
    SoldOut,
    /// Turned away: the round ended first (`E`).
    Ended,
}

impl QueueResult {
    pub fn encode(self) -> String {
        match self {
            Self::Issued { seq } => format!("I:{seq}"),
            Self::SoldOut => "S".to_owned(),
            Self::Ended => "E".to_owned(),
        }
    }

    /// Strict: anything but the three encodings is `None`.
    pub fn decode(stored: &str) -> Option<Self> {
        match stored {
            "S" => Some(Self::SoldOut),
            "E" => Some(Self::Ended),
            _ => stored.strip_prefix("I:").and_then(|seq| seq.parse().ok()).map(|seq| Self::Issued { seq }),
        }
    }

    /// The answer a user with this result gets.
    pub fn admission(self) -> Admission {
        match self {
            Self::Issued { seq } => Admission::AlreadyIssued { seq },
            Self::SoldOut => Admission::SoldOut,
            Self::Ended => Admission::Ended,
        }
    }
}

/// Where a user stands in a queue round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Waiting, at this 1-based position.
    Queued {
        position: u64,
    },
    Decided(QueueResult),
}

/// What a press in a queue round ends as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue (now or already), or decided.
    Standing(Standing),
    /// Refused before queueing: not started, ended, sold out, or the round is unknown.
    Refused(Admission),
}

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, queue, ticket, results = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user = ARGV[1]
local m = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'remaining')
if not m[1] then return {'UNKNOWN'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(m[1]) then return {'NOT_STARTED', m[1]} end
local ends = tonumber(m[2])
if ends > 0 and now >= ends then return {'ENDED'} end
local result = redis.call('HGET', results, user)
if result then return {'RESULT', result} end
local rank = redis.call('ZRANK', queue, user)
if rank then return {'QUEUED', tostring(rank + 1)} end
if tonumber(m[3]) <= 0 then return {'SOLD_OUT'} end
redis.call('ZADD', queue, redis.call('INCR', ticket), user)
return {'QUEUED', tostring(redis.call('ZRANK', queue, user) + 1)}
"#,
    )
});

/// Joins the queue behind the users who pressed earlier, or reports where the user
/// already stands; the start/end gate runs on Redis' clock as in the admission script.
pub async fn enqueue(redis: &mut RedisConn, keys: &RoundKeys, user: &str) -> Result<Enqueued, ScriptError> {
    let reply: Vec<String> = ENQUEUE
        .key(&keys.meta)
        .key(&keys.queue)
        .key(&keys.queue_ticket)
        .key(&keys.queue_results)
        .arg(user)
        .invoke_async(redis)
        .await?;
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok());
    let parsed = match reply.first().map(String::as_str) {
        Some("QUEUED" | "RESULT") => parse_standing(&reply).map(Enqueued::Standing),
        Some("NOT_STARTED") => number(1).map(|starts_at_ms| Enqueued::Refused(Admission::NotStarted { starts_at_ms })),
        Some("ENDED") => Some(Enqueued::Refused(Admission::Ended)),
        Some("SOLD_OUT") => Some(Enqueued::Refused(Admission::SoldOut)),
        Some("UNKNOWN") => Some(Enqueued::Refused(Admission::UnknownRound)),
        _ => None,
    };
    parsed.ok_or(ScriptError::UnexpectedReply(reply))
}

static STANDING: LazyLock<Script> = LazyLock::new(|| {
    // One script, so a user moving from the queue to the results is seen in one place.
    Script::new(
        r#"
local result = redis.call('HGET', KEYS[2], ARGV[1])
if result then return {'RESULT', result} end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if rank then return {'QUEUED', tostring(rank + 1)} end
return {'NONE'}
"#,
    )
});

/// A user's standing in a queue round, or `None` if they never pressed.
pub async fn standing(redis: &mut RedisConn, keys: &RoundKeys, user: &str) -> Result<Option<Standing>, ScriptError> {
    let reply: Vec<String> = STANDING.key(&keys.queue).key(&keys.queue_results).arg(user).invoke_async(redis).await?;
    if reply.first().map(String::as_str) == Some("NONE") && reply.len() == 1 {
        return Ok(None);
    }
    parse_standing(&reply).map(Some).ok_or(ScriptError::UnexpectedReply(reply))
}

fn parse_standing(reply: &[String]) -> Option<Standing> {
    match (reply.first().map(String::as_str), reply.get(1)) {
        (Some("RESULT"), Some(result)) => QueueResult::decode(result).map(Standing::Decided),
        (Some("QUEUED"), Some(position)) => position.parse().ok().map(|position| Standing::Queued { position }),
        _ => None,
    }
}

/// The first `count` waiting users, in arrival order.
pub async fn head(redis: &mut RedisConn, keys: &RoundKeys, count: usize) -> redis::RedisResult<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    redis.zrange(&keys.queue, 0, isize::try_from(count).unwrap_or(isize::MAX) - 1).await
}

/// Writes a user's result, then takes them off the queue: a poll always finds them in
/// one place or the other.
pub async fn decide(
    redis: &mut RedisConn,
    keys: &RoundKeys,
    user: &str,
    result: QueueResult,
) -> redis::RedisResult<()> {
    let _: () = redis.hset(&keys.queue_results, user, result.encode()).await?;
    let _: () = redis.zrem(&keys.queue, user).await?;
    Ok(())
}

static HOLD_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
         if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0",
    )
});

/// Takes or renews the round's scheduler lease for `lease_ms` under `token`; whether
/// this caller holds it now.
pub async fn hold_lease(
    redis: &mut RedisConn,
    keys: &RoundKeys,
    token: u64,
    lease_ms: u64,
) -> redis::RedisResult<bool> {
    let held: i64 = HOLD_LEASE.key(&keys.lock).arg(token).arg(lease_ms).invoke_async(redis).await?;
    Ok(held == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn results_round_trip_and_nothing_else_decodes() {
        for result in [QueueResult::Issued { seq: 42 }, QueueResult::SoldOut, QueueResult::Ended] {
            assert_eq!(QueueResult::decode(&result.encode()), Some(result));
        }
        for junk in ["", "I:", "I:x", "I:-1", "s", "X", "I:42 "] {
            assert_eq!(QueueResult::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn standings_parse_strictly() {
        assert_eq!(parse_standing(&reply(&["QUEUED", "3"])), Some(Standing::Queued { position: 3 }));
        assert_eq!(parse_standing(&reply(&["RESULT", "I:7"])), Some(Standing::Decided(QueueResult::Issued { seq: 7 })));
        assert_eq!(parse_standing(&reply(&["QUEUED", "x"])), None);
        assert_eq!(parse_standing(&reply(&["RESULT", "maybe"])), None);
        assert_eq!(parse_standing(&reply(&["QUEUED"])), None);
    }
}
