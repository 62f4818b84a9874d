//! `[connectors]`: the connectors service's settings (owned by the connectors
//! service; documented in `docs/operations.md`).
//!
//! The Orb API key is not here: it comes only from the `ORB_API_KEY`
//! environment variable, so it can never end up in a config file or a dump.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The connectors service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// Base URL of the Orb API, without `/v1` (tests point it at a fake).
    pub orb_api_base_url: String,
    /// Most events in one `POST /v1/ingest` (1–500).
    pub orb_batch_events: usize,
    /// Tries of one Orb request, the first included (1–10); 429, 5xx,
    /// timeouts and connection failures are retried with the same body.
    /// When they run out the messages are redelivered by the bus.
    pub orb_max_attempts: u32,
    /// Backoff before the first retry, doubled per retry (when Orb sends no
    /// `retry-after`).
    pub orb_retry_base_delay_ms: u64,
    /// Longest backoff between two tries; also the longest `retry-after`
    /// waited in process (a longer one leaves the batch to redelivery).
    pub orb_retry_max_delay_ms: u64,
    /// An Orb request that takes longer is abandoned and retried.
    pub orb_request_timeout_ms: u64,
    /// Where `tally serve connectors` listens for Orb's webhooks
    /// (`POST /webhooks/orb`); unset, no listener is bound. The signing
    /// secret comes only from `ORB_WEBHOOK_SECRET`.
    pub orb_webhook_listen_addr: Option<SocketAddr>,
    /// Shadow periods that must have matched, the last ones before the
    /// boundary, before a customer can be cut over (1–24).
    pub cutover_matching_periods: u32,
    /// How long after a period boundary a cutover still counts as at the
    /// boundary (1–1440).
    pub cutover_boundary_tolerance_minutes: u32,
}

impl Default for ConnectorsConfig {
    fn default() -> Self {
        Self {
            orb_api_base_url: "https://api.withorb.com".to_owned(),
            orb_batch_events: 100,
            orb_max_attempts: 4,
            orb_retry_base_delay_ms: 500,
            orb_retry_max_delay_ms: 30_000,
            orb_request_timeout_ms: 30_000,
            orb_webhook_listen_addr: None,
            cutover_matching_periods: 2,
            cutover_boundary_tolerance_minutes: 60,
        }
    }
}

impl ConnectorsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let base = &self.orb_api_base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(invalid(
                "connectors.orb_api_base_url",
                "must start with https:// (or http:// for a local fake)",
            ));
        }
        if !(1..=500).contains(&self.orb_batch_events) {
            return Err(invalid(
                "connectors.orb_batch_events",
                "must be between 1 and 500",
            ));
        }
        if !(1..=10).contains(&self.orb_max_attempts) {
            return Err(invalid(
                "connectors.orb_max_attempts",
                "must be between 1 and 10",
            ));
        }
        if self.orb_retry_max_delay_ms < self.orb_retry_base_delay_ms {
            return Err(invalid(
                "connectors.orb_retry_max_delay_ms",
                "must be at least connectors.orb_retry_base_delay_ms",
            ));
        }
        if !(1..=24).contains(&self.cutover_matching_periods) {
            return Err(invalid(
                "connectors.cutover_matching_periods",
                "must be between 1 and 24",
            ));
        }
        if !(1..=1440).contains(&self.cutover_boundary_tolerance_minutes) {
            return Err(invalid(
                "connectors.cutover_boundary_tolerance_minutes",
                "must be between 1 and 1440",
            ));
        }
        if self.orb_request_timeout_ms == 0 {
            return Err(invalid(
                "connectors.orb_request_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
