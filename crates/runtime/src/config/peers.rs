//! `[peers]`: where a service reaches the others over gRPC when they run as
//! separate processes (`tally serve`). `tally dev` serves everything on one
//! address and points every peer at itself.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// gRPC addresses of the other services (`http://host:port`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// Ingest (rating re-reads the event log through `ReadEvents` when it re-rates).
    pub ingest_url: Option<String>,
    /// Rating (invoicing asks it for `GetUsageCharges`).
    pub rating_url: Option<String>,
    /// Invoicing.
    pub invoicing_url: Option<String>,
    /// A PEM CA certificate trusted for `https://` peers besides the
    /// system's roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl PeersConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let urls = [
            ("peers.ingest_url", &self.ingest_url),
            ("peers.rating_url", &self.rating_url),
            ("peers.invoicing_url", &self.invoicing_url),
        ];
        for (key, url) in urls {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(key, "must start with http:// or https://"));
            }
        }
        Ok(())
    }
}
