//! The service as `tally serve payments` runs it: invoice events in over the
//! bus, payment events out through the outbox relay.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tally_bus::{Bus, InProcessBus, SubscriptionConfig, topics};
use tally_payments::StripeSecrets;
use tally_proto::events::PaymentEvent;
use tally_proto::events::payment_event::Kind;

use crate::stripe_mocks;
use crate::support::*;

#[tokio::test]
async fn an_invoice_event_on_the_bus_becomes_a_payment_event_on_the_bus() {
    let bus = Arc::new(InProcessBus::new());
    let harness = harness_on(bus.clone()).await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;
    bus.ensure_topic(topics::PAYMENT_EVENTS).await.unwrap();
    let invoicing = SubscriptionConfig::ordered("invoicing-payment-events", topics::PAYMENT_EVENTS);
    bus.ensure_subscription(&invoicing).await.unwrap();
    let mut received = bus.subscribe("invoicing-payment-events").await.unwrap();
    harness.payments.spawn_background(&harness.shutdown);

    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    bus.publish(topics::INVOICE_EVENTS, message(&spec.finalized()))
        .await
        .unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(10), received.next())
        .await
        .expect("a payment event arrives")
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.message.message_type,
        "tally.events.v1.PaymentEvent"
    );
    assert_eq!(delivery.message.ordering_key.as_deref(), Some("cus_000100"));
    let event = PaymentEvent::decode(delivery.message.payload.as_slice()).unwrap();
    assert_eq!(delivery.message.id, event.event_id);
    assert_eq!(event.invoice_id, "inv_000001");
    assert!(matches!(event.kind, Some(Kind::Succeeded(_))));
    delivery.ack();
}

#[tokio::test]
async fn without_a_stripe_key_invoice_events_wait_in_their_subscription() {
    let bus = Arc::new(InProcessBus::new());
    let harness = harness_with(
        bus.clone(),
        StripeSecrets {
            api_key: None,
            webhook_secret: None,
        },
    )
    .await;
    harness.payments.spawn_background(&harness.shutdown);
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    bus.publish(topics::INVOICE_EVENTS, message(&spec.finalized()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(harness.stripe.received_requests().await.unwrap().is_empty());
    assert_eq!(harness.count("invoices").await, 0, "nothing consumed");
    // Without the signing secret every webhook is refused.
    let (status, _) = harness.post_webhook(b"{}".to_vec(), None).await;
    assert_eq!(status, 503);
    // The message is still there for a configured process.
    let mut waiting = bus
        .subscribe(tally_payments::INVOICE_EVENTS_SUBSCRIPTION)
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), waiting.next())
        .await
        .expect("the invoice event waits")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message.id, spec.finalized().event_id);
}
