//! `[rating]`: the rating service's settings (documented in
//! `docs/operations.md` and `helm/tally/values.schema.json`).

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The rating service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RatingConfig {
    /// Most accepted events the usage consumer rates in one transaction (1–10000).
    pub usage_batch_messages: usize,
    /// Lanes of the usage consumer (1–64): customers are split among them by
    /// hash, each lane rates its own batches in its own transactions, so this
    /// many batches are rated concurrently. Lowered to
    /// `database.max_connections - 1` if needed ([`RatingConfig::usable_lanes`]).
    pub usage_batches_in_flight: usize,
}

impl Default for RatingConfig {
    fn default() -> Self {
        Self {
            usage_batch_messages: 1000,
            usage_batches_in_flight: 8,
        }
    }
}

impl RatingConfig {
    /// The lanes a process with `max_connections` database connections can
    /// run: a lane holds a connection for its transaction and may need a
    /// second one meanwhile (catalog lookups on a cache miss), so at least one
    /// connection stays spare — otherwise lanes wait on each other until the
    /// pool times out.
    pub fn usable_lanes(&self, max_connections: u32) -> usize {
        let spare = usize::try_from(max_connections.saturating_sub(1)).unwrap_or(1);
        self.usage_batches_in_flight.min(spare).max(1)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.usage_batch_messages) {
            return Err(invalid(
                "rating.usage_batch_messages",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=64).contains(&self.usage_batches_in_flight) {
            return Err(invalid(
                "rating.usage_batches_in_flight",
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }
}
