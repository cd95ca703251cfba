//! `kafka-async`: one Lua round trip admits; then the coupon goes to Kafka and the
//! consumer makes it a row. A round whose stock is split into buckets admits in the
//! user's home bucket the same way; when that bucket is empty, the spill path takes the
//! coupon from another bucket (docs/scale.md, "Stock buckets across Redis Cluster").

use std::time::{Duration, Instant};

use couponrush_core::message::{Attribution, IssuedCoupon};
use couponrush_core::round_store::admission::{self, Admission, DonorTake, HomeAdmission, RollBack, may_have_run};
use couponrush_core::round_store::buckets::{donor_order, home_bucket};

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// Admits in Redis (a round of one bucket in its next batch: [`super::AdmissionBatches`];
/// a bucketed round in the user's home bucket, then the spill path), then publishes. If
/// Kafka definitely refuses the coupon, the admission is rolled back (unless the consumer
/// already confirmed it) and the caller gets 503 with nothing admitted.
pub async fn admit(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let mut redis = state.redis.clone();
    // One bucket: bucket 0, the round's own keys, as before buckets existed.
    let home = home_bucket(user, live.buckets);
    let (keys, label) = live.bucket(home);
    let floor = live.seq_floor(home);
    let admission = if live.buckets == 1 {
        live.admissions.admit(live, &state.redis, user).await.map_err(IssueError::Admit)?
    } else {
        // The token names this request in the home bucket's spill reservation.
        let token = format!("{:016x}", rand::random::<u64>());
        let decided =
            admission::admit_home(&mut redis, keys, label, user, floor, &token).await.map_err(IssueError::Admit)?;
        match decided {
            HomeAdmission::Decided(admission) => admission,
            HomeAdmission::Pending { retry_after_ms } => return Err(IssueError::SpillPending { retry_after_ms }),
            HomeAdmission::Spill { took_over, at_ms } => {
                live.mark_bucket_sold_out(home);
                let stamp = admission::spill_stamp(at_ms, &token);
                return spill(state, live, user, attribution, home, &stamp, took_over).await;
            }
        }
    };
    let Admission::Issued { seq, slot, at_ms, remaining } = admission else {
        return match admission {
            // This issuer loaded the round from those keys: they vanished since.
            Admission::UnknownRound => {
                live.mark_vanished();
                Err(IssueError::RoundVanished)
            }
            Admission::Regressed { seq_in_redis } => Err(IssueError::RoundRegressed { seq_in_redis, seen: floor }),
            Admission::SoldOut => {
                live.mark_bucket_sold_out(home);
                Ok(admission)
            }
            other => Ok(other),
        };
    };
    live.saw_seq(seq);
    if remaining == 0 {
        live.mark_bucket_sold_out(home);
    }
    let coupon = IssuedCoupon::new(&live.round, user, seq, slot, at_ms).attributed(attribution.clone());
    let Err(error) = state.publisher.publish(&coupon).await else {
        return Ok(admission);
    };
    tracing::warn!(%error, round = %live.label, user, seq, "Kafka refused the coupon; rolling the admission back");
    match admission::roll_back(&mut redis, keys, user, slot, seq).await {
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

/// The spill path of a bucketed round, after the home bucket reserved the user for this
/// request (`stamp`): take a coupon in the other buckets in turn (those this issuer knows are sold
/// out skipped, unless the reservation was taken over from a request that may have
/// taken one in such a bucket), make it the user's in the home bucket, then publish.
async fn spill(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
    home: u32,
    stamp: &str,
    took_over: bool,
) -> Result<Admission, IssueError> {
    let mut redis = state.redis.clone();
    let (home_keys, _) = live.bucket(home);
    for donor in donor_order(home, live.buckets) {
        if !took_over && live.is_bucket_sold_out(donor) {
            continue;
        }
        let (keys, label) = live.bucket(donor);
        let floor = live.seq_floor(donor);
        let taken = match admission::take_from_donor(&mut redis, keys, label, user, stamp, floor).await {
            Ok(taken) => taken,
            Err(error) => {
                // If the take may have run, the coupon may be this user's in that bucket:
                // the reservation stays, and the user's next request once it expires finds
                // the take there. If it did not run, nothing is held: let the user retry.
                if let admission::ScriptError::Redis(redis_error) = &error
                    && !may_have_run(redis_error)
                {
                    release(state, live, user, home, stamp).await;
                }
                return Err(IssueError::Admit(error));
            }
        };
        match taken {
            DonorTake::SoldOut => live.mark_bucket_sold_out(donor),
            // A newer request of the user took the reservation over and took this bucket's
            // coupon for the user since: it decides; the reservation is not this one's.
            DonorTake::Superseded => return Err(IssueError::SpillSuperseded),
            DonorTake::UnknownRound => {
                live.mark_vanished();
                return Err(IssueError::RoundVanished);
            }
            DonorTake::Regressed { seq_in_redis } => {
                release(state, live, user, home, stamp).await;
                return Err(IssueError::RoundRegressed { seq_in_redis, seen: floor });
            }
            DonorTake::Taken { seq, remaining, at_ms } => {
                live.saw_seq(seq);
                if remaining == 0 {
                    live.mark_bucket_sold_out(donor);
                }
                let admission = Admission::Issued { seq, slot: 1, remaining, at_ms };
                match admission::confirm_spill(&mut redis, home_keys, user, stamp, seq).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Another request of the user took the reservation over (this one
                        // outlived it): give the take back unless that request re-stamped it.
                        let given_back = admission::give_back(&mut redis, keys, user, seq, stamp).await;
                        tracing::warn!(round = %live.label, user, seq, ?given_back, "a spilled admission lost its reservation to a newer request");
                        return Err(IssueError::SpillSuperseded);
                    }
                    // It may have run: then the user's winner is this seq, and settling
                    // the unknown outcome publishes it; if not, the reservation expires
                    // and the user's next request finds the take.
                    Err(error) => return Err(IssueError::Admit(error)),
                }
                return publish_spilled(state, live, user, attribution, home, donor, stamp, admission).await;
            }
        }
    }
    // Every bucket is empty: the round is sold out for this user.
    release(state, live, user, home, stamp).await;
    Ok(Admission::SoldOut)
}

/// Publishes a spilled coupon that the home bucket confirmed. If Kafka definitely
/// refuses it: the home bucket turns the winner back into this request's reservation
/// (the user's other requests wait), the donor bucket gets the coupon back unless the
/// consumer confirmed it first, and then the reservation goes (or the winner comes back).
#[allow(clippy::too_many_arguments)]
async fn publish_spilled(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
    home: u32,
    donor: u32,
    stamp: &str,
    admission: Admission,
) -> Result<Admission, IssueError> {
    let Admission::Issued { seq, at_ms, .. } = admission else {
        return Ok(admission);
    };
    let coupon = IssuedCoupon::new(&live.round, user, seq, 1, at_ms).attributed(attribution.clone());
    let Err(error) = state.publisher.publish(&coupon).await else {
        return Ok(admission);
    };
    tracing::warn!(%error, round = %live.label, user, seq, donor, "Kafka refused a spilled coupon; rolling it back");
    let mut redis = state.redis.clone();
    let ((home_keys, _), (donor_keys, _)) = (live.bucket(home), live.bucket(donor));
    if let Err(rollback_error) = admission::unconfirm_spill(&mut redis, home_keys, user, seq, stamp).await {
        tracing::error!(error = %rollback_error, round = %live.label, user, seq, "roll-back failed; the admission stands for reconciliation");
        return Ok(admission);
    }
    match admission::give_back(&mut redis, donor_keys, user, seq, stamp).await {
        Ok(RollBack::RolledBack | RollBack::Absent) => {
            release(state, live, user, home, stamp).await;
            Err(IssueError::Publish(error))
        }
        Ok(RollBack::AlreadyConfirmed) => {
            // Reconciliation published it meanwhile and the consumer stored it: it stands.
            match admission::confirm_spill(&mut redis, home_keys, user, stamp, seq).await {
                Ok(true) => {}
                other => {
                    tracing::error!(round = %live.label, user, seq, ?other, "a confirmed spilled coupon could not be made the user's winner again")
                }
            }
            Ok(admission)
        }
        Err(rollback_error) => {
            // The coupon is taken in its bucket but no longer the user's winner, and not
            // in Kafka: once the reservation expires, the user's next request finds it;
            // until then (or if the user never comes back) it is a coupon short.
            tracing::error!(error = %rollback_error, round = %live.label, user, seq, donor, "giving a spilled coupon back failed; it stays taken");
            Err(IssueError::Publish(error))
        }
    }
}

/// Drops the user's spill reservation (this request's only); a failure only makes the
/// user's next requests wait until it expires.
async fn release(state: &AppState, live: &LiveRound, user: &str, home: u32, stamp: &str) {
    let (home_keys, _) = live.bucket(home);
    if let Err(error) = admission::release_spill(&mut state.redis.clone(), home_keys, user, stamp).await {
        tracing::warn!(%error, round = %live.label, user, "dropping a spill reservation failed; it expires");
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
            // The user's record is in the home bucket, wherever the coupon came from.
            let (home_keys, _) = live.bucket(home_bucket(user, live.buckets));
            match admission::held_coupons(&mut state.redis.clone(), home_keys, user).await {
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
