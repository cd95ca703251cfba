//! The status, with no API calls: from the last status, the round plan, the phase
//! decision and what Redis and MySQL hold, to the next status (phase, counts, the
//! instants each phase was entered, conditions). A new round starts from a clean slate:
//! nothing of the last round's counts or instants is carried over, and the controller
//! writes the status as a merge patch that clears every field left empty
//! ([`CouponEventStatus::merge_patch`]).

use couponrush_crds::{CouponEventStatus, Phase};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::phase::{Decision, Observed, RoundState};
use crate::plan::RoundPlan;

/// The condition a round whose Redis state was lost carries.
pub const ROUND_STATE_LOST: &str = "RoundStateLost";
/// Standard conditions (see [`set_standard_conditions`]).
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// The condition of a round whose admissions `spec.paused` stops.
pub const PAUSED: &str = "Paused";
/// The condition an event being deleted carries while its coupons drain.
pub const TERMINATING: &str = "Terminating";

/// What the next status is made from.
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub previous: &'a CouponEventStatus,
    pub plan: &'a RoundPlan,
    pub decision: Decision,
    pub observed: Option<Observed>,
    pub state: RoundState,
    /// Spec changes refused this pass (reason, message); the first one is reported.
    pub refusals: &'a [(&'static str, String)],
    /// `spec.paused`: the issuers answer 503 PAUSED while the round is open.
    pub paused: bool,
    pub now: Timestamp,
}

/// The next status: phase, counts, timestamps (each set once per round), conditions.
pub fn next_status(inputs: &Inputs<'_>) -> CouponEventStatus {
    let Inputs { generation, previous, plan, decision, observed, state, refusals, paused, now } = *inputs;
    let same_round = previous.round == Some(plan.round);
    let mut status = if same_round {
        previous.clone()
    } else {
        // A new round: only the conditions carry over (their transition times stay
        // meaningful); counts and instants are the new round's own.
        CouponEventStatus { conditions: previous.conditions.clone(), ..CouponEventStatus::default() }
    };
    status.phase = decision.phase;
    status.round = Some(plan.round);
    status.round_starts_at = Some(Time(plan.starts_at));
    status.round_ends_at = plan.ends_at.map(Time);
    status.observed_generation = generation;
    let lost = state.lost_reason();
    // Counts from a lost state are not the round's: the last ones reported stand.
    let observed = observed.filter(|_| lost.is_none());
    if let Some(observed) = observed {
        status.remaining = Some(observed.remaining);
        status.issued = Some(observed.issued);
        status.persisted = Some(observed.persisted);
    }
    let stamp = |slot: &mut Option<Time>, condition: bool| {
        if condition && slot.is_none() {
            *slot = Some(Time(now));
        }
    };
    let phase = decision.phase;
    stamp(&mut status.started_at, matches!(phase, Phase::Live | Phase::SoldOut | Phase::Draining | Phase::Completed));
    // Once the round's keys are removed (Completed), the last counts stand.
    let sold_out = observed.map_or(status.remaining == Some(0) && same_round, |o| o.remaining == 0);
    stamp(&mut status.sold_out_at, sold_out);
    let closed = matches!(phase, Phase::SoldOut | Phase::Draining | Phase::Completed);
    let drained = closed && observed.map_or(same_round && status.drained_at.is_some(), |o| o.persisted >= o.issued);
    stamp(&mut status.drained_at, drained && phase != Phase::SoldOut);
    stamp(&mut status.completed_at, phase == Phase::Completed);
    status.message = Some(match (phase, lost) {
        (_, Some(reason)) => lost_message(reason),
        (Phase::Scheduled, _) => format!("round {} opens at {}", plan.round, plan.starts_at),
        (Phase::Warming, _) => format!("warming up: round {} opens at {}", plan.round, plan.starts_at),
        (Phase::Live, _) if paused => "paused: admissions stopped by spec.paused; issuers answer 503 PAUSED".to_owned(),
        (Phase::Live, _) => "open".to_owned(),
        (Phase::SoldOut, _) => "sold out".to_owned(),
        (Phase::Draining, _) if drained => "every coupon is in MySQL; workloads stay until teardownAfter".to_owned(),
        (Phase::Draining, _) => "waiting for every coupon to reach MySQL".to_owned(),
        (Phase::Completed, _) => "completed; workloads removed".to_owned(),
        (Phase::Failed, _) => status.message.clone().unwrap_or_default(),
    });
    let workloads_up = matches!(phase, Phase::Warming | Phase::Live | Phase::SoldOut | Phase::Draining);
    let conditions = &mut status.conditions;
    let mut set = |kind: &str, value: bool, reason: &str, message: &str| {
        set_condition(conditions, generation, kind, value, reason, message, now);
    };
    set(
        "Ready",
        workloads_up,
        if workloads_up { "WorkloadsApplied" } else { "NoWorkloads" },
        "issuer and consumer Deployments",
    );
    set(
        "Live",
        phase == Phase::Live,
        if phase == Phase::Live { "Open" } else { "Closed" },
        "the round admits requests",
    );
    set("SoldOut", sold_out, if sold_out { "NoStockLeft" } else { "StockLeft" }, "every coupon of the round is issued");
    set("Drained", drained, if drained { "AllPersisted" } else { "NotYet" }, "every issued coupon is in MySQL");
    // Only an open (or opening) round has admissions to stop.
    let holds = paused && matches!(phase, Phase::Warming | Phase::Live);
    set(
        PAUSED,
        holds,
        if holds { "PausedBySpec" } else { "NotPaused" },
        "spec.paused stops admissions; false continues the same round",
    );
    match lost {
        Some(reason) => set(ROUND_STATE_LOST, true, reason, &lost_message(reason)),
        None => set(ROUND_STATE_LOST, false, "Intact", "Redis holds the round's state"),
    }
    match refusals.first() {
        Some((reason, message)) => set("SpecAccepted", false, reason, message),
        None => set("SpecAccepted", true, "Accepted", "the spec is being carried out"),
    }
    set_standard_conditions(
        conditions,
        generation,
        phase,
        lost,
        holds,
        refusals.first().map(|(reason, _)| *reason),
        now,
    );
    status
}

/// `Progressing` and `Degraded` in the shape tools know from Deployments, so that
/// `kubectl wait --for=condition=Progressing=false` (the round is done) and
/// `--for=condition=Degraded=false` work: Progressing while a round moves toward
/// Completed, Degraded while something needs a person (lost Redis state, a refused
/// spec change, a failed event).
fn set_standard_conditions(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    phase: Phase,
    lost: Option<&str>,
    paused: bool,
    refused: Option<&str>,
    now: Timestamp,
) {
    let (progressing, reason) = match (phase, lost) {
        (_, Some(_)) => (false, "RoundStateLost"),
        (Phase::Warming | Phase::Live, _) if paused => (false, "Paused"),
        (Phase::Warming, _) => (true, "Warming"),
        (Phase::Live, _) => (true, "Live"),
        (Phase::SoldOut, _) => (true, "SoldOut"),
        (Phase::Draining, _) => (true, "Draining"),
        (Phase::Scheduled, _) => (false, "WaitingForStart"),
        (Phase::Completed, _) => (false, "RoundCompleted"),
        (Phase::Failed, _) => (false, "Failed"),
    };
    set_condition(conditions, generation, PROGRESSING, progressing, reason, "the round moves toward Completed", now);
    let degraded = match (phase, lost, refused) {
        (_, Some(_), _) => Some("RoundStateLost"),
        (Phase::Failed, _, _) => Some("Failed"),
        (_, _, Some(reason)) => Some(reason),
        _ => None,
    };
    let message = "something needs a person: see the other conditions and the Warning events";
    set_condition(conditions, generation, DEGRADED, degraded.is_some(), degraded.unwrap_or("AsExpected"), message, now);
}

fn lost_message(reason: &str) -> String {
    format!(
        "the round's Redis state is lost ({reason}): not completed, workloads kept; every admitted coupon is in \
         Kafka or MySQL, see the README's recovery procedure"
    )
}

/// The instant the status' phase was entered, if it records one.
pub fn phase_entered(status: &CouponEventStatus) -> Option<Timestamp> {
    let at = match status.phase {
        Phase::Live => status.started_at.as_ref(),
        Phase::SoldOut => status.sold_out_at.as_ref(),
        Phase::Draining => status.drained_at.as_ref().or(status.sold_out_at.as_ref()),
        _ => None,
    };
    at.map(|t| t.0)
}

/// Whether the condition `kind` is set to True.
pub fn is_true(status: &CouponEventStatus, kind: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == kind && c.status == "True")
}

/// Sets a condition, keeping its transition time while its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if value { "True" } else { "False" }.to_owned();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: transition,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::COUNT_EVERY;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    fn plan(round: u32, starts: i64) -> RoundPlan {
        RoundPlan { round, starts_at: at(starts), ends_at: None }
    }

    fn next(
        previous: &CouponEventStatus,
        plan: &RoundPlan,
        phase: Phase,
        observed: Option<Observed>,
        now: i64,
    ) -> CouponEventStatus {
        next_status(&Inputs {
            generation: Some(1),
            previous,
            plan,
            decision: Decision { phase, requeue: COUNT_EVERY },
            observed,
            state: RoundState::Intact,
            refusals: &[],
            paused: false,
            now: at(now),
        })
    }

    fn counts(remaining: u32, issued: u32, persisted: u32) -> Option<Observed> {
        Some(Observed { remaining, issued, persisted, admitted: issued, missing_buckets: 0 })
    }

    #[test]
    fn a_round_stamps_each_phase_once() {
        let p = plan(1, 0);
        let s = next(&CouponEventStatus::default(), &p, Phase::Warming, None, -3);
        assert_eq!((s.started_at.clone(), s.issued), (None, None));
        let s = next(&s, &p, Phase::Live, counts(10, 0, 0), 0);
        assert_eq!(s.started_at, Some(Time(at(0))));
        let s = next(&s, &p, Phase::Live, counts(5, 5, 2), 1);
        assert_eq!(s.started_at, Some(Time(at(0))), "kept");
        let s = next(&s, &p, Phase::SoldOut, counts(0, 10, 4), 2);
        assert_eq!((s.sold_out_at.clone(), s.drained_at.clone()), (Some(Time(at(2))), None));
        let s = next(&s, &p, Phase::Draining, counts(0, 10, 10), 3);
        assert_eq!(s.drained_at, Some(Time(at(3))));
        assert!(is_true(&s, "Drained") && is_true(&s, "SoldOut"));
        let s = next(&s, &p, Phase::Completed, None, 9);
        assert_eq!((s.completed_at.clone(), s.issued, s.persisted), (Some(Time(at(9))), Some(10), Some(10)));
        assert_eq!(phase_entered(&s), None);
    }

    #[test]
    fn the_next_round_starts_from_a_clean_slate() {
        // Round 1 completed with everything stamped.
        let p1 = plan(1, 0);
        let mut s = next(&CouponEventStatus::default(), &p1, Phase::Live, counts(10, 0, 0), 0);
        s = next(&s, &p1, Phase::SoldOut, counts(0, 10, 10), 1);
        s = next(&s, &p1, Phase::Draining, counts(0, 10, 10), 2);
        s = next(&s, &p1, Phase::Completed, None, 3);
        // Round 2 is scheduled a day later: nothing of round 1 stays but the conditions.
        let p2 = plan(2, 86_400);
        let scheduled = next(&s, &p2, Phase::Scheduled, None, 4);
        assert_eq!(scheduled.round, Some(2));
        for (what, value) in [
            ("startedAt", &scheduled.started_at),
            ("soldOutAt", &scheduled.sold_out_at),
            ("drainedAt", &scheduled.drained_at),
            ("completedAt", &scheduled.completed_at),
        ] {
            assert_eq!(value, &None, "{what} carried over");
        }
        assert_eq!((scheduled.issued, scheduled.persisted, scheduled.remaining), (None, None, None));
        assert!(!is_true(&scheduled, "SoldOut") && !is_true(&scheduled, "Drained"));
        // And the patch that writes it clears round 1's fields on the server.
        let patch = scheduled.merge_patch().expect("patch");
        assert!(patch["startedAt"].is_null() && patch["issued"].is_null());
        let warming = next(&scheduled, &p2, Phase::Warming, None, 86_397);
        let live = next(&warming, &p2, Phase::Live, counts(10, 0, 0), 86_400);
        assert_eq!(live.started_at, Some(Time(at(86_400))), "round 2's own start");
    }

    #[test]
    fn a_lost_round_keeps_its_last_counts_and_says_so() {
        let p = plan(1, 0);
        let live = next(&CouponEventStatus::default(), &p, Phase::Live, counts(6, 4, 3), 1);
        let lost = next_status(&Inputs {
            generation: Some(1),
            previous: &live,
            plan: &p,
            decision: Decision { phase: Phase::Live, requeue: COUNT_EVERY },
            observed: Some(Observed { remaining: 10, issued: 0, persisted: 3, admitted: 0, missing_buckets: 0 }),
            state: RoundState::Lost("KeysGone"),
            refusals: &[],
            paused: false,
            now: at(2),
        });
        assert_eq!((lost.phase, lost.issued, lost.persisted, lost.remaining), (Phase::Live, Some(4), Some(3), Some(6)));
        assert!(is_true(&lost, ROUND_STATE_LOST));
        assert!(lost.message.as_deref().is_some_and(|m| m.contains("KeysGone")));
        assert_eq!(lost.completed_at, None);
    }

    #[test]
    fn progressing_and_degraded_follow_the_round() {
        let p = plan(1, 0);
        let scheduled = next(&CouponEventStatus::default(), &p, Phase::Scheduled, None, -10);
        assert!(!is_true(&scheduled, PROGRESSING) && !is_true(&scheduled, DEGRADED));
        let live = next(&scheduled, &p, Phase::Live, counts(5, 5, 5), 1);
        assert!(is_true(&live, PROGRESSING) && !is_true(&live, DEGRADED));
        let done = next(&live, &p, Phase::Completed, None, 9);
        assert!(!is_true(&done, PROGRESSING) && !is_true(&done, DEGRADED));
        let reason = |s: &CouponEventStatus, kind: &str| {
            s.conditions.iter().find(|c| c.type_ == kind).map(|c| c.reason.clone()).unwrap_or_default()
        };
        assert_eq!(reason(&done, PROGRESSING), "RoundCompleted");
        let lost = next_status(&Inputs {
            generation: Some(1),
            previous: &live,
            plan: &p,
            decision: Decision { phase: Phase::Live, requeue: COUNT_EVERY },
            observed: None,
            state: RoundState::Lost("KeysGone"),
            refusals: &[],
            paused: false,
            now: at(2),
        });
        assert!(!is_true(&lost, PROGRESSING) && is_true(&lost, DEGRADED));
        let paused = next_status(&Inputs {
            generation: Some(2),
            previous: &live,
            plan: &p,
            decision: Decision { phase: Phase::Live, requeue: COUNT_EVERY },
            observed: counts(5, 5, 5),
            state: RoundState::Intact,
            refusals: &[],
            paused: true,
            now: at(3),
        });
        assert!(is_true(&paused, PAUSED) && !is_true(&paused, PROGRESSING) && !is_true(&paused, DEGRADED));
        assert_eq!(reason(&paused, PROGRESSING), "Paused");
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_it_flips() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, Some(1), "Live", true, "Open", "", at(0));
        set_condition(&mut conditions, Some(2), "Live", true, "Open", "", at(5));
        assert_eq!(conditions[0].last_transition_time, Time(at(0)));
        set_condition(&mut conditions, Some(2), "Live", false, "Closed", "", at(7));
        assert_eq!((conditions.len(), conditions[0].last_transition_time.clone()), (1, Time(at(7))));
    }
}
