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

/// The ticks of a scheduler loop (bill runs, expiries, dunning): every
/// `poll_interval` of wall time, or sooner when a manual clock moves, so a
/// test or `tally dev` that advances the clock sees timers fire at once.
///
/// Create it before the loop's first round: it listens to the clock from
/// then on, so a move made while a round is running wakes the next
/// [`Ticker::tick`] at once instead of being missed.
#[derive(Debug)]
pub struct Ticker {
    moved: Option<watch::Receiver<DateTime<Utc>>>,
    poll_interval: std::time::Duration,
}

impl Ticker {
    /// Ticks of `clock`, at least every `poll_interval`.
    pub fn new(clock: &dyn Clock, poll_interval: std::time::Duration) -> Self {
        Self {
            moved: clock.as_manual().map(ManualClock::subscribe),
            poll_interval,
        }
    }

    /// Waits for the next tick: `poll_interval`, or until the manual clock
    /// has moved since the previous tick (at once if it already has).
    pub async fn tick(&mut self) {
        self.tick_within(self.poll_interval).await;
    }

    /// [`Ticker::tick`], but after at most `at_most` (a scheduler retrying
    /// soon after a round that left work behind).
    pub async fn tick_within(&mut self, at_most: std::time::Duration) {
        let wait = self.poll_interval.min(at_most);
        match &mut self.moved {
            Some(moved) => {
                let _ = tokio::time::timeout(wait, moved.changed()).await;
            }
            None => tokio::time::sleep(wait).await,
        }
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
    async fn a_tick_wakes_when_a_manual_clock_moves() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let mut ticker = Ticker::new(&clock, std::time::Duration::from_secs(30));
        let mover = clock.clone();
        let moved = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            mover.advance(Duration::days(1)).unwrap();
        });
        let waited = std::time::Instant::now();
        ticker.tick().await;
        assert!(waited.elapsed() < std::time::Duration::from_secs(5));
        moved.await.unwrap();
        assert_eq!(clock.now(), start + Duration::days(1));
    }

    #[tokio::test]
    async fn a_move_during_a_round_is_not_missed() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let mut ticker = Ticker::new(&clock, std::time::Duration::from_secs(30));
        // The clock moves while the scheduler is busy, before it waits.
        clock.advance(Duration::days(1)).unwrap();
        let waited = std::time::Instant::now();
        ticker.tick().await;
        assert!(waited.elapsed() < std::time::Duration::from_secs(5));
    }
}
