//! A database, a dataset of its own on the shared emulator, the export
//! service over them, and facts to stage.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use tally_bus::consumer::MessageHandler;
use tally_bus::{InProcessBus, Message};
use tally_export::tables::Table;
use tally_export::{Export, ExportDeps, Round};
use tally_proto::common::{Money, TimeRange};
use tally_proto::events::{
    InvoiceEvent, PaymentEvent, SubscriptionEvent, UsageAccepted, UsageEvent, invoice_event,
    payment_event, subscription_event,
};
use tally_proto::invoicing::{Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus};
use tally_runtime::config::ExportConfig;
use tally_runtime::{ManualClock, SharedClock};
use tally_testkit::postgres::TestDatabase;

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

pub fn ts(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap(),
    }
}

/// One test at a time talks to the shared emulator: under parallel tests its
/// DuckDB refuses concurrent calls ("connection is busy") and now and then
/// answers a query with stale rows.
static EMULATOR_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn on the emulator, held until dropped.
pub async fn emulator_turn() -> tokio::sync::MutexGuard<'static, ()> {
    EMULATOR_TURN.lock().await
}

pub struct Harness {
    pub _turn: tokio::sync::MutexGuard<'static, ()>,
    pub db: TestDatabase,
    pub export: Export,
    pub config: ExportConfig,
}

/// The `[export]` section of a fresh dataset on the emulator.
pub async fn config() -> ExportConfig {
    let emulator = tally_testkit::bigquery::emulator().await;
    ExportConfig {
        project_id: Some(tally_testkit::bigquery::TEST_PROJECT.to_owned()),
        dataset: format!("t_{}", tally_testkit::unique_suffix()),
        rest_endpoint: Some(emulator.rest_endpoint),
        grpc_endpoint: Some(emulator.grpc_endpoint),
        batch_rows: 7,
        poll_interval_ms: 50,
        ..ExportConfig::default()
    }
}

pub async fn harness() -> Harness {
    let turn = emulator_turn().await;
    let db = tally_testkit::postgres::database().await;
    let config = config().await;
    let clock: SharedClock = Arc::new(ManualClock::new(at("2026-11-20T00:00:00Z")));
    let export = Export::start(ExportDeps {
        pool: db.pool.clone(),
        bus: Arc::new(InProcessBus::new()),
        clock,
        config: config.clone(),
        max_delivery_attempts: 5,
    })
    .await
    .unwrap();
    export.warehouse().unwrap().set_up().await.unwrap();
    Harness {
        _turn: turn,
        db,
        export,
        config,
    }
}

impl Harness {
    pub async fn stage_usage(&self, message_id: &str, accepted: &UsageAccepted) {
        let handler = tally_export::UsageAcceptedHandler(
            self.export
                .stager(tally_export::USAGE_ACCEPTED_SUBSCRIPTION),
        );
        let message = Message::new("tally.events.v1.UsageAccepted", 1, accepted.encode_to_vec())
            .with_id(message_id);
        handler.handle(&message, 1).await.unwrap();
    }

    pub async fn stage_invoice(&self, message_id: &str, event: &InvoiceEvent) {
        let handler = tally_export::InvoiceEventsHandler(
            self.export
                .stager(tally_export::INVOICE_EVENTS_SUBSCRIPTION),
        );
        let message = Message::new("tally.events.v1.InvoiceEvent", 1, event.encode_to_vec())
            .with_id(message_id);
        handler.handle(&message, 1).await.unwrap();
    }

    pub async fn stage_payment(&self, message_id: &str, event: &PaymentEvent) {
        let handler = tally_export::PaymentEventsHandler(
            self.export
                .stager(tally_export::PAYMENT_EVENTS_SUBSCRIPTION),
        );
        let message = Message::new("tally.events.v1.PaymentEvent", 1, event.encode_to_vec())
            .with_id(message_id);
        handler.handle(&message, 1).await.unwrap();
    }

    pub async fn stage_subscription(&self, message_id: &str, event: &SubscriptionEvent) {
        let handler = tally_export::SubscriptionEventsHandler(
            self.export
                .stager(tally_export::SUBSCRIPTION_EVENTS_SUBSCRIPTION),
        );
        let message = Message::new(
            "tally.events.v1.SubscriptionEvent",
            1,
            event.encode_to_vec(),
        )
        .with_id(message_id);
        handler.handle(&message, 1).await.unwrap();
    }

    /// Exports `table` until nothing waits; a failed round is retried, as
    /// the exporter's loop does (the emulator's DuckDB refuses concurrent
    /// writes now and then when tests run in parallel).
    pub async fn drain(&self, table: Table) {
        let exporter = self.export.exporter(table).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            match exporter.round().await {
                Ok(Round::Idle) => return,
                Ok(Round::Exported(_)) => {}
                Ok(Round::Stopped) => panic!("{} stopped", table.name),
                Err(error) => {
                    eprintln!("{}: round failed, retrying: {error}", table.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        panic!("{} never drained within 120 s", table.name);
    }

    /// One value of `sql` in the dataset (`{dataset}` replaced).
    /// A query the emulator fails (its DuckDB connection busy with a
    /// parallel test) is asked again.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        let rest = &self.export.warehouse().unwrap().rest;
        let mut tries = 0;
        loop {
            match rest.query(sql).await {
                // Every query here returns a row; under parallel tests the
                // emulator now and then answers one with none.
                Ok(rows) if rows.is_empty() && tries < 50 => {
                    eprintln!("query answered no row, asking again: {sql}");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(rows) => return rows.first().and_then(|row| row.first().cloned()).flatten(),
                Err(error) if tries < 50 => {
                    eprintln!("query failed, asking again: {error}");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("{sql}: {error}"),
            }
        }
    }
}

pub fn usage(customer: &str, id: &str, sequence: u64, tokens: u64) -> UsageAccepted {
    UsageAccepted {
        event: Some(UsageEvent {
            id: id.to_owned(),
            customer_id: customer.to_owned(),
            event_type: "llm_tokens".to_owned(),
            timestamp: Some(ts(at("2026-11-10T12:00:00Z")
                + chrono::TimeDelta::seconds(i64::try_from(sequence).unwrap()))),
            properties: [
                ("tokens".to_owned(), tokens.to_string()),
                ("model".to_owned(), "large".to_owned()),
            ]
            .into_iter()
            .collect(),
            source: "test".to_owned(),
        }),
        sequence_number: sequence,
        ingested_at: Some(ts(at("2026-11-10T12:00:00Z"))),
        intake: 1,
    }
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    })
}

/// A finalized invoice of `customer` with one line per amount.
pub fn invoice(id: &str, customer: &str, lines: &[&str], total: &str) -> Invoice {
    let period = Some(TimeRange {
        start_time: Some(ts(at("2026-11-01T00:00:00Z"))),
        end_time: Some(ts(at("2026-12-01T00:00:00Z"))),
    });
    Invoice {
        id: id.to_owned(),
        number: format!("T-{id}"),
        customer_id: customer.to_owned(),
        subscription_id: "sub_1".to_owned(),
        status: InvoiceStatus::Finalized.into(),
        currency: "USD".to_owned(),
        period,
        lines: lines
            .iter()
            .enumerate()
            .map(|(index, amount)| InvoiceLine {
                id: format!("il_{id}_{index}"),
                kind: InvoiceLineKind::Recurring.into(),
                description: "Platform fee".to_owned(),
                period,
                amount: usd(amount),
                ..InvoiceLine::default()
            })
            .collect(),
        subtotal: usd(total),
        total: usd(total),
        amount_due: usd(total),
        finalized_at: Some(ts(at("2026-12-01T00:00:00Z"))),
        version: 2,
        ..Invoice::default()
    }
}

pub fn finalized(event_id: &str, invoice: &Invoice) -> InvoiceEvent {
    InvoiceEvent {
        event_id: event_id.to_owned(),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: invoice.finalized_at,
        invoice: Some(invoice.clone()),
        kind: Some(invoice_event::Kind::Finalized(invoice_event::Finalized {
            amount_due: invoice.amount_due.clone(),
        })),
        customer: None,
    }
}

pub fn voided(event_id: &str, invoice: &Invoice) -> InvoiceEvent {
    let mut after = invoice.clone();
    after.status = InvoiceStatus::Void.into();
    after.voided_at = Some(ts(at("2026-12-03T00:00:00Z")));
    after.void_reason = "billed twice".to_owned();
    after.version += 1;
    InvoiceEvent {
        event_id: event_id.to_owned(),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: after.voided_at,
        invoice: Some(after),
        kind: Some(invoice_event::Kind::Voided(invoice_event::Voided {
            reason: "billed twice".to_owned(),
        })),
        customer: None,
    }
}

fn payment(event_id: &str, invoice: &str, kind: payment_event::Kind) -> PaymentEvent {
    PaymentEvent {
        event_id: event_id.to_owned(),
        invoice_id: invoice.to_owned(),
        customer_id: "cus_a".to_owned(),
        occurred_at: Some(ts(at("2026-12-02T00:00:00Z"))),
        payment: Some(tally_proto::payments::Payment {
            id: format!("pay_{invoice}"),
            invoice_id: invoice.to_owned(),
            customer_id: "cus_a".to_owned(),
            status: tally_proto::payments::PaymentStatus::Succeeded.into(),
            ..tally_proto::payments::Payment::default()
        }),
        kind: Some(kind),
    }
}

pub fn succeeded(event_id: &str, invoice: &str, amount: &str) -> PaymentEvent {
    payment(
        event_id,
        invoice,
        payment_event::Kind::Succeeded(payment_event::Succeeded {
            amount: usd(amount),
            attempt_number: 1,
            ..payment_event::Succeeded::default()
        }),
    )
}

pub fn refunded(event_id: &str, invoice: &str, amount: &str) -> PaymentEvent {
    payment(
        event_id,
        invoice,
        payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: "ref_1".to_owned(),
            amount: usd(amount),
            reason: tally_proto::payments::RefundReason::RequestedByCustomer.into(),
            ..payment_event::Refunded::default()
        }),
    )
}

/// Version `version` of `id` on `plan_version`: created at 1, a plan change
/// from `pv_starter` at 2, a cancellation when `status` is `canceled`.
pub fn subscription_version(
    id: &str,
    version: u64,
    plan_version: &str,
    status: &str,
) -> SubscriptionEvent {
    use tally_proto::invoicing::{Subscription, SubscriptionStatus};
    let status_value = match status {
        "canceled" => SubscriptionStatus::Canceled,
        "trialing" => SubscriptionStatus::Trialing,
        _ => SubscriptionStatus::Active,
    };
    let kind = match (version, status) {
        (_, "canceled") => subscription_event::Kind::Canceled(subscription_event::Canceled {
            at_period_end: false,
            reason: "too expensive".to_owned(),
        }),
        (1, _) => subscription_event::Kind::Created(subscription_event::Created::default()),
        _ => subscription_event::Kind::PlanChanged(subscription_event::PlanChanged {
            from_plan_version_id: "pv_starter".to_owned(),
            to_plan_version_id: plan_version.to_owned(),
            ..subscription_event::PlanChanged::default()
        }),
    };
    let at_time =
        at("2026-11-01T00:00:00Z") + chrono::TimeDelta::days(i64::try_from(version).unwrap());
    SubscriptionEvent {
        subscription_id: id.to_owned(),
        customer_id: "cus_a".to_owned(),
        version,
        effective_at: Some(ts(at_time)),
        occurred_at: Some(ts(at_time)),
        subscription: Some(Subscription {
            id: id.to_owned(),
            customer_id: "cus_a".to_owned(),
            plan_id: "plan_inference".to_owned(),
            plan_version_id: plan_version.to_owned(),
            status: status_value.into(),
            currency: "USD".to_owned(),
            version,
            ..Subscription::default()
        }),
        kind: Some(kind),
    }
}
