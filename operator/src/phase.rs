//! The phase decision, with no API calls: from the round plan, the last status, what
//! Redis and MySQL hold, and the current instant, to the phase and when to look again.
//! Requeues are timed to the next transition instead of polling fast; only a live or
//! draining round is looked at every couple of seconds, to report its counts.

use std::time::Duration;

use couponrush_crds::{CouponEventStatus, Phase};
use jiff::Timestamp;

use crate::plan::{RoundPlan, Timing};

/// How often a live or draining round's counts are refreshed.
pub const COUNT_EVERY: Duration = Duration::from_secs(2);
/// How long a completed one-off event waits before it is looked at again (in case
/// someone edits it); watch events bring it back sooner.
pub const IDLE: Duration = Duration::from_secs(3600);

/// What Redis and MySQL hold for the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub remaining: u32,
    /// Admissions that stand (rolled-back ones excluded).
    pub issued: u32,
    /// Rows in MySQL.
    pub persisted: u32,
    /// Admissions ever made in the round, rolled-back ones included (Redis' `seq`, which
    /// never goes down, summed over the stock buckets; the issued count where counts live
    /// in MySQL).
    pub admitted: u32,
    /// Stock buckets whose keys are gone while the round's bucket 0 is there (their shard
    /// lost them): the counts above miss them.
    pub missing_buckets: u32,
}

/// Whether Redis still holds the round that was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundState {
    Intact,
    /// The round's state in Redis vanished or went back in time (a flush, a restart
    /// without persistence, a failover to a stale replica); the reason names which.
    Lost(&'static str),
}

impl RoundState {
    pub fn lost_reason(self) -> Option<&'static str> {
        match self {
            RoundState::Intact => None,
            RoundState::Lost(reason) => Some(reason),
        }
    }
}

/// Judges what Redis holds against what was reported for the same round. Only the
/// operator's own teardown removes an opened round's keys, and it reports Completed
/// before anything else can look; so keys gone after the round opened, fewer
/// admissions than were already reported issued (`seq` never goes down), or fewer
/// winners than MySQL rows all mean the state was lost; so does one stock bucket's keys
/// gone while the others are there (only teardown removes them, bucket 0 last).
pub fn round_state(plan: &RoundPlan, previous: &CouponEventStatus, observed: Option<Observed>) -> RoundState {
    let same_round = previous.round == Some(plan.round);
    if !same_round || previous.phase == Phase::Completed {
        return RoundState::Intact;
    }
    let opened =
        previous.started_at.is_some() && matches!(previous.phase, Phase::Live | Phase::SoldOut | Phase::Draining);
    match observed {
        None if opened => RoundState::Lost("KeysGone"),
        Some(o) if o.missing_buckets > 0 => RoundState::Lost("BucketKeysGone"),
        Some(o) if o.issued < o.persisted => RoundState::Lost("FewerWinnersThanRows"),
        Some(o) if previous.issued.is_some_and(|reported| o.admitted < reported) => RoundState::Lost("WentBackInTime"),
        _ => RoundState::Intact,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: Phase,
    pub requeue: Duration,
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

fn add(instant: Timestamp, duration: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(duration).ok().and_then(|d| instant.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

pub fn decide(
    plan: &RoundPlan,
    timing: &Timing,
    previous: &CouponEventStatus,
    observed: Option<Observed>,
    now: Timestamp,
) -> Decision {
    let same_round = previous.round == Some(plan.round);
    if same_round && previous.phase == Phase::Completed {
        return Decision { phase: Phase::Completed, requeue: IDLE };
    }
    let warm_at = plan
        .starts_at
        .checked_sub(jiff::SignedDuration::try_from(timing.warmup).unwrap_or_default())
        .unwrap_or(plan.starts_at);
    if now < warm_at {
        return Decision { phase: Phase::Scheduled, requeue: until(now, warm_at) };
    }
    if round_state(plan, previous, observed) != RoundState::Intact {
        // Never Completed (that would tear down the workloads with coupons in flight)
        // and never warmed again (fresh keys would hand out seqs a second time): the
        // round stays where it was until its state is restored.
        return Decision { phase: previous.phase, requeue: COUNT_EVERY };
    }
    let Some(observed) = observed.filter(|_| now >= plan.starts_at) else {
        // Warming (or opened before the keys were written: warm now, then go live).
        return Decision {
            phase: Phase::Warming,
            requeue: until(now, plan.starts_at).clamp(Duration::from_millis(200), COUNT_EVERY),
        };
    };
    let sold_out = observed.remaining == 0;
    let ended = plan.ends_at.is_some_and(|end| now >= end);
    if !sold_out && !ended {
        let requeue = plan.ends_at.map_or(COUNT_EVERY, |end| until(now, end).min(COUNT_EVERY));
        return Decision { phase: Phase::Live, requeue };
    }
    let was_open = same_round && matches!(previous.phase, Phase::Scheduled | Phase::Warming | Phase::Live);
    if sold_out && was_open {
        // Reported once on its own, then Draining.
        return Decision { phase: Phase::SoldOut, requeue: Duration::from_millis(500) };
    }
    if observed.persisted < observed.issued {
        return Decision { phase: Phase::Draining, requeue: Duration::from_secs(1) };
    }
    let drained_at = previous.drained_at.as_ref().filter(|_| same_round).map_or(now, |t| t.0);
    let done_at = add(drained_at, timing.teardown_after);
    if now >= done_at {
        return Decision { phase: Phase::Completed, requeue: Duration::ZERO };
    }
    Decision { phase: Phase::Draining, requeue: until(now, done_at) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    fn plan(ends: Option<i64>) -> RoundPlan {
        RoundPlan { round: 1, starts_at: at(0), ends_at: ends.map(at) }
    }

    const TIMING: Timing = Timing { warmup: Duration::from_secs(300), teardown_after: Duration::from_secs(600) };

    fn status(phase: Phase) -> CouponEventStatus {
        CouponEventStatus { phase, round: Some(1), ..CouponEventStatus::default() }
    }

    fn observed(remaining: u32, issued: u32, persisted: u32) -> Option<Observed> {
        Some(Observed { remaining, issued, persisted, admitted: issued, missing_buckets: 0 })
    }

    #[test]
    fn waits_for_the_warm_up_then_for_the_start() {
        let d = decide(&plan(None), &TIMING, &CouponEventStatus::default(), None, at(-1000));
        assert_eq!(d, Decision { phase: Phase::Scheduled, requeue: Duration::from_secs(700) });
        let d = decide(&plan(None), &TIMING, &status(Phase::Scheduled), None, at(-300));
        assert_eq!(d.phase, Phase::Warming);
        assert_eq!(d.requeue, COUNT_EVERY, "keeps reporting while warming");
        let d = decide(&plan(None), &TIMING, &status(Phase::Warming), observed(10, 0, 0), at(-1));
        assert_eq!(d, Decision { phase: Phase::Warming, requeue: Duration::from_secs(1) });
    }

    #[test]
    fn opens_at_the_start_and_sells_out() {
        let d = decide(&plan(None), &TIMING, &status(Phase::Warming), observed(10, 0, 0), at(0));
        assert_eq!(d, Decision { phase: Phase::Live, requeue: COUNT_EVERY });
        let d = decide(&plan(None), &TIMING, &status(Phase::Live), observed(0, 10, 3), at(5));
        assert_eq!(d.phase, Phase::SoldOut);
        let d = decide(&plan(None), &TIMING, &status(Phase::SoldOut), observed(0, 10, 3), at(6));
        assert_eq!(d.phase, Phase::Draining);
    }

    #[test]
    fn a_start_in_the_past_warms_then_goes_live_at_once() {
        let d = decide(&plan(None), &TIMING, &CouponEventStatus::default(), None, at(3600));
        assert_eq!(d.phase, Phase::Warming);
        assert_eq!(d.requeue, Duration::from_millis(200));
        let d = decide(&plan(None), &TIMING, &status(Phase::Warming), observed(10, 0, 0), at(3601));
        assert_eq!(d.phase, Phase::Live);
    }

    #[test]
    fn drains_then_completes_after_teardown() {
        let mut drained = status(Phase::Draining);
        let d = decide(&plan(None), &TIMING, &drained, observed(0, 10, 10), at(20));
        assert_eq!(d, Decision { phase: Phase::Draining, requeue: Duration::from_secs(600) });
        drained.drained_at = Some(Time(at(20)));
        let d = decide(&plan(None), &TIMING, &drained, observed(0, 10, 10), at(619));
        assert_eq!(d.phase, Phase::Draining);
        let d = decide(&plan(None), &TIMING, &drained, observed(0, 10, 10), at(620));
        assert_eq!(d.phase, Phase::Completed);
        let done = status(Phase::Completed);
        assert_eq!(decide(&plan(None), &TIMING, &done, None, at(9999)).phase, Phase::Completed);
    }

    #[test]
    fn the_end_time_closes_a_round_with_stock_left() {
        let d = decide(&plan(Some(60)), &TIMING, &status(Phase::Live), observed(4, 6, 6), at(59));
        assert_eq!(d, Decision { phase: Phase::Live, requeue: Duration::from_secs(1) });
        let d = decide(&plan(Some(60)), &TIMING, &status(Phase::Live), observed(4, 6, 5), at(60));
        assert_eq!(d.phase, Phase::Draining, "not sold out: no SoldOut phase");
    }

    #[test]
    fn a_round_whose_keys_vanish_or_go_back_in_time_is_never_completed_nor_warmed_again() {
        let mut live = status(Phase::Live);
        live.started_at = Some(Time(at(0)));
        live.issued = Some(6);
        // Keys gone mid-Live (FLUSHALL, a restart without persistence).
        assert_eq!(round_state(&plan(None), &live, None), RoundState::Lost("KeysGone"));
        assert_eq!(
            decide(&plan(None), &TIMING, &live, None, at(30)),
            Decision { phase: Phase::Live, requeue: COUNT_EVERY }
        );
        // Back in time: fewer admissions than already reported, or fewer winners than rows.
        let stale = Some(Observed { remaining: 7, issued: 3, persisted: 3, admitted: 3, missing_buckets: 0 });
        assert_eq!(round_state(&plan(None), &live, stale), RoundState::Lost("WentBackInTime"));
        let behind = Some(Observed { remaining: 7, issued: 3, persisted: 5, admitted: 9, missing_buckets: 0 });
        assert_eq!(round_state(&plan(None), &live, behind), RoundState::Lost("FewerWinnersThanRows"));
        assert_eq!(decide(&plan(None), &TIMING, &live, behind, at(30)).phase, Phase::Live);
        // A rolled-back admission lowers `issued` but not `seq`: intact.
        let rolled_back = Some(Observed { remaining: 5, issued: 5, persisted: 5, admitted: 6, missing_buckets: 0 });
        assert_eq!(round_state(&plan(None), &live, rolled_back), RoundState::Intact);
        // One stock bucket's keys gone (its shard lost them), the others there.
        let bucket_gone = Some(Observed { remaining: 5, issued: 5, persisted: 5, admitted: 6, missing_buckets: 1 });
        assert_eq!(round_state(&plan(None), &live, bucket_gone), RoundState::Lost("BucketKeysGone"));
        // Draining keeps draining, not Completed.
        let mut draining = status(Phase::Draining);
        draining.started_at = Some(Time(at(0)));
        assert_eq!(decide(&plan(None), &TIMING, &draining, None, at(700)).phase, Phase::Draining);
        // Before the round opened, missing keys just mean "not warmed yet".
        assert_eq!(round_state(&plan(None), &status(Phase::Warming), None), RoundState::Intact);
        // A completed round's keys are gone by design.
        assert_eq!(round_state(&plan(None), &status(Phase::Completed), None), RoundState::Intact);
    }

    #[test]
    fn stock_of_one() {
        let d = decide(&plan(None), &TIMING, &status(Phase::Live), observed(0, 1, 1), at(1));
        assert_eq!(d.phase, Phase::SoldOut);
    }
}
