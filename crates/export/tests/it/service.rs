//! The service as `tally serve export` runs it: its consumers on the bus, the
//! dataset set up in the background, one exporter loop per table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tally_bus::{InProcessBus, Message, SharedBus, topics};
use tally_export::{Export, ExportApi, ExportDeps};
use tally_proto::export::GetExportStatusRequest;
use tally_proto::export::export_service_server::ExportService;
use tally_runtime::{SharedClock, Shutdown, SystemClock};

use crate::support::{config, finalized, invoice, usage};

#[tokio::test]
async fn published_facts_reach_bigquery_through_the_running_service() {
    let _turn = crate::support::emulator_turn().await;
    let db = tally_testkit::postgres::database().await;
    let config = config().await;
    let bus: SharedBus = Arc::new(InProcessBus::new());
    let clock: SharedClock = Arc::new(SystemClock);
    let export = Export::start(ExportDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(&bus),
        clock: Arc::clone(&clock),
        config: config.clone(),
        max_delivery_attempts: 5,
    })
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    let tasks = export.spawn_background(&shutdown);
    for sequence in 1..=30u64 {
        let message = Message::new(
            "tally.events.v1.UsageAccepted",
            1,
            usage("cus_a", &format!("e{sequence}"), sequence, 5).encode_to_vec(),
        )
        .with_id(format!("uacc_{sequence}"));
        // Every message published twice: the bus delivers at least once.
        bus.publish(topics::USAGE_ACCEPTED, message.clone())
            .await
            .unwrap();
        bus.publish(topics::USAGE_ACCEPTED, message).await.unwrap();
    }
    let event = finalized("ievt_1", &invoice("inv_1", "cus_a", &["10.00"], "10.00"));
    let message =
        Message::new("tally.events.v1.InvoiceEvent", 1, event.encode_to_vec()).with_id("ievt_1");
    bus.publish(topics::INVOICE_EVENTS, message).await.unwrap();

    let api = ExportApi::new(
        db.pool.clone(),
        clock,
        Some(format!("tally-test.{}", config.dataset)),
    );
    let started = Instant::now();
    loop {
        let status = api
            .get_export_status(tonic::Request::new(GetExportStatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        let exported = |name: &str| {
            status
                .tables
                .iter()
                .find(|table| table.table == name)
                .map_or(0, |table| table.rows_exported)
        };
        if exported("usage_events") == 30
            && exported("invoices") == 1
            && exported("invoice_lines") == 1
        {
            assert!(
                status
                    .tables
                    .iter()
                    .all(|table| table.rows_waiting == 0 && !table.stopped)
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not exported within 120 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = export
        .warehouse()
        .unwrap()
        .rest
        .query("SELECT COUNT(*) FROM `{dataset}.usage_events`")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("30"));
    shutdown.trigger();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the export tasks stop on shutdown")
            .unwrap();
    }
}
