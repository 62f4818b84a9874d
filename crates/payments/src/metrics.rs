//! Payments' metrics (OpenTelemetry; exported when OTLP is configured).

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};

struct Instruments {
    payment_failures: Counter<u64>,
    webhooks: Counter<u64>,
    sync_failures: Counter<u64>,
    reconciliation_findings: Gauge<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = tally_runtime::telemetry::meter();
        Instruments {
            payment_failures: meter
                .u64_counter("tally.payments.payment_failures")
                .with_description("Failed collection attempts, by failure code")
                .build(),
            webhooks: meter
                .u64_counter("tally.payments.webhooks")
                .with_description("Stripe webhook deliveries, by event type and outcome")
                .build(),
            sync_failures: meter
                .u64_counter("tally.payments.sync_failures")
                .with_description("Invoices Stripe refused to mirror (permanent errors)")
                .build(),
            reconciliation_findings: meter
                .u64_gauge("tally.payments.reconciliation_findings")
                .with_description("Findings of the latest completed reconciliation, by kind")
                .build(),
        }
    })
}

/// A failed attempt.
pub fn payment_failed(code: &str) {
    instruments()
        .payment_failures
        .add(1, &[KeyValue::new("code", code.to_owned())]);
}

/// A webhook delivery and what became of it.
pub fn webhook(event_type: &str, outcome: &'static str) {
    instruments().webhooks.add(
        1,
        &[
            KeyValue::new("type", event_type.to_owned()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// An invoice Stripe refused to mirror.
pub fn sync_failed() {
    instruments().sync_failures.add(1, &[]);
}

/// The counts of a completed reconciliation.
pub fn reconciliation(kind: &'static str, count: u64) {
    instruments()
        .reconciliation_findings
        .record(count, &[KeyValue::new("kind", kind)]);
}
