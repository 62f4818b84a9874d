//! `[payments]`: the payments service's settings (owned by the payments service;
//! documented in `docs/operations.md` and `helm/tally/values.schema.json`).
//!
//! Secrets are not here: the Stripe secret key and the webhook signing secret
//! come only from the `STRIPE_API_KEY` and `STRIPE_WEBHOOK_SECRET` environment
//! variables, so they can never end up in a config file or a config dump.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The payments service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Base URL of the Stripe API (tests point it at a mock server).
    pub stripe_api_base_url: String,
    /// The Stripe API version: the one async-stripe's types are generated for
    /// (`2026-09-30.endive` with async-stripe 1.0.0-rc.10), which it sends on
    /// every call; payments refuses to start with another. The webhook
    /// endpoint in the Stripe dashboard should use the same version.
    pub stripe_api_version: String,
    /// Tries per Stripe call, the first included (1–10); 429, 5xx and
    /// timeouts are retried with the same idempotency key.
    pub stripe_max_attempts: u32,
    /// Backoff before the first retry, doubled per retry.
    pub stripe_retry_base_delay_ms: u64,
    /// Longest backoff between two tries.
    pub stripe_retry_max_delay_ms: u64,
    /// A Stripe call that takes longer is abandoned and retried.
    pub stripe_request_timeout_ms: u64,
    /// Where the Stripe webhook endpoint (`POST /webhooks/stripe`) listens.
    pub webhook_listen_addr: SocketAddr,
    /// Oldest (and furthest in the future) webhook signature timestamp accepted.
    pub webhook_tolerance_seconds: u64,
    /// Days after the first failed attempt at which dunning retries the
    /// payment, strictly increasing, e.g. `[3, 5, 7]`.
    pub dunning_retry_days: Vec<u32>,
    /// Days after the first failed attempt at which dunning gives up and marks
    /// the invoice uncollectible; after the last retry day.
    pub dunning_final_after_days: u32,
    /// Whether giving up also asks invoicing to cancel the subscription.
    pub dunning_cancel_subscription: bool,
    /// How often the dunning scheduler looks for due steps (a manual clock
    /// wakes it at once when moved).
    pub scheduler_poll_interval_seconds: u64,
    /// Length of the windows the periodic reconciliation checks, in hours
    /// (each window is reconciled once it has ended); 0 turns it off.
    pub reconciliation_interval_hours: u32,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            stripe_api_base_url: "https://api.stripe.com".to_owned(),
            stripe_api_version: "2026-09-30.endive".to_owned(),
            stripe_max_attempts: 4,
            stripe_retry_base_delay_ms: 500,
            stripe_retry_max_delay_ms: 8_000,
            stripe_request_timeout_ms: 30_000,
            webhook_listen_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            webhook_tolerance_seconds: 300,
            dunning_retry_days: vec![3, 5, 7],
            dunning_final_after_days: 14,
            dunning_cancel_subscription: false,
            scheduler_poll_interval_seconds: 60,
            reconciliation_interval_hours: 24,
        }
    }
}

impl PaymentsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let base = &self.stripe_api_base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(invalid(
                "payments.stripe_api_base_url",
                "must start with https:// (or http:// for a local mock)",
            ));
        }
        if self.stripe_api_version.trim().is_empty() {
            return Err(invalid("payments.stripe_api_version", "must not be empty"));
        }
        if !(1..=10).contains(&self.stripe_max_attempts) {
            return Err(invalid(
                "payments.stripe_max_attempts",
                "must be between 1 and 10",
            ));
        }
        if self.stripe_retry_max_delay_ms < self.stripe_retry_base_delay_ms {
            return Err(invalid(
                "payments.stripe_retry_max_delay_ms",
                "must be at least payments.stripe_retry_base_delay_ms",
            ));
        }
        if self.stripe_request_timeout_ms == 0 {
            return Err(invalid(
                "payments.stripe_request_timeout_ms",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&self.webhook_tolerance_seconds) {
            return Err(invalid(
                "payments.webhook_tolerance_seconds",
                "must be between 1 and 3600",
            ));
        }
        let mut previous = 0;
        for day in &self.dunning_retry_days {
            if *day <= previous {
                return Err(invalid(
                    "payments.dunning_retry_days",
                    "must be positive and strictly increasing, e.g. [3, 5, 7]",
                ));
            }
            previous = *day;
        }
        if self.dunning_final_after_days <= previous {
            return Err(invalid(
                "payments.dunning_final_after_days",
                "must be after the last of payments.dunning_retry_days",
            ));
        }
        if self.scheduler_poll_interval_seconds == 0 {
            return Err(invalid(
                "payments.scheduler_poll_interval_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_name_the_key() {
        assert!(PaymentsConfig::default().validate().is_ok());
        let cases: [(PaymentsConfig, &str); 4] = [
            (
                PaymentsConfig {
                    dunning_retry_days: vec![3, 3],
                    ..PaymentsConfig::default()
                },
                "payments.dunning_retry_days",
            ),
            (
                PaymentsConfig {
                    dunning_final_after_days: 7,
                    ..PaymentsConfig::default()
                },
                "payments.dunning_final_after_days",
            ),
            (
                PaymentsConfig {
                    stripe_api_base_url: "api.stripe.com".into(),
                    ..PaymentsConfig::default()
                },
                "payments.stripe_api_base_url",
            ),
            (
                PaymentsConfig {
                    stripe_max_attempts: 0,
                    ..PaymentsConfig::default()
                },
                "payments.stripe_max_attempts",
            ),
        ];
        for (config, expected) in cases {
            match config.validate() {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
