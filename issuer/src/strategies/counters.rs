//! `redis-counter` and `redis-counter-set`: Redis counts the places taken so that
//! requests past the stock fail fast without touching MySQL; MySQL decides the rest.

use couponrush_core::db::RowLock;
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission::{self, Admission};
use couponrush_core::round_store::gates;

use super::mysql;
use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// What a counter gate decided.
pub enum Gated {
    /// Every place is taken by coupons issued or in flight: fail fast.
    Full,
    /// MySQL decided.
    Decided(Admission),
}

/// `redis-counter`: `INCR` counts admissions granted or in flight; past the stock the
/// request fails fast without touching MySQL. A request that does not end in a coupon
/// gives its place back, so the round still sells exactly its stock.
pub async fn counter_gate(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Gated, IssueError> {
    let mut redis = state.redis.clone();
    let stock = live.stock.load(std::sync::atomic::Ordering::Relaxed);
    let place = match gates::take_place(&mut redis, &live.keys).await {
        Ok(place) => place,
        Err(error) => {
            // The INCR may have counted: give the place back. If it had not, the gate
            // is one place too lenient, which costs one more MySQL check and never a
            // coupon (MySQL decides); a place never given back would leave stock unsold.
            if admission::may_have_run(&error) {
                give_back_place(state, live).await;
            }
            return Err(IssueError::Gate(error));
        }
    };
    if place > stock {
        give_back_place(state, live).await;
        return Ok(Gated::Full);
    }
    let result = mysql::decide(state, live, user, RowLock::None, attribution).await;
    if !matches!(result, Ok(Admission::Issued { .. })) {
        give_back_place(state, live).await;
    }
    result.map(Gated::Decided)
}

async fn give_back_place(state: &AppState, live: &LiveRound) {
    if let Err(error) = gates::give_back_place(&mut state.redis.clone(), &live.keys).await {
        // A lost place only makes the gate stricter; MySQL still decides.
        tracing::warn!(%error, round = %live.label, "giving back a counter place failed");
    }
}

/// `redis-counter-set`: `SADD` turns repeat requests away before the counter
/// (docs/strategies.md#redis-counter-set); the counter gate and MySQL do the rest.
pub async fn counter_set_gate(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Gated, IssueError> {
    let mut redis = state.redis.clone();
    let first = gates::join_users(&mut redis, &live.keys, user).await.map_err(IssueError::Gate)?;
    if !first {
        // A repeat: MySQL knows its seq (or, if the first request is still in flight or
        // failed, handles it as a fresh request; it is correct on its own).
        return mysql::decide(state, live, user, RowLock::None, attribution).await.map(Gated::Decided);
    }
    let result = counter_gate(state, live, user, attribution).await;
    if !matches!(result, Ok(Gated::Decided(Admission::Issued { .. } | Admission::AlreadyIssued { .. })))
        && let Err(error) = gates::leave_users(&mut redis, &live.keys, user).await
    {
        tracing::warn!(%error, round = %live.label, user, "removing a user from the gate set failed");
    }
    result
}
