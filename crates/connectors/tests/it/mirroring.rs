//! Customers and subscriptions mirrored in a fake Orb through the bus
//! handlers: once each across redelivery, the same `Idempotency-Key` on
//! every retry, 429 storms ridden out honouring `retry-after`.

use std::time::Duration;

use prost::Message as _;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_connectors::mirroring::consumer::{
    CustomerFacts, INVOICE_EVENT_TYPE, SUBSCRIPTION_EVENT_TYPE, SubscriptionFacts,
};
use tally_connectors::mirroring::model::SubscriptionState;
use tally_connectors::orb::Jitter;
use tally_proto::convert::timestamp;
use tally_proto::events::{InvoiceEvent, SubscriptionEvent};
use tally_proto::invoicing::{Customer, Subscription};
use wiremock::ResponseTemplate;

use crate::billing_fake::BillingHarness;
use crate::support::{at, problem};

const INVOICES: &str = "connectors-invoice-events";
const SUBSCRIPTIONS: &str = "connectors-subscription-events";

pub fn customer_message(message_id: &str, customer: &str, external_id: &str) -> Message {
    let event = InvoiceEvent {
        event_id: message_id.into(),
        invoice_id: "inv_1".into(),
        customer_id: customer.into(),
        customer: Some(Customer {
            id: customer.into(),
            external_id: external_id.into(),
            name: "Acme Corp".into(),
            billing_email: "billing@acme.example".into(),
            currency: "USD".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Message::new(INVOICE_EVENT_TYPE, 1, event.encode_to_vec()).with_id(message_id)
}

pub fn subscription_message(
    version: u64,
    subscription: &str,
    customer: &str,
    plan: &str,
) -> Message {
    let event = SubscriptionEvent {
        subscription_id: subscription.into(),
        customer_id: customer.into(),
        version,
        subscription: Some(Subscription {
            id: subscription.into(),
            customer_id: customer.into(),
            plan_id: plan.into(),
            plan_version_id: "pv_pro_1".into(),
            currency: "USD".into(),
            start_at: Some(timestamp(at("2026-12-01T00:00:00Z"))),
            version,
            ..Default::default()
        }),
        ..Default::default()
    };
    Message::new(SUBSCRIPTION_EVENT_TYPE, 1, event.encode_to_vec())
        .with_id(format!("{subscription}.v{version}"))
}

fn handlers(h: &BillingHarness) -> (CustomerFacts, SubscriptionFacts) {
    (
        CustomerFacts::new(h.mirroring.clone(), INVOICES),
        SubscriptionFacts::new(h.mirroring.clone(), SUBSCRIPTIONS),
    )
}

#[tokio::test]
async fn a_customer_is_one_orb_customer_across_redeliveries_and_later_facts() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, _) = handlers(&h);
    let first = customer_message("ievt_1", "cus_acme", "acme");
    customers.handle(&first, 1).await.unwrap();
    customers.handle(&first, 2).await.unwrap();
    customers
        .handle(&customer_message("ievt_2", "cus_acme", "acme"), 1)
        .await
        .unwrap();

    let posted = h.posted("/v1/customers");
    assert_eq!(posted.len(), 1, "the stored mapping answers the repeats");
    assert_eq!(
        posted[0].idempotency_key.as_deref(),
        Some("tally-customer-cus_acme")
    );
    assert_eq!(
        posted[0].body,
        serde_json::json!({"name": "Acme Corp", "email": "billing@acme.example",
            "external_customer_id": "acme", "currency": "USD",
            "metadata": {"tally_customer_id": "cus_acme"}})
    );
    let mapped: (String, Option<String>) = sqlx::query_as(
        "SELECT external_customer_id, orb_customer_id FROM connectors.orb_customers \
         WHERE customer_id = 'cus_acme'",
    )
    .fetch_one(&h.database.pool)
    .await
    .unwrap();
    assert_eq!(mapped, ("acme".into(), Some("orb_cus_1".into())));
}

#[tokio::test]
async fn a_customer_without_an_external_id_is_known_to_orb_by_its_tally_id() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, _) = handlers(&h);
    customers
        .handle(&customer_message("ievt_1", "cus_solo", ""), 1)
        .await
        .unwrap();
    assert_eq!(
        h.posted("/v1/customers")[0].body["external_customer_id"],
        "cus_solo"
    );
}

#[tokio::test]
async fn a_retry_after_a_500_carries_the_same_idempotency_key_and_makes_one_customer() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, _) = handlers(&h);
    h.script([ResponseTemplate::new(500).set_body_json(problem(
        500,
        "500-internal-server-error",
        "Internal server error",
    ))]);
    customers
        .handle(&customer_message("ievt_1", "cus_acme", "acme"), 1)
        .await
        .unwrap();
    let keys: Vec<Option<String>> = h
        .posted("/v1/customers")
        .into_iter()
        .map(|posted| posted.idempotency_key)
        .collect();
    assert_eq!(keys, vec![Some("tally-customer-cus_acme".to_owned()); 2]);
    assert_eq!(h.created("/v1/customers"), 1);
    assert_eq!(h.pauses(), [Duration::from_millis(100)]);
}

#[tokio::test]
async fn orb_down_past_the_retries_is_a_redelivery_and_the_redelivery_is_the_same_customer() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, _) = handlers(&h);
    h.script((0..4).map(|_| ResponseTemplate::new(503)));
    let message = customer_message("ievt_1", "cus_acme", "acme");
    assert!(matches!(
        customers.handle(&message, 1).await,
        Err(HandlerError::Retry(reason)) if reason.contains("Orb is unavailable")
    ));
    customers.handle(&message, 2).await.unwrap();
    let posted = h.posted("/v1/customers");
    assert_eq!(posted.len(), 5);
    assert!(
        posted
            .iter()
            .all(|p| p.idempotency_key.as_deref() == Some("tally-customer-cus_acme"))
    );
    assert_eq!(h.created("/v1/customers"), 1);
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_waiting_at_least_retry_after_with_jitter() {
    let h = BillingHarness::open(Jitter::Random).await;
    let (customers, _) = handlers(&h);
    h.script((0..3).map(|_| {
        ResponseTemplate::new(429)
            .insert_header("retry-after", "2")
            .set_body_json(problem(429, "429-too-many-requests", "Too many requests"))
    }));
    customers
        .handle(&customer_message("ievt_1", "cus_acme", "acme"), 1)
        .await
        .unwrap();
    let pauses = h.pauses();
    assert_eq!(pauses.len(), 3, "{pauses:?}");
    for pause in pauses {
        assert!(
            pause >= Duration::from_secs(2) && pause <= Duration::from_millis(2500),
            "retry-after 2 s plus at most a quarter: {pause:?}"
        );
    }
    assert_eq!(h.created("/v1/customers"), 1);
    assert_eq!(h.posted("/v1/customers").len(), 4);
}

#[tokio::test]
async fn a_subscription_waits_for_its_customer_and_its_plan_then_is_mirrored_once() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, subscriptions) = handlers(&h);
    let created = subscription_message(1, "sub_acme", "cus_acme", "plan_pro");
    subscriptions.handle(&created, 1).await.unwrap();
    let record = h.mirroring.subscription("sub_acme").await.unwrap().unwrap();
    assert_eq!(record.state, SubscriptionState::WaitingForCustomer);

    // The customer arrives; the plan is not mapped yet.
    customers
        .handle(&customer_message("ievt_1", "cus_acme", "acme"), 1)
        .await
        .unwrap();
    let record = h.mirroring.subscription("sub_acme").await.unwrap().unwrap();
    assert_eq!(record.state, SubscriptionState::PlanNotMapped);
    assert!(record.reason.contains("plan_pro"), "{}", record.reason);
    assert!(h.posted("/v1/subscriptions").is_empty());

    // Mapped, the next fact mirrors it; every later fact and redelivery does nothing.
    h.mirroring
        .map_plan("plan_pro", "orb_plan_pro")
        .await
        .unwrap();
    subscriptions
        .handle(
            &subscription_message(2, "sub_acme", "cus_acme", "plan_pro"),
            1,
        )
        .await
        .unwrap();
    subscriptions.handle(&created, 2).await.unwrap();
    subscriptions
        .handle(
            &subscription_message(3, "sub_acme", "cus_acme", "plan_pro"),
            1,
        )
        .await
        .unwrap();
    let record = h.mirroring.subscription("sub_acme").await.unwrap().unwrap();
    assert_eq!(record.state, SubscriptionState::Mirrored);
    assert_eq!(record.orb_subscription_id.as_deref(), Some("orb_sub_1"));
    let posted = h.posted("/v1/subscriptions");
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].idempotency_key.as_deref(),
        Some("tally-subscription-sub_acme")
    );
    assert_eq!(
        posted[0].body,
        serde_json::json!({"external_customer_id": "acme", "plan_id": "orb_plan_pro",
            "currency": "USD", "start_date": "2026-12-01T00:00:00Z",
            "metadata": {"tally_subscription_id": "sub_acme"}})
    );
}

#[tokio::test]
async fn a_subscription_orb_refuses_is_recorded_with_orbs_reason() {
    let h = BillingHarness::open(Jitter::None).await;
    let (customers, subscriptions) = handlers(&h);
    customers
        .handle(&customer_message("ievt_1", "cus_acme", "acme"), 1)
        .await
        .unwrap();
    h.mirroring
        .map_plan("plan_pro", "orb_plan_gone")
        .await
        .unwrap();
    let mut refused = problem(
        400,
        "400-request-validation-errors",
        "Request validation failed",
    );
    refused["validation_errors"] = serde_json::json!(["plan_id: plan orb_plan_gone not found"]);
    h.script([ResponseTemplate::new(400).set_body_json(refused)]);
    subscriptions
        .handle(
            &subscription_message(1, "sub_acme", "cus_acme", "plan_pro"),
            1,
        )
        .await
        .unwrap();
    let record = h.mirroring.subscription("sub_acme").await.unwrap().unwrap();
    assert_eq!(record.state, SubscriptionState::Refused);
    assert!(
        record.reason.contains("orb_plan_gone not found"),
        "{}",
        record.reason
    );
}
