//! The operator's time source. Every decision about *when* (which round, Warming, Live,
//! teardown) reads [`Clock::now`], never `Timestamp::now()` directly, so that a test can
//! run a daily event's next round without waiting a day.
//!
//! In production the clock is the system clock: [`Clock::system`] has offset zero and
//! nothing in the binary can change it (there is no flag or environment variable for it).
//! Only code that links the operator as a library (the end-to-end tests) can build a
//! clock with [`Clock::shifted`] and move it with [`Clock::set_offset`]; each move makes
//! the controller look at every event again at once.
//!
//! The offset moves the operator's idea of *now* only. The round instants it writes to
//! Redis are the planned ones, which the issuers compare against Redis `TIME`; a test
//! that shifts the clock must therefore plan rounds whose instants are sensible on the
//! real clock too (the daily-round test runs round 1 a day "early" on a clock set a day
//! back, then sets the offset to zero so that round 2 falls due on both clocks).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::Stream;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    offset_ms: AtomicI64,
    moved: watch::Sender<u64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::shifted(SignedDuration::ZERO)
    }

    /// The system clock moved by `offset` (for tests).
    pub fn shifted(offset: SignedDuration) -> Self {
        let (moved, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { offset_ms: AtomicI64::new(offset.as_millis_i64()), moved }) }
    }

    pub fn now(&self) -> Timestamp {
        let offset = SignedDuration::from_millis(self.inner.offset_ms.load(Ordering::Relaxed));
        Timestamp::now().checked_add(offset).unwrap_or(Timestamp::MAX)
    }

    /// Moves the clock (for tests); the controller re-reconciles every event.
    pub fn set_offset(&self, offset: SignedDuration) {
        self.inner.offset_ms.store(offset.as_millis_i64(), Ordering::Relaxed);
        self.inner.moved.send_modify(|moves| *moves += 1);
    }

    /// How many times the clock was moved: a pass made before a move is stale.
    pub fn moves_so_far(&self) -> u64 {
        *self.inner.moved.borrow()
    }

    /// One item each time the clock is moved.
    pub fn moves(&self) -> impl Stream<Item = ()> + Send + 'static {
        let receiver = self.inner.moved.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            Some(((), receiver))
        })
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

trait AsMillis {
    fn as_millis_i64(&self) -> i64;
}

impl AsMillis for SignedDuration {
    fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.as_millis()).unwrap_or(if self.is_negative() { i64::MIN } else { i64::MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_system_clock_is_not_shifted() {
        let before = Timestamp::now();
        let now = Clock::system().now();
        assert!(now >= before && now.duration_since(before) < SignedDuration::from_secs(5));
    }

    #[tokio::test]
    async fn a_shifted_clock_moves_and_says_so() {
        let clock = Clock::shifted(SignedDuration::from_hours(-24));
        let behind = Timestamp::now().duration_since(clock.now());
        assert!(behind >= SignedDuration::from_hours(24) - SignedDuration::from_secs(5), "{behind:?}");
        let mut moves = Box::pin(clock.moves());
        clock.set_offset(SignedDuration::ZERO);
        let moved = tokio::time::timeout(std::time::Duration::from_secs(5), moves.next()).await;
        assert_eq!(moved.ok().flatten(), Some(()));
        assert!(Timestamp::now().duration_since(clock.now()).abs() < SignedDuration::from_secs(5));
    }
}
