//! `[invoicing]`: the invoicing service's settings (owned by the invoicing service;
//! documented in `docs/operations.md` and `helm/tally/values.schema.json`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The invoicing service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InvoicingConfig {
    /// Hours a draft invoice stays open after its period ends (late usage
    /// updates it) before it is finalized. 0 finalizes at once.
    pub grace_period_hours: u32,
    /// How far back (days) a subscription may start or change.
    pub backdate_window_days: u32,
    /// Days after its end a billed period's usage is rechecked; a change
    /// becomes an adjustment line on the next invoice (keep it at least
    /// `ingest.backfill_window_days`). 0 disables late-usage adjustments.
    pub late_usage_lookback_days: u32,
    /// Minutes (service clock) between two compositions of a draft while its
    /// grace period runs (late usage); 0 composes drafts on every bill run.
    pub draft_refresh_minutes: u32,
    /// Wall-clock seconds between bill runs (a manual clock wakes the loop at
    /// once when it moves).
    pub bill_run_interval_seconds: u64,
    /// Due subscriptions the bill run reads per query (each is billed in its own transaction).
    pub bill_run_batch_size: u32,
    /// Subscriptions billed at once (each in its own transaction).
    pub bill_run_concurrency: u32,
    /// Prefix of invoice numbers (`<prefix>-000042`).
    pub invoice_number_prefix: String,
    /// Prefix of credit-note numbers (`<prefix>-000007`).
    pub credit_note_number_prefix: String,
    /// Whether a failed payment moves the subscription to past_due.
    pub past_due_on_payment_failure: bool,
}

impl Default for InvoicingConfig {
    fn default() -> Self {
        Self {
            grace_period_hours: 24,
            backdate_window_days: 30,
            draft_refresh_minutes: 60,
            late_usage_lookback_days: 35,
            bill_run_interval_seconds: 60,
            bill_run_batch_size: 100,
            bill_run_concurrency: 8,
            invoice_number_prefix: "TALLY".into(),
            credit_note_number_prefix: "TALLY-CN".into(),
            past_due_on_payment_failure: true,
        }
    }
}

impl InvoicingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        if self.grace_period_hours > 24 * 31 {
            return Err(invalid(
                "invoicing.grace_period_hours",
                "must be at most 744 (31 days)",
            ));
        }
        if self.backdate_window_days > 366 {
            return Err(invalid(
                "invoicing.backdate_window_days",
                "must be at most 366",
            ));
        }
        if self.late_usage_lookback_days > 366 {
            return Err(invalid(
                "invoicing.late_usage_lookback_days",
                "must be at most 366",
            ));
        }
        if self.draft_refresh_minutes > 24 * 60 {
            return Err(invalid(
                "invoicing.draft_refresh_minutes",
                "must be at most 1440 (a day)",
            ));
        }
        if self.bill_run_interval_seconds == 0 {
            return Err(invalid(
                "invoicing.bill_run_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.bill_run_batch_size == 0 || self.bill_run_batch_size > 10_000 {
            return Err(invalid(
                "invoicing.bill_run_batch_size",
                "must be between 1 and 10000",
            ));
        }
        if self.bill_run_concurrency == 0 || self.bill_run_concurrency > 64 {
            return Err(invalid(
                "invoicing.bill_run_concurrency",
                "must be between 1 and 64",
            ));
        }
        for (key, prefix) in [
            (
                "invoicing.invoice_number_prefix",
                &self.invoice_number_prefix,
            ),
            (
                "invoicing.credit_note_number_prefix",
                &self.credit_note_number_prefix,
            ),
        ] {
            let valid = !prefix.is_empty()
                && prefix.len() <= 20
                && prefix
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '-');
            if !valid {
                return Err(invalid(key, "must be 1-20 ASCII letters, digits or '-'"));
            }
        }
        if self.invoice_number_prefix == self.credit_note_number_prefix {
            return Err(invalid(
                "invoicing.credit_note_number_prefix",
                "must differ from invoicing.invoice_number_prefix",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_key(config: InvoicingConfig) -> &'static str {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(InvoicingConfig::default().validate().is_ok());
        let bad_prefix = InvoicingConfig {
            invoice_number_prefix: "INV 2025".into(),
            ..InvoicingConfig::default()
        };
        assert_eq!(refused_key(bad_prefix), "invoicing.invoice_number_prefix");
        let same_prefixes = InvoicingConfig {
            credit_note_number_prefix: "TALLY".into(),
            ..InvoicingConfig::default()
        };
        assert_eq!(
            refused_key(same_prefixes),
            "invoicing.credit_note_number_prefix"
        );
        let no_interval = InvoicingConfig {
            bill_run_interval_seconds: 0,
            ..InvoicingConfig::default()
        };
        assert_eq!(
            refused_key(no_interval),
            "invoicing.bill_run_interval_seconds"
        );
    }
}
