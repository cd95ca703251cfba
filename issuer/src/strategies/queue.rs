//! The `queue` strategy (docs/strategies.md#queue): a request joins a Redis sorted set
//! and gets its position (202); a scheduler admits up to the remaining stock per tick
//! through the MySQL transaction and records each user's result, which the user polls
//! with GET. One issuer per round schedules at a time, chosen by a Redis lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use couponrush_core::db::{self, RowLock};
use couponrush_core::event::Strategy;
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission::Admission;
use couponrush_core::round_store::meta::{self, round_meta};
use couponrush_core::round_store::queue::{self as store, Enqueued, QueueResult, Standing};
use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::outcome::Outcome;
use super::sold_out;
use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

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

fn outcome(standing: Standing) -> Outcome {
    match standing {
        Standing::Queued { position } => Outcome::Queued { position },
        Standing::Decided(result) => Outcome::Admission(result.admission()),
    }
}

/// Joins the queue (or reports the result the user already has).
pub async fn enqueue(state: &AppState, live: &LiveRound, user: &str) -> Result<Outcome, IssueError> {
    let mut redis = state.redis.clone();
    match store::enqueue(&mut redis, &live.keys, user).await.map_err(IssueError::Queue)? {
        Enqueued::Standing(standing) => Ok(outcome(standing)),
        Enqueued::Refused(admission) => Ok(Outcome::Admission(admission)),
    }
}

/// A user's standing in a queue round: their result, their place, or nothing.
pub async fn standing(state: &AppState, live: &LiveRound, user: &str) -> Result<Option<Outcome>, IssueError> {
    let mut redis = state.redis.clone();
    let standing = store::standing(&mut redis, &live.keys, user).await.map_err(IssueError::ReadResult)?;
    Ok(standing.map(outcome))
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
        match store::hold_lease(&mut redis, &live.keys, token, LEASE_MS).await {
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
        for user in store::head(&mut redis, &live.keys, BATCH).await? {
            store::decide(&mut redis, &live.keys, &user, QueueResult::SoldOut).await?;
        }
        return Ok(());
    }
    let take = BATCH.min(meta.remaining as usize);
    let batch = store::head(&mut redis, &live.keys, take).await?;
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
        let keys = &live.keys;
        match outcome {
            Ok(Admission::Issued { seq, remaining, .. }) => {
                meta::take_one(&mut state.redis.clone(), &live.keys).await?;
                store::decide(&mut redis, keys, &user, QueueResult::Issued { seq }).await?;
                if remaining == 0 {
                    finish(state, live).await?;
                }
            }
            Ok(Admission::AlreadyIssued { seq }) => {
                store::decide(&mut redis, keys, &user, QueueResult::Issued { seq }).await?
            }
            Ok(Admission::SoldOut) => {
                store::decide(&mut redis, keys, &user, QueueResult::SoldOut).await?;
                finish(state, live).await?;
            }
            Ok(Admission::Ended) => store::decide(&mut redis, keys, &user, QueueResult::Ended).await?,
            // Not decided: the user stays at the head of the queue for the next tick.
            Ok(Admission::NotStarted { .. } | Admission::UnknownRound | Admission::Regressed { .. }) => {}
            Err(error) => tracing::warn!(%error, round = %live.label, user, "queued admission failed; stays queued"),
        }
    }
    Ok(())
}

/// MySQL says the round is sold out: make Redis agree and tell every issuer.
async fn finish(state: &AppState, live: &LiveRound) -> redis::RedisResult<()> {
    meta::mark_none_remaining(&mut state.redis.clone(), &live.keys).await?;
    sold_out::announce(state, live, false).await;
    Ok(())
}
