//! Exactly once at each step: a redelivered message stages nothing; an
//! append repeated after a crash (before its PostgreSQL commit) is marked,
//! not written twice; a gap in the stream (OUT_OF_RANGE) stops the table.

use tally_export::bigquery::rows;
use tally_export::bigquery::write::Appended;
use tally_export::exporter::store;
use tally_export::tables::USAGE_EVENTS;
use tally_export::{ExportApi, Round};
use tally_proto::export::GetExportStatusRequest;
use tally_proto::export::export_service_server::ExportService;

use crate::support::*;

#[tokio::test]
async fn redelivered_messages_add_no_row() {
    let h = harness().await;
    for sequence in 1..=5u64 {
        let event = usage("cus_a", &format!("e{sequence}"), sequence, 10);
        h.stage_usage(&format!("uacc_{sequence}"), &event).await;
        // The bus delivers it again, and a producer republishes it under another id.
        h.stage_usage(&format!("uacc_{sequence}"), &event).await;
        h.stage_usage(&format!("again_{sequence}"), &event).await;
    }
    h.drain(USAGE_EVENTS).await;
    h.stage_usage("uacc_3", &usage("cus_a", "e3", 3, 10)).await;
    h.drain(USAGE_EVENTS).await;
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("5")
    );
}

#[tokio::test]
async fn an_append_repeated_after_a_crash_before_the_commit_is_not_written_twice() {
    let h = harness().await;
    for sequence in 1..=10u64 {
        h.stage_usage(
            &format!("uacc_{sequence}"),
            &usage("cus_a", &format!("e{sequence}"), sequence, 1),
        )
        .await;
    }
    let exporter = h.export.exporter(USAGE_EVENTS).unwrap();
    // A first round creates the stream and exports the first batch (7 rows).
    assert_eq!(exporter.round().await.unwrap(), Round::Exported(7));
    // The "crashed" process: it claimed and appended the next batch, then died
    // before recording it.
    let pool = &h.db.pool;
    let batch = store::pending_or_claim(pool, "usage_events", 7)
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    let stream = store::state(pool, "usage_events")
        .await
        .unwrap()
        .stream_name
        .unwrap();
    let serialized = batch
        .iter()
        .map(|row| rows::encode(&USAGE_EVENTS, row.data.as_object().unwrap()).unwrap())
        .collect();
    let writer = &h.export.warehouse().unwrap().writer;
    assert_eq!(
        writer
            .append(&stream, &USAGE_EVENTS, 7, serialized)
            .await
            .unwrap(),
        Appended::Written
    );
    // The restarted exporter sends the same batch at the same offset: BigQuery
    // answers ALREADY_EXISTS and the batch is marked.
    assert_eq!(exporter.round().await.unwrap(), Round::Exported(3));
    assert_eq!(exporter.round().await.unwrap(), Round::Idle);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("10")
    );
    let state = store::state(pool, "usage_events").await.unwrap();
    assert_eq!(state.next_offset, 10);
}

#[tokio::test]
async fn a_gap_in_the_stream_stops_the_table_and_status_says_why() {
    let h = harness().await;
    h.stage_usage("uacc_1", &usage("cus_a", "e1", 1, 1)).await;
    h.drain(USAGE_EVENTS).await;
    // A bug: the bookkeeping runs ahead of the stream.
    sqlx::query(
        "UPDATE export.streams SET next_offset = next_offset + 5 WHERE table_name = 'usage_events'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    h.stage_usage("uacc_2", &usage("cus_a", "e2", 2, 1)).await;
    let exporter = h.export.exporter(USAGE_EVENTS).unwrap();
    assert_eq!(exporter.round().await.unwrap(), Round::Stopped);
    assert_eq!(exporter.round().await.unwrap(), Round::Stopped);
    let clock: tally_runtime::SharedClock =
        std::sync::Arc::new(tally_runtime::ManualClock::new(at("2026-11-20T00:05:00Z")));
    let api = ExportApi::new(
        h.db.pool.clone(),
        clock,
        Some(format!("tally-test.{}", h.config.dataset)),
    );
    let status = api
        .get_export_status(tonic::Request::new(GetExportStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(status.enabled);
    let usage = status
        .tables
        .iter()
        .find(|t| t.table == "usage_events")
        .unwrap();
    assert!(usage.stopped);
    assert!(
        usage.last_error.contains("OUT_OF_RANGE"),
        "{}",
        usage.last_error
    );
    assert_eq!(usage.rows_exported, 1);
    assert_eq!(usage.rows_waiting, 1);
    assert_eq!(usage.lag.unwrap().seconds, 300);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_finalized_stream_is_replaced_and_a_batch_it_holds_is_not_sent_again() {
    let h = harness().await;
    for sequence in 1..=10u64 {
        h.stage_usage(
            &format!("uacc_{sequence}"),
            &usage("cus_a", &format!("e{sequence}"), sequence, 1),
        )
        .await;
    }
    let exporter = h.export.exporter(USAGE_EVENTS).unwrap();
    assert_eq!(exporter.round().await.unwrap(), Round::Exported(7));
    // A process appended the next batch and died before recording it; then
    // the stream was finalized (by an operator, or BigQuery).
    let pool = &h.db.pool;
    let batch = store::pending_or_claim(pool, "usage_events", 7)
        .await
        .unwrap();
    let stream = store::state(pool, "usage_events")
        .await
        .unwrap()
        .stream_name
        .unwrap();
    let serialized = batch
        .iter()
        .map(|row| rows::encode(&USAGE_EVENTS, row.data.as_object().unwrap()).unwrap())
        .collect();
    let writer = &h.export.warehouse().unwrap().writer;
    writer
        .append(&stream, &USAGE_EVENTS, 7, serialized)
        .await
        .unwrap();
    assert_eq!(writer.finalize(&stream).await.unwrap(), 10);
    // The round finds the stream closed: its 10 rows include the batch, which
    // is marked; the table moves to a new stream.
    exporter.round().await.unwrap();
    for sequence in 11..=12u64 {
        h.stage_usage(
            &format!("uacc_{sequence}"),
            &usage("cus_a", &format!("e{sequence}"), sequence, 1),
        )
        .await;
    }
    h.drain(USAGE_EVENTS).await;
    let state = store::state(pool, "usage_events").await.unwrap();
    assert_ne!(state.stream_name.as_deref(), Some(stream.as_str()));
    assert_eq!(state.next_offset, 2);
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("12")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(DISTINCT event_id) FROM `{dataset}.usage_events`")
            .await
            .as_deref(),
        Some("12")
    );
}
