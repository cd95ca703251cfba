//! `redis-lock`: one lock per round (token, expiry, compare-and-delete unlock) around
//! the MySQL transaction. The expiry bounds a crashed holder; if a slow holder outlives
//! it, the transaction's conditional update still keeps stock exact.

use std::time::{Duration, Instant};

use couponrush_core::db::RowLock;
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission::Admission;
use couponrush_core::round_store::gates;
use rand::Rng;

use super::mysql;
use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// How long a holder may keep the lock if it never releases it (a crash).
const LOCK_EXPIRY_MS: u64 = 3_000;

pub async fn admit(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let mut redis = state.redis.clone();
    let token: u64 = rand::rng().random();
    let deadline = Instant::now() + state.lock_wait;
    while !gates::try_lock(&mut redis, &live.keys, token, LOCK_EXPIRY_MS).await.map_err(IssueError::Lock)? {
        if Instant::now() >= deadline {
            return Err(IssueError::LockTimeout);
        }
        // Spinning is the design under test (docs/strategies.md#redis-lock); jitter
        // spreads the herd.
        let pause = rand::rng().random_range(1..=4);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let result = mysql::decide(state, live, user, RowLock::None, attribution).await;
    if let Err(error) = gates::unlock(&mut redis, &live.keys, token).await {
        tracing::warn!(%error, round = %live.label, "releasing the lock failed; it expires by itself");
    }
    result
}
