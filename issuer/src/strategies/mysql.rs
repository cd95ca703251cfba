//! A MySQL transaction decides: `db-lock` locks the round's stock row (`FOR UPDATE`);
//! the Redis-gated strategies run the same transaction without the row lock (its
//! conditional update keeps stock exact).

use std::time::Duration;

use couponrush_core::db::{self, RowLock};
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission::Admission;

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// `db-lock`: the transaction with the stock row locked.
pub async fn db_lock(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    decide(state, live, user, RowLock::ForUpdate, attribution).await
}

/// The transaction, retried a few times on deadlocks and lost connections.
pub async fn decide(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    lock: RowLock,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let mut tries = 0;
    loop {
        match db::issue_sync(&state.db, &live.round, user, lock, attribution).await {
            Ok(admission) => return Ok(admission),
            Err(error) if db::is_transient(&error) && tries < 3 => {
                tries += 1;
                tracing::debug!(%error, tries, "transient database error; retrying");
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            Err(error) => return Err(IssueError::Database(error)),
        }
    }
}
