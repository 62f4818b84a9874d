//! Id generation. Ids are prefixed and sortable by creation time (`cus_…`,
//! `inv_…`): a UUIDv7 built from the injected clock, so ids minted under a
//! manual clock still sort in the order the test drove time.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::{Timestamp, Uuid};

use crate::clock::SharedClock;

/// Mints new ids with a type prefix.
pub trait IdGenerator: Send + Sync + Debug {
    /// A new id such as `cus_0192f0c1a3b87c2e9d4f5a6b7c8d9e0f`.
    fn new_id(&self, prefix: &str) -> String;
}

/// The id generator handle the composition root passes down.
pub type SharedIdGenerator = Arc<dyn IdGenerator>;

/// Time-ordered random ids (UUIDv7 in lowercase hex) stamped with the clock.
#[derive(Debug, Clone)]
pub struct ClockIds {
    clock: SharedClock,
}

impl ClockIds {
    /// Ids whose time part comes from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl IdGenerator for ClockIds {
    fn new_id(&self, prefix: &str) -> String {
        let now = self.clock.now();
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        let timestamp =
            Timestamp::from_unix(uuid::NoContext, seconds, now.timestamp_subsec_nanos());
        format!("{prefix}_{}", Uuid::new_v7(timestamp).simple())
    }
}

/// Predictable ids for tests: `cus_000001`, `cus_000002`, … (one counter for all prefixes).
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdGenerator for SequentialIds {
    fn new_id(&self, prefix: &str) -> String {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}_{number:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn clock_ids_sort_by_manual_time() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let ids = ClockIds::new(Arc::new(clock.clone()));
        let first = ids.new_id("inv");
        clock.advance(Duration::days(40)).unwrap();
        let second = ids.new_id("inv");
        assert!(first.starts_with("inv_") && first.len() == 4 + 32);
        assert!(first < second);
    }

    #[test]
    fn sequential_ids_are_predictable() {
        let ids = SequentialIds::default();
        assert_eq!(ids.new_id("cus"), "cus_000001");
        assert_eq!(ids.new_id("sub"), "sub_000002");
    }
}
