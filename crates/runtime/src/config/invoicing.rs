//! `[invoicing]`: the invoicing service's settings (owned by the invoicing service;
//! documented in `docs/operations.md` and `helm/tally/values.schema.json`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The invoicing service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InvoicingConfig {}

impl InvoicingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
