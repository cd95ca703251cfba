//! The `queue` strategy (docs/strategies.md#queue): a request joins a Redis sorted set
//! and gets its position (202); a scheduler admits up to the remaining stock per tick
//! through the MySQL transaction and records each user's result, which the user polls
//! with GET.
//! One issuer per round schedules at a time, chosen by a Redis lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use couponrush_core::admission::Admission;
use couponrush_core::db::{self, RowLock};
use couponrush_core::event::Strategy;
use couponrush_core::keys::SOLD_OUT_CHANNEL;
use couponrush_core::message::Attribution;
use couponrush_core::prewarm::round_meta;
use futures::StreamExt;
use rand::Rng;
use redis::{AsyncCommands, Script};
use tokio_util::sync::CancellationToken;

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;
use crate::strategies::Outcome;

const TICK: Duration = Duration::from_millis(20);
const LEASE_MS: u64 = 2_000;
/// Users admitted per tick at most; the remaining stock bounds it too.
const BATCH: usize = 200;
/// Concurrent MySQL transactions of one scheduler.
const PARALLEL: usize = 8;
/// The scheduler admits users, not requests: the queue holds only user ids, so a row it
/// writes has no request id or `jti` (NULL). Attributing those would mean storing both
/// with each queue entry.
const UNATTRIBUTED: Attribution = Attribution { request_id: None, jti: None };

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

/// A user's recorded result, as the scheduler writes it into the results hash.
fn parse_result(result: &str) -> Admission {
    match result.strip_prefix("I:").and_then(|seq| seq.parse().ok()) {
        Some(seq) => Admission::AlreadyIssued { seq },
        None if result == "E" => Admission::Ended,
        None => Admission::SoldOut,
    }
}

/// Joins the queue (or reports the result the user already has).
pub async fn enqueue(state: &AppState, live: &LiveRound, user: &str) -> Result<Outcome, IssueError> {
    let mut redis = state.redis.clone();
    let reply: Vec<String> = ENQUEUE
        .key(&live.keys.meta)
        .key(&live.keys.queue)
        .key(&live.keys.queue_ticket)
        .key(&live.keys.queue_results)
        .arg(user)
        .invoke_async(&mut redis)
        .await
        .map_err(IssueError::Queue)?;
    let number = |i: usize| reply.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let admission = match reply.first().map(String::as_str) {
        Some("QUEUED") => {
            return Ok(Outcome::Queued { position: u64::try_from(number(1)).unwrap_or(0) });
        }
        Some("RESULT") => parse_result(reply.get(1).map(String::as_str).unwrap_or("")),
        Some("NOT_STARTED") => Admission::NotStarted { starts_at_ms: number(1) },
        Some("ENDED") => Admission::Ended,
        Some("SOLD_OUT") => Admission::SoldOut,
        _ => Admission::UnknownRound,
    };
    if admission == Admission::SoldOut {
        live.mark_sold_out();
    }
    Ok(Outcome::Admission(admission))
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

/// A user's standing in a queue round: their result, their place, or nothing.
pub async fn standing(state: &AppState, live: &LiveRound, user: &str) -> Result<Option<Outcome>, IssueError> {
    let mut redis = state.redis.clone();
    let reply: Vec<String> = STANDING
        .key(&live.keys.queue)
        .key(&live.keys.queue_results)
        .arg(user)
        .invoke_async(&mut redis)
        .await
        .map_err(IssueError::ReadResult)?;
    Ok(match (reply.first().map(String::as_str), reply.get(1)) {
        (Some("RESULT"), Some(result)) => Some(Outcome::Admission(parse_result(result))),
        (Some("QUEUED"), Some(position)) => Some(Outcome::Queued { position: position.parse().unwrap_or(0) }),
        _ => None,
    })
}

/// Keeps one scheduler task per known `queue` round until `shutdown`.
pub async fn supervise(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        running.retain(|_, task| !task.is_finished());
        for live in state.events.known_rounds() {
            if live.strategy == Strategy::Queue && !running.contains_key(&live.label) {
                let task = tokio::spawn(schedule(state.clone(), live.clone(), shutdown.child_token()));
                running.insert(live.label.clone(), task);
            }
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

/// Admits queued users of one round while this issuer holds the round's lease.
async fn schedule(state: Arc<AppState>, live: Arc<LiveRound>, shutdown: CancellationToken) {
    let token: u64 = rand::rng().random();
    let mut redis = state.redis.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        match hold_lease(&mut redis, &live, token).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, round = %live.label, "queue lease check failed");
                continue;
            }
        }
        if let Err(error) = admit_batch(&state, &live).await {
            tracing::warn!(%error, round = %live.label, "queue tick failed; retrying");
        }
    }
}

async fn hold_lease(
    redis: &mut couponrush_core::redis_conn::RedisConn,
    live: &LiveRound,
    token: u64,
) -> redis::RedisResult<bool> {
    let renew = Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
         if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0",
    );
    let held: i64 = renew.key(&live.keys.lock).arg(token).arg(LEASE_MS).invoke_async(redis).await?;
    Ok(held == 1)
}

async fn admit_batch(state: &AppState, live: &LiveRound) -> Result<(), redis::RedisError> {
    let mut redis = state.redis.clone();
    let Some(meta) = round_meta(&mut redis, &live.keys).await? else {
        return Ok(());
    };
    // Users are read from the head of the queue and removed only once their result is
    // written, so a poll always finds them in one place or the other, and a scheduler
    // that dies mid-batch leaves them queued for the next one (MySQL makes the retry
    // idempotent).
    if meta.remaining == 0 {
        // Sold out: everyone still waiting is turned away, and told.
        let waiting: Vec<String> = redis.zrange(&live.keys.queue, 0, BATCH as isize - 1).await?;
        for user in waiting {
            decided(&mut redis, live, &user, "S").await?;
        }
        return Ok(());
    }
    let take = BATCH.min(meta.remaining as usize);
    let batch: Vec<String> = redis.zrange(&live.keys.queue, 0, take as isize - 1).await?;
    if batch.is_empty() {
        return Ok(());
    }
    let results: Vec<_> = futures::stream::iter(batch)
        .map(|user| async move {
            let outcome = db::issue_sync(&state.db, &live.round, &user, RowLock::None, &UNATTRIBUTED).await;
            (user, outcome)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for (user, outcome) in results {
        match outcome {
            Ok(Admission::Issued { seq, remaining, .. }) => {
                let _: i64 = redis.hincr(&live.keys.meta, "remaining", -1).await?;
                decided(&mut redis, live, &user, &format!("I:{seq}")).await?;
                if remaining == 0 {
                    finish(state, live).await?;
                }
            }
            Ok(Admission::AlreadyIssued { seq }) => decided(&mut redis, live, &user, &format!("I:{seq}")).await?,
            Ok(Admission::SoldOut) => {
                decided(&mut redis, live, &user, "S").await?;
                finish(state, live).await?;
            }
            Ok(Admission::Ended) => decided(&mut redis, live, &user, "E").await?,
            // Not decided: the user stays at the head of the queue for the next tick.
            Ok(Admission::NotStarted { .. } | Admission::UnknownRound | Admission::Regressed { .. }) => {}
            Err(error) => tracing::warn!(%error, round = %live.label, user, "queued admission failed; stays queued"),
        }
    }
    Ok(())
}

/// Writes a user's result, then takes them off the queue.
async fn decided(
    redis: &mut couponrush_core::redis_conn::RedisConn,
    live: &LiveRound,
    user: &str,
    result: &str,
) -> redis::RedisResult<()> {
    let _: () = redis.hset(&live.keys.queue_results, user, result).await?;
    let _: () = redis.zrem(&live.keys.queue, user).await?;
    Ok(())
}

/// MySQL says the round is sold out: make Redis agree and tell every issuer.
async fn finish(state: &AppState, live: &LiveRound) -> redis::RedisResult<()> {
    let mut redis = state.redis.clone();
    let _: () = redis.hset(&live.keys.meta, "remaining", 0).await?;
    live.mark_sold_out();
    let _: i64 = redis.publish(SOLD_OUT_CHANNEL, &live.label).await?;
    Ok(())
}
