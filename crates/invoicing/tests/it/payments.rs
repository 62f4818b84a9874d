//! payment-events: paid, past_due, refunds, exactly once.

use prost::Message as _;
use rust_decimal_macros::dec;
use tally_bus::Message;
use tally_bus::consumer::MessageHandler;
use tally_proto::events::{PaymentEvent, payment_event};
use tally_proto::invoicing::{InvoiceStatus, ListCreditNotesRequest, SubscriptionStatus};

use crate::support::*;

pub(crate) fn message(event: &PaymentEvent) -> Message {
    Message::new("tally.events.v1.PaymentEvent", 1, event.encode_to_vec())
        .with_id(event.event_id.clone())
}

#[tokio::test]
async fn payment_outcomes_update_invoices_and_subscriptions_once() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, subscription, invoice) = h.first_invoice("25.00").await;
    let handler = h.invoicing.payment_events();
    let event = |id: &str, kind| PaymentEvent {
        event_id: id.into(),
        invoice_id: invoice.clone(),
        customer_id: customer.clone(),
        kind: Some(kind),
        ..Default::default()
    };
    let failed = event(
        "pevt_1",
        payment_event::Kind::Failed(payment_event::Failed {
            amount: usd("25.00"),
            attempt_number: 1,
            failure_code: "card_declined".into(),
            ..Default::default()
        }),
    );
    handler.handle(&message(&failed), 1).await.unwrap();
    let past_due = h.subscription(&subscription).await;
    assert_eq!(
        (past_due.status, past_due.version),
        (SubscriptionStatus::PastDue as i32, 2)
    );
    let succeeded = event(
        "pevt_2",
        payment_event::Kind::Succeeded(payment_event::Succeeded {
            amount: usd("25.00"),
            attempt_number: 2,
            ..Default::default()
        }),
    );
    handler.handle(&message(&succeeded), 1).await.unwrap();
    handler.handle(&message(&succeeded), 2).await.unwrap();
    let paid = h.invoice(&invoice).await;
    assert_eq!(
        (paid.status, paid.amount_paid.unwrap().amount.as_str()),
        (3, "25.00"),
        "paid once"
    );
    assert_eq!(
        h.subscription(&subscription).await.status,
        SubscriptionStatus::Active as i32
    );
    let refunded = event(
        "pevt_3",
        payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: "ref_1".into(),
            amount: usd("10.00"),
            ..Default::default()
        }),
    );
    handler.handle(&message(&refunded), 1).await.unwrap();
    let notes = h
        .invoices
        .list_credit_notes(ListCreditNotesRequest {
            invoice_id: invoice.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credit_notes;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].number.as_str(), notes[0].refund_id.as_str()),
        ("TALLY-CN-000001", "ref_1")
    );
    let credited = h.invoice(&invoice).await;
    assert_eq!(
        credited.amount_credited.unwrap().amount,
        dec!(10.00).to_string()
    );
    h.sync().await;
}

#[tokio::test]
async fn the_consumer_reads_payment_events_from_the_bus() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, _subscription, invoice) = h.first_invoice("25.00").await;
    let consumer = h.invoicing.payment_events_consumer();
    let shutdown = h.shutdown.clone();
    tokio::spawn(async move { consumer.run(shutdown).await });
    let succeeded = PaymentEvent {
        event_id: "pevt_bus".into(),
        invoice_id: invoice.clone(),
        customer_id: customer.clone(),
        kind: Some(payment_event::Kind::Succeeded(payment_event::Succeeded {
            amount: usd("25.00"),
            attempt_number: 1,
            ..Default::default()
        })),
        ..Default::default()
    };
    for _ in 0..2 {
        h.bus
            .publish(
                "payment-events",
                message(&succeeded).with_ordering_key(customer.clone()),
            )
            .await
            .unwrap();
    }
    // An event for an invoice invoicing never issued is dead-lettered, not retried forever.
    let mut unknown = succeeded.clone();
    unknown.event_id = "pevt_unknown".into();
    unknown.invoice_id = "inv_unknown".into();
    h.bus
        .publish("payment-events", message(&unknown))
        .await
        .unwrap();
    for _ in 0..500 {
        if h.invoice(&invoice).await.status == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let paid = h.invoice(&invoice).await;
    assert_eq!(
        (paid.status, paid.amount_paid.unwrap().amount.as_str()),
        (3, "25.00")
    );
    let (events,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM invoicing.inbox WHERE subscription = 'invoicing-payment-events'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1, "a redelivered event is applied once");
}

#[tokio::test]
async fn uncollectible_marks_the_invoice_and_may_cancel_the_subscription() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, subscription, invoice) = h.first_invoice("25.00").await;
    h.clock.set(at(2025, 1, 20)).unwrap();
    let uncollectible = PaymentEvent {
        event_id: "pevt_end".into(),
        invoice_id: invoice.clone(),
        customer_id: customer,
        kind: Some(payment_event::Kind::Uncollectible(
            payment_event::Uncollectible {
                amount: usd("25.00"),
                attempts: 4,
                cancel_subscription: true,
            },
        )),
        ..Default::default()
    };
    h.invoicing
        .payment_events()
        .handle(&message(&uncollectible), 1)
        .await
        .unwrap();
    assert_eq!(
        h.invoice(&invoice).await.status,
        InvoiceStatus::Uncollectible as i32
    );
    let canceled = h.subscription(&subscription).await;
    assert_eq!(canceled.status, SubscriptionStatus::Canceled as i32);
    assert_eq!(canceled.ended_at, Some(ts(at(2025, 1, 20))));
    // The end is a boundary: the bill run issues the final invoice; no more after it.
    h.bill_at(at(2025, 1, 20)).await;
    h.bill_at(at(2025, 3, 1)).await;
    assert_eq!(
        h.invoice_table(&subscription).await.len(),
        1,
        "policy NONE keeps January's fee: nothing to credit"
    );
}
