//! Deleting an event whose round still has coupons on their way to MySQL, with no API
//! calls: when to wait, when to re-publish, when to give up.
//!
//! The policy (also in the README): the issuer is removed first, so nothing new is
//! admitted; the consumer and the round's Redis keys stay while `persisted < issued`.
//! The operator waits as long as MySQL gains rows; after [`REPUBLISH_AFTER`] without a
//! new row it re-publishes the winners that have no row (as Draining does), and after
//! [`STALL_LIMIT`] without a new row, or [`DEADLINE`] in all, it gives up with a Warning
//! event naming how many coupons are not in MySQL. If the backends cannot be reached at
//! all for [`UNREACHABLE_LIMIT`], or the backends Secret is gone, it gives up too
//! (Warning event), so that an event whose backends are gone for good, or whose
//! namespace is being deleted, never stays Terminating. The timers live in the operator's memory: a restarted operator starts
//! them again, which only lengthens a drain, never shortens it.

use std::time::{Duration, Instant};

use crate::phase::Observed;

/// No new row for this long: re-publish the coupons MySQL lacks.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(10);
/// No new row for this long: give up.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// A drain never takes longer than this.
pub const DEADLINE: Duration = Duration::from_secs(600);
/// Backends unreachable for this long: give up.
pub const UNREACHABLE_LIMIT: Duration = Duration::from_secs(30);
/// How often a draining deletion looks again.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The backends Secret is gone (as when the namespace is deleted): nothing to reach.
    SecretGone,
    /// Redis or MySQL could not be reached for [`UNREACHABLE_LIMIT`].
    Unreachable,
    /// No new row for [`STALL_LIMIT`].
    Stalled { issued: u32, persisted: u32 },
    /// [`DEADLINE`] passed.
    Deadline { issued: u32, persisted: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every admitted coupon is in MySQL (or the round never held any): clean up.
    Done,
    /// Look again after [`LOOK_EVERY`]; re-publish the missing coupons first if asked.
    Wait {
        republish: bool,
    },
    GiveUp(GiveUp),
}

/// One deletion's drain.
#[derive(Clone, Debug)]
pub struct Drain {
    started: Instant,
    best: Option<u32>,
    progressed_at: Instant,
    republished_at: Option<Instant>,
    unreachable_since: Option<Instant>,
}

impl Drain {
    pub fn new(now: Instant) -> Self {
        Self { started: now, best: None, progressed_at: now, republished_at: None, unreachable_since: None }
    }

    /// The next step, from what the backends hold (`Err` when they could not be read).
    pub fn step(&mut self, seen: Result<Option<Observed>, ()>, now: Instant) -> Step {
        let observed = match seen {
            Err(()) => {
                let since = *self.unreachable_since.get_or_insert(now);
                if now.duration_since(since) >= UNREACHABLE_LIMIT {
                    return Step::GiveUp(GiveUp::Unreachable);
                }
                return Step::Wait { republish: false };
            }
            // Never pre-warmed, or its keys are already gone: nothing to drain.
            Ok(None) => return Step::Done,
            Ok(Some(observed)) => observed,
        };
        self.unreachable_since = None;
        let Observed { issued, persisted, .. } = observed;
        if persisted >= issued {
            return Step::Done;
        }
        if self.best.is_none_or(|best| persisted > best) {
            self.best = Some(persisted);
            self.progressed_at = now;
        }
        if now.duration_since(self.started) >= DEADLINE {
            return Step::GiveUp(GiveUp::Deadline { issued, persisted });
        }
        let idle = now.duration_since(self.progressed_at);
        if idle >= STALL_LIMIT {
            return Step::GiveUp(GiveUp::Stalled { issued, persisted });
        }
        let republish =
            idle >= REPUBLISH_AFTER && self.republished_at.is_none_or(|at| now.duration_since(at) >= REPUBLISH_AFTER);
        if republish {
            self.republished_at = Some(now);
        }
        Step::Wait { republish }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(issued: u32, persisted: u32) -> Result<Option<Observed>, ()> {
        Ok(Some(Observed { remaining: 0, issued, persisted, admitted: issued, missing_buckets: 0 }))
    }

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn waits_while_rows_arrive_then_cleans_up() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0);
        assert_eq!(drain.step(seen(300, 10), t0), Step::Wait { republish: false });
        // Slow but steady progress keeps it waiting, past what a stall would allow.
        for i in 1..=100u32 {
            let step = drain.step(seen(300, 10 + i), t0 + s(u64::from(i)));
            assert_eq!(step, Step::Wait { republish: false }, "at {i} s");
        }
        assert_eq!(drain.step(seen(300, 300), t0 + s(101)), Step::Done);
    }

    #[test]
    fn nothing_to_drain_is_done_at_once() {
        let t0 = Instant::now();
        assert_eq!(Drain::new(t0).step(Ok(None), t0), Step::Done);
        assert_eq!(Drain::new(t0).step(seen(5, 5), t0), Step::Done);
    }

    #[test]
    fn a_stall_republishes_then_gives_up() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0);
        assert_eq!(drain.step(seen(10, 4), t0), Step::Wait { republish: false });
        assert_eq!(drain.step(seen(10, 4), t0 + s(10)), Step::Wait { republish: true });
        assert_eq!(drain.step(seen(10, 4), t0 + s(11)), Step::Wait { republish: false }, "not every pass");
        assert_eq!(drain.step(seen(10, 4), t0 + s(20)), Step::Wait { republish: true });
        assert_eq!(drain.step(seen(10, 4), t0 + s(60)), Step::GiveUp(GiveUp::Stalled { issued: 10, persisted: 4 }));
    }

    #[test]
    fn the_deadline_bounds_even_a_slow_drain() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0);
        let mut persisted = 0;
        let mut at = t0;
        while at < t0 + DEADLINE {
            assert!(matches!(drain.step(seen(1_000_000, persisted), at), Step::Wait { .. }));
            persisted += 1;
            at += s(5);
        }
        assert!(matches!(drain.step(seen(1_000_000, persisted), at), Step::GiveUp(GiveUp::Deadline { .. })));
    }

    #[test]
    fn unreachable_backends_give_up_within_the_limit() {
        let t0 = Instant::now();
        let mut drain = Drain::new(t0);
        assert_eq!(drain.step(Err(()), t0), Step::Wait { republish: false });
        assert_eq!(drain.step(Err(()), t0 + s(29)), Step::Wait { republish: false });
        assert_eq!(drain.step(Err(()), t0 + UNREACHABLE_LIMIT), Step::GiveUp(GiveUp::Unreachable));
        // Reachable again in between resets the timer.
        let mut drain = Drain::new(t0);
        drain.step(Err(()), t0);
        drain.step(seen(10, 5), t0 + s(20));
        assert_eq!(drain.step(Err(()), t0 + s(40)), Step::Wait { republish: false });
    }
}
