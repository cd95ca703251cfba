//! `kafka-async`: one Lua round trip admits; then the coupon goes to Kafka and the
//! consumer makes it a row.

use std::time::{Duration, Instant};

use couponrush_core::message::{Attribution, IssuedCoupon};
use couponrush_core::round_store::admission::{self, Admission, RollBack};

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// Admits in Redis (in the round's next batch: [`super::AdmissionBatches`]), then publishes. If Kafka definitely refuses the coupon, the
/// admission is rolled back (unless the consumer already confirmed it) and the caller
/// gets 503 with nothing admitted.
pub async fn admit(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let floor = live.seq_floor();
    let admission = live.admissions.admit(live, &state.redis, user).await.map_err(IssueError::Admit)?;
    let Admission::Issued { seq, slot, at_ms, .. } = admission else {
        return match admission {
            // This issuer loaded the round from those keys: they vanished since.
            Admission::UnknownRound => {
                live.mark_vanished();
                Err(IssueError::RoundVanished)
            }
            Admission::Regressed { seq_in_redis } => Err(IssueError::RoundRegressed { seq_in_redis, seen: floor }),
            other => Ok(other),
        };
    };
    live.saw_seq(seq);
    let coupon = IssuedCoupon::new(&live.round, user, seq, slot, at_ms).attributed(attribution.clone());
    let Err(error) = state.publisher.publish(&coupon).await else {
        return Ok(admission);
    };
    tracing::warn!(%error, round = %live.label, user, seq, "Kafka refused the coupon; rolling the admission back");
    match admission::roll_back(&mut state.redis.clone(), &live.keys, user, slot, seq).await {
        Ok(RollBack::RolledBack | RollBack::Absent) => Err(IssueError::Publish(error)),
        Ok(RollBack::AlreadyConfirmed) => Ok(admission),
        Err(rollback_error) => {
            // Unknown state: the admission stands in Redis, and reconciliation will
            // publish it. The caller holds the coupon.
            tracing::error!(error = %rollback_error, round = %live.label, user, seq, "roll-back failed; the admission stands for reconciliation");
            Ok(admission)
        }
    }
}

/// After a `kafka-async` admission whose reply never came: the script may have run (or
/// may still run, from a socket buffer, once a stalled Redis resumes), leaving a winner
/// whose coupon nobody publishes. Once Redis answers again, this publishes whatever the
/// user holds, twice a few seconds apart; re-publishing is harmless (the consumer
/// confirms against Redis and inserts idempotently). Past its deadline the operator's
/// reconciliation is the last resort.
pub async fn settle_unknown(state: &AppState, live: &LiveRound, user: &str) {
    const CHECKS: [Duration; 2] = [Duration::ZERO, Duration::from_secs(5)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published = std::collections::HashSet::new();
    for wait in CHECKS {
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_millis(100);
        let held = loop {
            match admission::held_coupons(&mut state.redis.clone(), &live.keys, user).await {
                Ok(held) => break held,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, round = %live.label, user, "settling an unknown admission: Redis not answering yet");
                }
                Err(error) => {
                    tracing::error!(%error, round = %live.label, user, "gave up settling an unknown admission; reconciliation will");
                    return;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        for (slot, seq) in held {
            if !published.insert(seq) {
                continue;
            }
            // Unattributed (NULL in the row): the user may hold several coupons, and which
            // of them was this request's is not known.
            let coupon = IssuedCoupon::new(&live.round, user, seq, slot, couponrush_core::wall_clock_ms());
            match state.publisher.publish(&coupon).await {
                Ok(()) => {
                    live.saw_seq(seq);
                    tracing::info!(round = %live.label, user, seq, "published the coupon of an admission whose reply was lost");
                }
                Err(error) => {
                    tracing::error!(%error, round = %live.label, user, seq, "publishing a settled admission failed; reconciliation will");
                }
            }
        }
    }
}
