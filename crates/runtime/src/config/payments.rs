//! `[payments]`: the payments service's settings (owned by the payments service;
//! documented in `docs/operations.md` and `helm/tally/values.schema.json`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The payments service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {}

impl PaymentsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
