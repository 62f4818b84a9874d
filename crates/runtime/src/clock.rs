//! Time comes from an injected clock (correctness rule 6): production uses the
//! system clock, dev and tests use a [`ManualClock`] that can be driven through
//! months of billing without sleeping.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

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

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same instant.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
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
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `duration` and returns the new instant.
    pub fn advance(&self, duration: Duration) -> Result<DateTime<Utc>, ClockError> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let requested = *now + duration;
        if requested < *now {
            return Err(ClockError::Backwards {
                now: *now,
                requested,
            });
        }
        *now = requested;
        Ok(requested)
    }

    /// Moves the clock to `instant`, which must not be in its past.
    pub fn set(&self, instant: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if instant < *now {
            return Err(ClockError::Backwards {
                now: *now,
                requested: instant,
            });
        }
        *now = instant;
        Ok(instant)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
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
}
