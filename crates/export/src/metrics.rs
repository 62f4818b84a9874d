//! Export's metrics (OpenTelemetry; exported when OTLP is configured). The
//! lag per table is observed from PostgreSQL (`tally.export.lag_seconds`).

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};

fn counter(name: &'static str, description: &'static str) -> Counter<u64> {
    tally_runtime::telemetry::meter()
        .u64_counter(name)
        .with_description(description)
        .build()
}

fn staged() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        counter(
            "tally.export.rows_staged",
            "Warehouse rows staged in PostgreSQL",
        )
    })
}

fn exported() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        counter(
            "tally.export.rows_exported",
            "Rows appended to BigQuery and recorded, by table",
        )
    })
}

fn failed() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        counter(
            "tally.export.round_failures",
            "Export rounds that failed and will be retried, by table",
        )
    })
}

fn stopped() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        counter(
            "tally.export.stopped",
            "Tables stopped on a bug (OUT_OF_RANGE, a refused row): alert on any",
        )
    })
}

fn lag() -> &'static Gauge<f64> {
    static GAUGE: OnceLock<Gauge<f64>> = OnceLock::new();
    GAUGE.get_or_init(|| {
        tally_runtime::telemetry::meter()
            .f64_gauge("tally.export.lag_seconds")
            .with_description(
                "Age of the oldest staged row of a table not yet in BigQuery (0 when none waits)",
            )
            .with_unit("s")
            .build()
    })
}

/// The export lag of `table`.
pub fn export_lag(table: &'static str, seconds: f64) {
    lag().record(seconds, &[KeyValue::new("table", table)]);
}

/// `count` rows staged.
pub fn rows_staged(count: u64) {
    if count > 0 {
        staged().add(count, &[]);
    }
}

/// `count` rows of `table` exported.
pub fn rows_exported(table: &'static str, count: u64) {
    exported().add(count, &[KeyValue::new("table", table)]);
}

/// A round of `table` failed.
pub fn round_failed(table: &'static str) {
    failed().add(1, &[KeyValue::new("table", table)]);
}

/// `table` stopped on a bug.
pub fn table_stopped(table: &'static str) {
    stopped().add(1, &[KeyValue::new("table", table)]);
}
