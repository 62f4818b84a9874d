//! Connectors' metrics (OpenTelemetry; exported when OTLP is configured).

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

fn orb_events() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        tally_runtime::telemetry::meter()
            .u64_counter("tally.connectors.orb_events")
            .with_description(
                "Accepted events settled by the Orb forwarder, by outcome \
                 (forwarded, rejected, not_mapped)",
            )
            .build()
    })
}

/// `count` events settled with `outcome`.
pub fn orb_events_settled(outcome: &'static str, count: u64) {
    if count > 0 {
        orb_events().add(count, &[KeyValue::new("outcome", outcome)]);
    }
}
