//! Ingest's counters: kept in memory for `GetIngestStats` and exported through
//! OpenTelemetry (`tally.ingest.*`) for dashboards and alerts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use tally_proto::events::Intake;

/// Counters since the process started.
#[derive(Debug)]
pub struct IngestMetrics {
    started_at: DateTime<Utc>,
    accepted: AtomicU64,
    duplicate: AtomicU64,
    conflict: AtomicU64,
    dead_lettered: AtomicU64,
    rejected_by_rule: Mutex<BTreeMap<String, u64>>,
    events: Counter<u64>,
    rejections: Counter<u64>,
    batch_seconds: Histogram<f64>,
    dead_letters: Counter<u64>,
    relay_lag: Gauge<f64>,
    published_events: Gauge<u64>,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// When counting started.
    pub started_at: DateTime<Utc>,
    /// Accepted events.
    pub accepted: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// Conflicts.
    pub conflict: u64,
    /// Messages dead-lettered by the Pub/Sub intake.
    pub dead_lettered: u64,
    /// Rejections by rule.
    pub rejected_by_rule: BTreeMap<String, u64>,
}

impl IngestMetrics {
    /// Counters starting at `started_at`.
    pub fn new(started_at: DateTime<Utc>) -> Self {
        let meter = tally_runtime::telemetry::meter();
        Self {
            started_at,
            accepted: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            conflict: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            rejected_by_rule: Mutex::new(BTreeMap::new()),
            events: meter
                .u64_counter("tally.ingest.events")
                .with_description("Events ingested, by outcome (accepted, duplicate, conflict, rejected) and intake")
                .build(),
            rejections: meter
                .u64_counter("tally.ingest.rejections")
                .with_description("Violated rules of rejected events, by rule")
                .build(),
            batch_seconds: meter
                .f64_histogram("tally.ingest.batch_duration")
                .with_unit("s")
                .with_description("Time to validate and durably commit one batch, by intake")
                .build(),
            dead_letters: meter
                .u64_counter("tally.ingest.dead_letters")
                .with_description("usage-events messages moved to the dead-letter topic")
                .build(),
            relay_lag: meter
                .f64_gauge("tally.ingest.relay_lag_seconds")
                .with_unit("s")
                .with_description("Age of the oldest accepted batch not yet published on usage-accepted")
                .build(),
            published_events: meter
                .u64_gauge("tally.ingest.published_events")
                .with_description(
                    "Accepted events of the log published on usage-accepted, all time (counted from the database; compare with tally.rating.applied_events)",
                )
                .build(),
        }
    }

    /// Records one committed batch.
    pub fn record_batch(
        &self,
        intake: Intake,
        counts: [u64; 4],
        rules: &[&str],
        elapsed: Duration,
    ) {
        let intake_name = intake_name(intake);
        let [accepted, duplicate, conflict, rejected] = counts;
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.duplicate.fetch_add(duplicate, Ordering::Relaxed);
        self.conflict.fetch_add(conflict, Ordering::Relaxed);
        for (outcome, count) in [
            ("accepted", accepted),
            ("duplicate", duplicate),
            ("conflict", conflict),
            ("rejected", rejected),
        ] {
            if count > 0 {
                self.events.add(
                    count,
                    &[
                        KeyValue::new("outcome", outcome),
                        KeyValue::new("intake", intake_name),
                    ],
                );
            }
        }
        if !rules.is_empty() {
            let mut by_rule = self
                .rejected_by_rule
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            for rule in rules {
                *by_rule.entry((*rule).to_owned()).or_default() += 1;
                self.rejections
                    .add(1, &[KeyValue::new("rule", (*rule).to_owned())]);
            }
        }
        self.batch_seconds.record(
            elapsed.as_secs_f64(),
            &[KeyValue::new("intake", intake_name)],
        );
    }

    /// Records a dead-lettered message.
    pub fn record_dead_letter(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.dead_letters.add(1, &[]);
    }

    /// Records the relay lag.
    pub fn record_relay_lag(&self, seconds: f64) {
        self.relay_lag.record(seconds, &[]);
    }

    /// Records how many accepted events have been published, all time.
    pub fn record_published_events(&self, count: u64) {
        self.published_events.record(count, &[]);
    }

    /// The counters now.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            started_at: self.started_at,
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            conflict: self.conflict.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            rejected_by_rule: self
                .rejected_by_rule
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
        }
    }
}

fn intake_name(intake: Intake) -> &'static str {
    match intake {
        Intake::Grpc => "grpc",
        Intake::Pubsub => "pubsub",
        Intake::Replay => "replay",
        Intake::Unspecified => "unspecified",
    }
}
