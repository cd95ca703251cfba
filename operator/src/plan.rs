//! Which round an event is on and when it opens and closes, with no API calls: from
//! the spec, the last status and the current instant. A one-off event has one round;
//! a daily schedule starts the next round after the previous one completed.

use std::time::Duration;

use couponrush_crds::{CouponEventSpec, CouponEventStatus, Phase};
use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// The round to run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundPlan {
    pub round: u32,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
}

/// The spec's durations, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub warmup: Duration,
    pub teardown_after: Duration,
}

/// A spec the operator cannot run, said so that a marketer can fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{field} {value:?} is not a duration like 30s, 5m or 1h")]
    Duration { field: &'static str, value: String },
    #[error("time zone {0:?} is unknown; use an IANA name such as Asia/Seoul")]
    TimeZone(String),
    #[error("schedule.daily {0:?} is not a time like 10:00")]
    Daily(String),
    #[error("set startTime (a one-off event) or schedule (a round every day)")]
    NoStart,
}

pub fn timing(spec: &CouponEventSpec) -> Result<Timing, SpecError> {
    let parse = |field, value: &str| {
        couponrush_core::duration::parse(value).map_err(|_| SpecError::Duration { field, value: value.to_owned() })
    };
    Ok(Timing { warmup: parse("warmup", &spec.warmup)?, teardown_after: parse("teardownAfter", &spec.teardown_after)? })
}

pub fn plan_round(spec: &CouponEventSpec, status: &CouponEventStatus, now: Timestamp) -> Result<RoundPlan, SpecError> {
    if let Some(start) = &spec.start_time {
        return Ok(RoundPlan { round: 1, starts_at: start.0, ends_at: spec.end_time.as_ref().map(|t| t.0) });
    }
    let schedule = spec.schedule.as_ref().ok_or(SpecError::NoStart)?;
    let zone = TimeZone::get(&schedule.time_zone).map_err(|_| SpecError::TimeZone(schedule.time_zone.clone()))?;
    let daily: Time = schedule.daily.parse().map_err(|_| SpecError::Daily(schedule.daily.clone()))?;
    let open_for = match &schedule.open_for {
        Some(value) => Some(
            couponrush_core::duration::parse(value)
                .map_err(|_| SpecError::Duration { field: "schedule.openFor", value: value.clone() })?,
        ),
        None => None,
    };
    let ends = |starts_at: Timestamp| {
        open_for.and_then(|d| starts_at.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok())
    };
    match (status.round, status.round_starts_at.as_ref()) {
        // A round in progress keeps its instants, whatever the clock says.
        (Some(round), Some(starts_at)) if status.phase != Phase::Completed => {
            Ok(RoundPlan { round, starts_at: starts_at.0, ends_at: ends(starts_at.0) })
        }
        // After a completed round: the next daily opening after it.
        (Some(round), Some(starts_at)) => {
            let after = starts_at.0.max(now);
            let next = next_daily(&zone, daily, after + jiff::SignedDuration::from_secs(1));
            Ok(RoundPlan { round: round + 1, starts_at: next, ends_at: ends(next) })
        }
        _ => {
            let next = next_daily(&zone, daily, now);
            Ok(RoundPlan { round: 1, starts_at: next, ends_at: ends(next) })
        }
    }
}

/// Whether `planned` moves a round whose start the status recorded as `recorded`.
/// `status.roundStartsAt` is a Kubernetes `Time`, stored to the whole second, while a
/// `startTime` may carry milliseconds: the same start read back is `planned` truncated,
/// which is no move. Only a different second is.
pub fn start_moved(recorded: Timestamp, planned: Timestamp) -> bool {
    recorded.as_second() != planned.as_second()
}

/// The first instant at or after `after` whose local time in `zone` is `daily`.
pub fn next_daily(zone: &TimeZone, daily: Time, after: Timestamp) -> Timestamp {
    let local = after.to_zoned(zone.clone());
    let mut date = local.date();
    for _ in 0..3 {
        // `to_zoned` resolves a time skipped or repeated by a DST change to a real instant.
        if let Ok(candidate) = date.to_datetime(daily).to_zoned(zone.clone())
            && candidate.timestamp() >= after
        {
            return candidate.timestamp();
        }
        date = date.tomorrow().unwrap_or(date);
    }
    after
}

#[cfg(test)]
mod start_tests {
    use super::*;

    #[test]
    fn a_start_read_back_to_the_second_has_not_moved() -> anyhow::Result<()> {
        let planned: Timestamp = "2026-12-02T08:28:31.730Z".parse()?;
        let recorded: Timestamp = "2026-12-02T08:28:31Z".parse()?;
        assert!(!start_moved(recorded, planned), "the status' own truncation is no move");
        assert!(!start_moved(planned, planned));
        assert!(start_moved(recorded, "2026-12-02T08:28:32.000Z".parse()?));
        assert!(start_moved(recorded, "2026-12-02T08:28:30.999Z".parse()?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couponrush_crds::Schedule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn spec(json: serde_json::Value) -> CouponEventSpec {
        let mut base = serde_json::json!({"coupon": {"name": "c", "amount": 1, "currency": "KRW"}, "stock": 10});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn a_one_off_event_has_one_round() {
        let spec =
            spec(serde_json::json!({"startTime": "2026-12-01T10:00:00+09:00", "endTime": "2026-12-01T11:00:00+09:00"}));
        let plan = plan_round(&spec, &CouponEventStatus::default(), ts("2026-11-01T00:00:00Z")).expect("plan");
        assert_eq!(
            plan,
            RoundPlan { round: 1, starts_at: ts("2026-12-01T01:00:00Z"), ends_at: Some(ts("2026-12-01T02:00:00Z")) }
        );
    }

    #[test]
    fn daily_rounds_follow_the_time_zone_across_midnight() {
        let spec = spec(serde_json::json!({"schedule": {"daily": "00:30", "timeZone": "Asia/Seoul", "openFor": "1h"}}));
        // 00:40 in Seoul on 2 December: today's 00:30 has passed, so the 3rd.
        let plan = plan_round(&spec, &CouponEventStatus::default(), ts("2026-12-01T15:40:00Z")).expect("plan");
        assert_eq!(plan.round, 1);
        assert_eq!(plan.starts_at, ts("2026-12-02T15:30:00Z"));
        assert_eq!(plan.ends_at, Some(ts("2026-12-02T16:30:00Z")));
        // 00:20 in Seoul: still today.
        let plan = plan_round(&spec, &CouponEventStatus::default(), ts("2026-12-01T15:20:00Z")).expect("plan");
        assert_eq!(plan.starts_at, ts("2026-12-01T15:30:00Z"));
    }

    #[test]
    fn the_next_round_starts_the_day_after_a_completed_one() {
        let spec = spec(serde_json::json!({"schedule": {"daily": "10:00", "timeZone": "Asia/Seoul"}}));
        let status = CouponEventStatus {
            phase: Phase::Completed,
            round: Some(4),
            round_starts_at: Some(KubeTime(ts("2026-12-01T01:00:00Z"))),
            ..CouponEventStatus::default()
        };
        let plan = plan_round(&spec, &status, ts("2026-12-01T01:20:00Z")).expect("plan");
        assert_eq!((plan.round, plan.starts_at), (5, ts("2026-12-02T01:00:00Z")));
        // While a round runs, its start stays put even if the clock passes it.
        let live = CouponEventStatus { phase: Phase::Live, ..status };
        let plan = plan_round(&spec, &live, ts("2026-12-01T01:20:00Z")).expect("plan");
        assert_eq!((plan.round, plan.starts_at), (4, ts("2026-12-01T01:00:00Z")));
    }

    #[test]
    fn a_dst_gap_resolves_to_a_real_instant() {
        // 02:30 does not exist in New York on 8 March 2026.
        let zone = TimeZone::get("America/New_York").expect("zone");
        let next = next_daily(&zone, "02:30".parse().expect("time"), ts("2026-03-08T05:00:00Z"));
        assert_eq!(next, ts("2026-03-08T07:30:00Z"));
    }

    #[test]
    fn bad_specs_say_what_to_fix() {
        let bad_zone = spec(serde_json::json!({"schedule": {"daily": "10:00", "timeZone": "Mars/Olympus"}}));
        assert_eq!(
            plan_round(&bad_zone, &CouponEventStatus::default(), Timestamp::UNIX_EPOCH),
            Err(SpecError::TimeZone("Mars/Olympus".into()))
        );
        let mut bad = spec(serde_json::json!({"startTime": "2026-12-01T10:00:00+09:00"}));
        bad.warmup = "soon".into();
        assert!(matches!(timing(&bad), Err(SpecError::Duration { field: "warmup", .. })));
        let none = CouponEventSpec { start_time: None, schedule: None::<Schedule>, ..bad };
        assert_eq!(plan_round(&none, &CouponEventStatus::default(), Timestamp::UNIX_EPOCH), Err(SpecError::NoStart));
    }
}
