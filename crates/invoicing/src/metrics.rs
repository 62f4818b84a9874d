//! Invoicing's metrics (OpenTelemetry, exported when an OTLP endpoint is set).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

use crate::RunSummary;

/// `tally.invoicing.*`, built once per process.
#[derive(Debug, Clone)]
pub struct Metrics {
    bill_run_seconds: Histogram<f64>,
    invoices: Counter<u64>,
    failures: Counter<u64>,
    refunds_beyond_balance: Counter<u64>,
}

impl Metrics {
    /// The instruments.
    pub fn new() -> Self {
        let meter = tally_runtime::telemetry::meter();
        Self {
            bill_run_seconds: meter
                .f64_histogram("tally.invoicing.bill_run_duration")
                .with_unit("s")
                .with_description("Time of one bill run (all due subscriptions and drafts)")
                .build(),
            invoices: meter
                .u64_counter("tally.invoicing.invoices")
                .with_description(
                    "Invoices handled by bill runs, by outcome (created, updated, finalized)",
                )
                .build(),
            failures: meter
                .u64_counter("tally.invoicing.bill_run_failures")
                .with_description(
                    "Subscriptions or drafts a bill run could not bill (retried next run)",
                )
                .build(),
            refunds_beyond_balance: meter
                .u64_counter("tally.invoicing.refunds_beyond_balance")
                .with_description(
                    "Refunds made outside Tally (e.g. the Stripe dashboard) that exceeded what remained creditable on their invoice",
                )
                .build(),
        }
    }

    /// Counts a refund nobody reserved that did not fit the invoice's balance.
    pub fn refund_beyond_balance(&self) {
        self.refunds_beyond_balance.add(1, &[]);
    }

    /// Records one finished bill run.
    pub fn record(&self, summary: &RunSummary, elapsed: Duration) {
        self.bill_run_seconds.record(elapsed.as_secs_f64(), &[]);
        for (outcome, count) in [
            ("created", summary.invoices_created),
            ("updated", summary.invoices_updated),
            ("finalized", summary.invoices_finalized),
        ] {
            if count > 0 {
                self.invoices
                    .add(count, &[KeyValue::new("outcome", outcome)]);
            }
        }
        if summary.failures > 0 {
            self.failures.add(summary.failures, &[]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
