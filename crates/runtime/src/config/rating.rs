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
    /// Usage batches rated concurrently, each in its own transaction (1–64).
    pub usage_batches_in_flight: usize,
}

impl Default for RatingConfig {
    fn default() -> Self {
        Self {
            usage_batch_messages: 500,
            usage_batches_in_flight: 4,
        }
    }
}

impl RatingConfig {
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
