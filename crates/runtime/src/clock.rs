//! Time comes from an injected clock (correctness rule 6): production uses the
//! system clock, dev and tests use a [`ManualClock`] that can be driven through
//! months of billing without sleeping.

use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

/// A source of the current instant.
pub trait Clock: Send + Sync + Debug {
    /// The current instant, in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// `Some` when this clock can be moved by hand (dev and test mode).
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
}

/// The clock handle the composition root passes down.
pub type SharedClock = Arc<dyn Clock>;

/// Waits for the next tick of a scheduler loop (bill runs, expiries, dunning):
/// `poll_interval` of wall time, or less when a manual clock is moved, so a
/// test or `tally dev` that advances the clock sees timers fire at once.
pub async fn next_tick(clock: &dyn Clock, poll_interval: std::time::Duration) {
    match clock.as_manual() {
        Some(manual) => {
            let mut moved = manual.subscribe();
            let _ = tokio::time::timeout(poll_interval, moved.changed()).await;
        }
        None => tokio::time::sleep(poll_interval).await,
    }
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same instant, and
/// [`ManualClock::subscribe`] tells schedulers when it moved.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

/// Why a manual clock refused to move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Time never goes backwards: bill runs and idempotency depend on it.
    #[error("the clock cannot go backwards: it is {now} and {requested} was requested")]
    Backwards {
        /// The clock's current instant.
        now: DateTime<Utc>,
        /// The instant that was asked for.
        requested: DateTime<Utc>,
    },
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves the clock forward by `duration` and returns the new instant.
    pub fn advance(&self, duration: Duration) -> Result<DateTime<Utc>, ClockError> {
        self.move_to(|now| now + duration)
    }

    /// Moves the clock to `instant`, which must not be in its past.
    pub fn set(&self, instant: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        self.move_to(|_| instant)
    }

    /// A receiver that is notified each time the clock moves.
    pub fn subscribe(&self) -> watch::Receiver<DateTime<Utc>> {
        self.now.subscribe()
    }

    fn move_to(
        &self,
        target: impl FnOnce(DateTime<Utc>) -> DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ClockError> {
        let mut outcome = Ok(*self.now.borrow());
        self.now.send_if_modified(|now| {
            let requested = target(*now);
            if requested < *now {
                outcome = Err(ClockError::Backwards {
                    now: *now,
                    requested,
                });
                return false;
            }
            outcome = Ok(requested);
            let moved = requested != *now;
            *now = requested;
            moved
        });
        outcome
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_moves_forward_only() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        clock.advance(Duration::days(1)).unwrap();
        assert_eq!(
            shared.now(),
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
        );
        assert!(matches!(
            clock.set(start),
            Err(ClockError::Backwards { .. })
        ));
        assert!(clock.advance(Duration::seconds(-1)).is_err());
        assert_eq!(clock.now(), shared.now());
    }

    #[tokio::test]
    async fn next_tick_wakes_when_a_manual_clock_moves() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let mover = clock.clone();
        let moved = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            mover.advance(Duration::days(1)).unwrap();
        });
        let waited = std::time::Instant::now();
        next_tick(&clock, std::time::Duration::from_secs(30)).await;
        assert!(waited.elapsed() < std::time::Duration::from_secs(5));
        moved.await.unwrap();
        assert_eq!(clock.now(), start + Duration::days(1));
    }
}
