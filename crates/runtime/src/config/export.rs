//! `[export]`: the export service's settings (owned by the export service;
//! documented in `docs/operations.md`). Export is off unless `project_id` is
//! set: `tally dev` and a cluster without a warehouse need nothing.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The export service (Tally's facts into BigQuery).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// The Google Cloud project of the dataset; unset, nothing is exported.
    pub project_id: Option<String>,
    /// The dataset the tables are written to (created when missing).
    pub dataset: String,
    /// BigQuery location of the dataset when export creates it (`US`, `EU`, a region).
    pub location: String,
    /// BigQuery's REST endpoint (an emulator: `http://127.0.0.1:9050`);
    /// set, requests are anonymous. Default: Google's.
    pub rest_endpoint: Option<String>,
    /// The Storage Write API's gRPC endpoint (an emulator:
    /// `http://127.0.0.1:9060`); set, requests are anonymous. Default: Google's.
    pub grpc_endpoint: Option<String>,
    /// Most rows in one append (1–10000; an append stays under 10 MB).
    pub batch_rows: usize,
    /// How often a table with nothing to export is looked at again.
    pub poll_interval_ms: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            project_id: None,
            dataset: "tally".to_owned(),
            location: "US".to_owned(),
            rest_endpoint: None,
            grpc_endpoint: None,
            batch_rows: 500,
            poll_interval_ms: 1000,
        }
    }
}

impl ExportConfig {
    /// Whether a warehouse is configured.
    pub fn enabled(&self) -> bool {
        self.project_id.as_deref().is_some_and(|id| !id.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let identifier = |value: &str| {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if let Some(project) = &self.project_id
            && !project.is_empty()
            && !identifier(project)
        {
            return Err(invalid(
                "export.project_id",
                "must be a Google Cloud project id (letters, digits, '-', '_')",
            ));
        }
        if !identifier(&self.dataset) || self.dataset.contains('-') {
            return Err(invalid(
                "export.dataset",
                "must be a BigQuery dataset id (letters, digits, '_')",
            ));
        }
        for (key, endpoint) in [
            ("export.rest_endpoint", &self.rest_endpoint),
            ("export.grpc_endpoint", &self.grpc_endpoint),
        ] {
            if let Some(url) = endpoint
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(key, "must start with http:// or https://"));
            }
        }
        if !(1..=10_000).contains(&self.batch_rows) {
            return Err(invalid("export.batch_rows", "must be between 1 and 10000"));
        }
        if self.poll_interval_ms == 0 {
            return Err(invalid("export.poll_interval_ms", "must be at least 1"));
        }
        Ok(())
    }
}
