//! The export benchmark (`bench/export.sh`; ignored in `cargo test`):
//! `usage_events` rows per second into the emulator through the service —
//! staged from `usage-accepted` messages, then claimed, appended and marked
//! by the table's exporter — against a plain client appending the same rows
//! (the same generated Storage Write client, same batch size, one committed
//! stream, no PostgreSQL) into a dataset of its own, in the same run. The
//! plain client runs before and after the service, to show the emulator's
//! drift as its DuckDB fills.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tally_bus::consumer::MessageHandler;
use tally_bus::{InProcessBus, Message};
use tally_export::bigquery::rows;
use tally_export::bigquery::write::Appended;
use tally_export::tables::USAGE_EVENTS;
use tally_export::{Export, ExportDeps, Round, Target, Warehouse};
use tally_proto::events::UsageAccepted;
use tally_runtime::{ManualClock, SharedClock};

use crate::support::*;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn per_second(rows: usize, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let rows = rows as f64;
    rows / elapsed.as_secs_f64()
}

/// Appends `encoded` to a fresh dataset's `usage_events` in batches of
/// `batch`, as a plain client does; how long it took.
async fn plain_client(encoded: &[Vec<u8>], batch: usize) -> Duration {
    let mut config = config().await;
    config.batch_rows = batch;
    let warehouse = Warehouse::new(Target::from_config(&config).unwrap()).unwrap();
    warehouse.set_up().await.unwrap();
    let started = Instant::now();
    let stream = warehouse
        .writer
        .create_committed_stream(&USAGE_EVENTS)
        .await
        .unwrap();
    let mut offset = 0i64;
    for chunk in encoded.chunks(batch) {
        let appended = warehouse
            .writer
            .append(&stream, &USAGE_EVENTS, offset, chunk.to_vec())
            .await
            .unwrap();
        assert!(matches!(appended, Appended::Written), "{appended:?}");
        offset += i64::try_from(chunk.len()).unwrap();
    }
    let elapsed = started.elapsed();
    let count = warehouse
        .rest
        .query("SELECT COUNT(*) FROM `{dataset}.usage_events`")
        .await
        .unwrap();
    assert_eq!(
        count[0][0].as_deref(),
        Some(encoded.len().to_string().as_str())
    );
    elapsed
}

#[tokio::test]
#[ignore = "benchmark: bench/export.sh"]
async fn throughput() {
    let total = env_number("EXPORT_BENCH_ROWS", 20_000);
    let batch = env_number("EXPORT_BENCH_BATCH", 500);
    let _turn = emulator_turn().await;
    let db = tally_testkit::postgres::database().await;
    let now = at("2026-11-20T00:00:00Z");
    let events: Vec<UsageAccepted> = (1..=total as u64)
        .map(|n| usage(&format!("cus_{}", n % 50), &format!("e{n}"), n, n))
        .collect();
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(|event| {
            let row = tally_export::staging::usage_row(event, now).unwrap();
            rows::encode(&USAGE_EVENTS, &row.data).unwrap()
        })
        .collect();

    let plain_before = plain_client(&encoded, batch).await;

    let mut config = config().await;
    config.batch_rows = batch;
    let clock: SharedClock = Arc::new(ManualClock::new(now));
    let export = Export::start(ExportDeps {
        pool: db.pool.clone(),
        bus: Arc::new(InProcessBus::new()),
        clock,
        config,
        max_delivery_attempts: 5,
    })
    .await
    .unwrap();
    export.warehouse().unwrap().set_up().await.unwrap();
    let handler = tally_export::UsageAcceptedHandler(
        export.stager(tally_export::USAGE_ACCEPTED_SUBSCRIPTION),
    );
    let started = Instant::now();
    for event in &events {
        let message = Message::new("tally.events.v1.UsageAccepted", 1, event.encode_to_vec())
            .with_id(format!("uacc_{}", event.sequence_number));
        handler.handle(&message, 1).await.unwrap();
    }
    let staged = started.elapsed();
    let exporter = export.exporter(USAGE_EVENTS).unwrap();
    let started = Instant::now();
    loop {
        match exporter.round().await.unwrap() {
            Round::Idle => break,
            Round::Exported(_) => {}
            Round::Stopped => panic!("usage_events stopped"),
        }
    }
    let exported = started.elapsed();
    let count = export
        .warehouse()
        .unwrap()
        .rest
        .query("SELECT COUNT(*) FROM `{dataset}.usage_events`")
        .await
        .unwrap();
    assert_eq!(count[0][0].as_deref(), Some(total.to_string().as_str()));

    let plain_after = plain_client(&encoded, batch).await;

    let plain = (plain_before + plain_after) / 2;
    println!("rows {total}, batch {batch}");
    println!(
        "plain client before: {:.2} s, {:.0} rows/s",
        plain_before.as_secs_f64(),
        per_second(total, plain_before)
    );
    println!(
        "plain client after: {:.2} s, {:.0} rows/s",
        plain_after.as_secs_f64(),
        per_second(total, plain_after)
    );
    println!(
        "service staging (usage-accepted -> export.rows): {:.2} s, {:.0} rows/s",
        staged.as_secs_f64(),
        per_second(total, staged)
    );
    println!(
        "service export (claim, append, mark): {:.2} s, {:.0} rows/s",
        exported.as_secs_f64(),
        per_second(total, exported)
    );
    println!(
        "service staging then export: {:.2} s, {:.0} rows/s",
        (staged + exported).as_secs_f64(),
        per_second(total, staged + exported)
    );
    println!(
        "ratio service export / plain client (mean of both runs): {:.2}x (staging then export: {:.2}x)",
        per_second(total, exported) / per_second(total, plain),
        per_second(total, staged + exported) / per_second(total, plain)
    );
}
