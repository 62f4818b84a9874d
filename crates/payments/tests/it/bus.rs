//! The service as `tally serve payments` runs it: invoice events in over the
//! bus, payment events out through the outbox relay.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tally_bus::message::ATTRIBUTE_DEAD_LETTER_REASON;
use tally_bus::{Bus, InProcessBus, Message, SharedBus, SubscriptionConfig, topics};
use tally_payments::StripeSecrets;
use tally_proto::events::PaymentEvent;
use tally_proto::events::payment_event::Kind;

use crate::stripe_mocks;
use crate::support::*;

#[tokio::test]
async fn invoice_events_become_payment_events_on_the_in_process_bus() {
    invoice_events_become_payment_events(Arc::new(InProcessBus::new())).await;
}

#[tokio::test]
async fn invoice_events_become_payment_events_on_the_pubsub_emulator() {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    let bus =
        tally_bus::PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(Duration::from_secs(10));
    invoice_events_become_payment_events(Arc::new(bus)).await;
}

/// A finalization delivered twice and a poison message: one payment event
/// comes out (through the outbox relay), one charge is made, and the poison
/// message is dead-lettered with its reason.
async fn invoice_events_become_payment_events(bus: SharedBus) {
    let harness = harness_on(bus.clone()).await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 1_000).await;
    let watch = |name: &str, topic: &str| SubscriptionConfig::ordered(name, topic);
    let invoicing = watch("watch-payment-events", topics::PAYMENT_EVENTS);
    let dead = watch(
        "watch-payments-dead-letters",
        "payments-invoice-events-dead-letter",
    );
    for config in [&invoicing, &dead] {
        bus.ensure_topic(&config.topic).await.unwrap();
        bus.ensure_subscription(config).await.unwrap();
    }
    let mut received = bus.subscribe(&invoicing.name).await.unwrap();
    let mut dead_letters = bus.subscribe(&dead.name).await.unwrap();
    let _tasks = harness.payments.spawn_background(&harness.shutdown);

    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    for _ in 0..2 {
        bus.publish(topics::INVOICE_EVENTS, message(&spec.finalized()))
            .await
            .unwrap();
    }
    bus.publish(
        topics::INVOICE_EVENTS,
        Message::new("tally.events.v1.Nonsense", 1, vec![1, 2, 3]).with_ordering_key("cus_x"),
    )
    .await
    .unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(30), received.next())
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

    let letter = tokio::time::timeout(Duration::from_secs(30), dead_letters.next())
        .await
        .expect("the poison message is dead-lettered")
        .unwrap()
        .unwrap();
    let reason = letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON].clone();
    assert!(
        reason.contains("expected tally.events.v1.InvoiceEvent"),
        "{reason}"
    );
    letter.ack();

    assert!(
        tokio::time::timeout(Duration::from_secs(1), received.next())
            .await
            .is_err(),
        "the redelivered finalization publishes nothing more"
    );
    assert_eq!(harness.keys("/v1/invoices/in_1Acme/pay").await.len(), 1);
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
