//! Id generation. Ids are prefixed and sortable by creation time (`cus_…`,
//! `inv_…`): a UUIDv7 built from the injected clock, so ids minted under a
//! manual clock still sort in the order the test drove time.
//!
//! A generator makes only the body; the id type brings its prefix
//! ([`PrefixedId::PREFIX`]), so a service mints `ids.mint::<InvoiceId>()` and
//! never spells a prefix: there is no way to mint an id from a string prefix
//! (and `.ci/architecture-check` refuses a string-prefix `new_id` call in crates/).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_domain::ids::{IdBody, PrefixedId};
use uuid::{Timestamp, Uuid};

use crate::clock::SharedClock;

/// Makes the bodies of new ids (what follows the prefix).
pub trait IdGenerator: Send + Sync + Debug {
    /// A new, unique body, ordered by creation time. Services call
    /// [`mint`](dyn IdGenerator::mint), which puts the type's prefix before it.
    fn new_body(&self) -> IdBody;
}

impl dyn IdGenerator + '_ {
    /// A new id of type `T`, e.g. `ids.mint::<InvoiceId>()` gives `inv_0192f0c1…`.
    pub fn mint<T: PrefixedId>(&self) -> T {
        T::with_body(&self.new_body())
    }
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
    fn new_body(&self) -> IdBody {
        let now = self.clock.now();
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        let timestamp =
            Timestamp::from_unix(uuid::NoContext, seconds, now.timestamp_subsec_nanos());
        IdBody::hex(Uuid::new_v7(timestamp).as_u128())
    }
}

/// Predictable ids for tests: `cus_000001`, `sub_000002`, … (one counter for all types).
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdGenerator for SequentialIds {
    fn new_body(&self) -> IdBody {
        IdBody::sequence(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{Duration, TimeZone, Utc};
    use tally_domain::ids::{CustomerId, InvoiceId, SubscriptionId};

    #[test]
    fn clock_ids_sort_by_manual_time() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let ids: SharedIdGenerator = Arc::new(ClockIds::new(Arc::new(clock.clone())));
        let first = ids.mint::<InvoiceId>();
        clock.advance(Duration::days(40)).unwrap();
        let second = ids.mint::<InvoiceId>();
        assert!(first.as_str().starts_with("inv_") && first.as_str().len() == 4 + 32);
        assert!(first < second);
    }

    #[test]
    fn clock_ids_body_is_the_uuid_in_simple_hex() {
        let uuid = Uuid::new_v7(Timestamp::from_unix(uuid::NoContext, 1_767_225_600, 5));
        assert_eq!(
            IdBody::hex(uuid.as_u128()).as_str(),
            uuid.simple().to_string()
        );
    }

    #[test]
    fn sequential_ids_are_predictable() {
        let ids: SharedIdGenerator = Arc::new(SequentialIds::default());
        assert_eq!(ids.mint::<CustomerId>().as_str(), "cus_000001");
        assert_eq!(ids.mint::<SubscriptionId>().as_str(), "sub_000002");
    }
}
