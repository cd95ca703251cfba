//! Keeps the reconcile rate bounded. Every status write, and every change the kubelet
//! (or kwok) makes to an owned Deployment, is a watch event that would start a pass at
//! once; during a spike the counts change every pass, so each pass would start the next
//! one. A pass whose object is unchanged in everything that matters to it (generation,
//! deletion, finalizer, the clock) since the last successful pass is not run before that
//! pass' own requeue falls due. This is the generation predicate of kube's
//! `predicate_filter`, kept per event, without the unstable runtime feature.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What makes a pass necessary whatever its schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub generation: Option<i64>,
    pub deleting: bool,
    pub finalized: bool,
    pub clock_moves: u64,
}

#[derive(Default)]
pub struct Pace {
    passes: Mutex<HashMap<String, (Fingerprint, Instant)>>,
}

impl Pace {
    /// How long to wait before running a pass for `key`, if it need not run now.
    pub fn wait(&self, key: &str, fingerprint: &Fingerprint, now: Instant) -> Option<Duration> {
        let passes = self.passes.lock().ok()?;
        let (last, due) = passes.get(key)?;
        (last == fingerprint && *due > now).then(|| *due - now)
    }

    /// Records a successful pass that asked to be run again after `next`.
    pub fn done(&self, key: &str, fingerprint: Fingerprint, now: Instant, next: Duration) {
        if let Ok(mut passes) = self.passes.lock() {
            passes.insert(key.to_owned(), (fingerprint, now + next));
        }
    }

    /// Forgets `key` (after a failed pass, or once the event is gone).
    pub fn forget(&self, key: &str) {
        if let Ok(mut passes) = self.passes.lock() {
            passes.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(generation: i64) -> Fingerprint {
        Fingerprint { generation: Some(generation), deleting: false, finalized: true, clock_moves: 0 }
    }

    #[test]
    fn an_unchanged_event_waits_for_its_requeue() {
        let pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.wait("ns/a", &print(1), t0), None, "first pass runs");
        pace.done("ns/a", print(1), t0, Duration::from_secs(2));
        // Its own status write comes back as a watch event: not before the requeue.
        assert_eq!(pace.wait("ns/a", &print(1), t0 + Duration::from_millis(50)), Some(Duration::from_millis(1950)));
        assert_eq!(pace.wait("ns/a", &print(1), t0 + Duration::from_secs(2)), None, "due");
        assert_eq!(pace.wait("ns/b", &print(1), t0), None, "another event");
    }

    #[test]
    fn a_spec_change_a_deletion_or_a_clock_move_runs_at_once() {
        let pace = Pace::default();
        let t0 = Instant::now();
        pace.done("ns/a", print(1), t0, Duration::from_secs(3600));
        assert_eq!(pace.wait("ns/a", &print(2), t0), None);
        assert_eq!(pace.wait("ns/a", &Fingerprint { deleting: true, ..print(1) }, t0), None);
        assert_eq!(pace.wait("ns/a", &Fingerprint { clock_moves: 1, ..print(1) }, t0), None);
        pace.forget("ns/a");
        assert_eq!(pace.wait("ns/a", &print(1), t0), None, "after a failure");
    }
}
