//! The background loops as `tally` runs them: the outbox relay, the bill-run
//! scheduler woken by the manual clock, and what invoice-events carry.

use std::time::Duration;

use prost::Message as _;
use rust_decimal_macros::dec;
use tally_proto::events::{InvoiceEvent, invoice_event};
use tally_runtime::config::InvoicingConfig;

use crate::support::*;

#[tokio::test]
async fn the_scheduler_bills_when_the_clock_moves_and_invoice_events_carry_the_customer() {
    let config = InvoicingConfig {
        grace_period_hours: 0,
        bill_run_interval_seconds: 1,
        ..InvoicingConfig::default()
    };
    let mut h = harness(at(2025, 1, 1), config).await;
    h.invoicing.spawn_background(&h.shutdown);
    let plan = h
        .plan("basic", PlanSpec::advance("10.00").calls("0.10"))
        .await;
    let customer = h.customer("acme").await;
    let subscription = h.subscribe(&customer, &plan, at(2025, 1, 1)).await;
    h.clock
        .set(at(2025, 1, 1) + chrono::Duration::seconds(1))
        .unwrap();
    h.calls(&customer, "jan", 3, at(2025, 1, 5)).await;
    h.clock.set(at(2025, 2, 1)).unwrap();
    let mut table = Vec::new();
    for _ in 0..300 {
        table = h.invoice_table(&subscription).await;
        if table.len() == 2 && table.iter().all(|row| row.2 == "finalized") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        table,
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
