//! The background loops as `tally` runs them: the outbox relay, the bill-run
//! scheduler woken by the manual clock, and what invoice-events carry.

use std::time::Duration;

use prost::Message as _;
use rust_decimal_macros::dec;
use tally_proto::events::{InvoiceEvent, invoice_event};
use tally_runtime::config::InvoicingConfig;

use crate::support::*;

fn fast_loops() -> InvoicingConfig {
    InvoicingConfig {
        grace_period_hours: 0,
        bill_run_interval_seconds: 1,
        ..InvoicingConfig::default()
    }
}

/// Waits until `subscription` has `count` invoices in `status`.
async fn wait_for(h: &Harness, subscription: &str, count: usize, status: &str) -> Vec<InvoiceRow> {
    let mut table = Vec::new();
    for _ in 0..1500 {
        table = h.invoice_table(subscription).await;
        if table.len() == count && table.iter().all(|row| row.2 == status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    table
}

/// The background loops started, and `acme` subscribed from 1 January to a
/// 10.00 fee in advance and API calls at 0.10: (customer, subscription).
async fn running(h: &mut Harness) -> (String, String) {
    h.invoicing.spawn_background(&h.shutdown);
    let plan = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    (customer, subscription)
}

#[tokio::test]
async fn the_scheduler_bills_when_the_clock_moves_and_invoice_events_carry_the_customer() {
    let mut h = harness(at(2025, 1, 1), fast_loops()).await;
    let (customer, subscription) = running(&mut h).await;
    h.clock
        .set(at(2025, 1, 1) + chrono::Duration::seconds(1))
        .unwrap();
    h.calls(&customer, "jan", 3, at(2025, 1, 5)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    assert_eq!(
        wait_for(&h, &subscription, 2, "finalized").await,
        vec![
            row(
                "2025-01-01",
                "2025-01-01..2025-02-01",
                "finalized",
                "TALLY-000001",
                dec!(10.00),
                dec!(0),
                dec!(10.00)
            ),
            row(
                "2025-02-01",
                "2025-01-01..2025-02-01",
                "finalized",
                "TALLY-000002",
                dec!(10.30),
                dec!(0),
                dec!(10.30)
            ),
        ]
    );
    let payloads: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT payload FROM invoicing.outbox WHERE topic = 'invoice-events' ORDER BY seq",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let finalized: Vec<InvoiceEvent> = payloads
        .iter()
        .map(|(bytes,)| InvoiceEvent::decode(bytes.as_slice()).unwrap())
        .filter(|event| matches!(event.kind, Some(invoice_event::Kind::Finalized(_))))
        .collect();
    assert_eq!(finalized.len(), 2);
    let last = &finalized[1];
    assert_eq!(last.customer_id, customer);
    assert_eq!(last.customer.as_ref().unwrap().external_id, "acme");
    let invoice = last.invoice.as_ref().unwrap();
    assert_eq!(
        (invoice.number.as_str(), invoice.lines.len()),
        ("TALLY-000002", 2)
    );
    assert_eq!(invoice.amount_due.as_ref().unwrap().amount, "10.30");
}

#[tokio::test]
async fn a_backdated_subscription_bills_usage_that_arrived_before_it() {
    let mut h = harness(at(2025, 3, 10), config(0)).await;
    let plan = h.plan("usage", PlanSpec::default().calls("0.25")).await;
    let customer = h.customer("acme").await;
    h.calls(&customer, "early", 4, at(2025, 3, 2)).await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 3, 1)).await;
    h.bill_at(at(2025, 4, 1)).await;
    assert_eq!(
        h.lines_at(&subscription, at(2025, 4, 1)).await,
        vec![line("usage", "03-01..04-01", dec!(1.00))]
    );
}

#[tokio::test]
async fn the_loops_run_over_the_pubsub_emulator() {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    let bus =
        tally_bus::PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(Duration::from_secs(10));
    let mut h = harness_on(at(2025, 1, 1), fast_loops(), std::sync::Arc::new(bus)).await;
    let (customer, subscription) = running(&mut h).await;
    // Rating learns the subscription from subscription-events on Pub/Sub.
    h.sync().await;
    h.calls(&customer, "jan", 4, at(2025, 1, 5)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    let table = wait_for(&h, &subscription, 2, "finalized").await;
    assert_eq!(
        table.iter().map(|row| row.6).collect::<Vec<_>>(),
        vec![dec!(10.00), dec!(10.40)]
    );
    // A payment outcome arrives on payment-events; a redelivered copy changes nothing.
    let invoice = h.invoice_at(&subscription, at(2025, 2, 1)).await;
    let succeeded = tally_proto::events::PaymentEvent {
        event_id: "pevt_pubsub".into(),
        invoice_id: invoice.clone(),
        customer_id: customer.clone(),
        kind: Some(tally_proto::events::payment_event::Kind::Succeeded(
            tally_proto::events::payment_event::Succeeded {
                amount: usd("10.40"),
                attempt_number: 1,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    for _ in 0..2 {
        let message =
            tally_bus::Message::new("tally.events.v1.PaymentEvent", 1, succeeded.encode_to_vec())
                .with_id("pevt_pubsub")
                .with_ordering_key(customer.clone());
        h.bus.publish("payment-events", message).await.unwrap();
    }
    let mut paid = h.invoice(&invoice).await;
    for _ in 0..1500 {
        if paid.status == tally_proto::invoicing::InvoiceStatus::Paid as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        paid = h.invoice(&invoice).await;
    }
    assert_eq!(
        (paid.status, paid.amount_paid.unwrap().amount.as_str()),
        (tally_proto::invoicing::InvoiceStatus::Paid as i32, "10.40")
    );
    // The copy (same message id) is applied once, whenever it is delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.invoice(&invoice).await.amount_paid.unwrap().amount,
        "10.40"
    );
}
