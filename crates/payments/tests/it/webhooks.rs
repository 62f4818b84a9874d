//! The Stripe webhook endpoint: signatures, duplicates, order, and each
//! event type payments acts on.

use rust_decimal_macros::dec;
use tally_payments::WebhookSecret;
use tally_payments::ledger::Book;
use tally_payments::stripe::signature;
use tally_proto::events::payment_event::Kind;
use tally_proto::invoicing::CollectionMode;
use tally_proto::payments::{
    GetStripeCustomerRequest, PaymentStatus, RefundStatus, get_stripe_customer_request,
};
use tally_runtime::clock::Clock;

use crate::fixtures::{self, CREATED};
use crate::stripe_mocks;
use crate::support::*;

/// A send-invoice payment awaiting the customer (pending, no attempt).
async fn pending_invoice(harness: &Harness) -> InvoiceSpec {
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 5_000).await;
    stripe_mocks::send_succeeds(&harness.stripe, "inv_000001", 5_000).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    spec.mode = CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();
    spec
}

/// A charge-automatically payment collected at once (for refunds and disputes).
async fn paid_invoice(harness: &Harness) {
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
}

/// The Stripe invoice still open after one failed attempt.
fn open_after_one_attempt() -> serde_json::Value {
    fixtures::invoice(
        STRIPE_INVOICE,
        "inv_000001",
        "open",
        "usd",
        5000,
        0,
        1,
        Some(PAYMENT_INTENT),
        None,
    )
}

fn invoice_event(id: &str, kind: &str, status: &str, attempts: u32) -> serde_json::Value {
    let (paid, charge) = if status == "paid" {
        (5000, Some(CHARGE))
    } else {
        (0, None)
    };
    fixtures::event(
        id,
        kind,
        CREATED,
        fixtures::invoice(
            STRIPE_INVOICE,
            "inv_000001",
            status,
            "usd",
            5000,
            paid,
            attempts,
            Some(PAYMENT_INTENT),
            charge,
        ),
    )
}

#[tokio::test]
async fn bad_stale_and_malformed_deliveries_are_refused_without_effects() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    let event = serde_json::to_vec(&invoice_event("evt_1Paid", "invoice.paid", "paid", 1)).unwrap();
    let now = harness.clock.now().timestamp();
    let secret = WebhookSecret::new(WEBHOOK_SECRET);

    let wrong_secret = signature::sign(&WebhookSecret::new("whsec_someone_else"), now, &event);
    let stale = signature::sign(&secret, now - 301, &event);
    let future = signature::sign(&secret, now + 301, &event);
    let tampered = signature::sign(&secret, now, b"{\"id\":\"evt_other\"}");
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        (
            "missing",
            event.clone(),
            None,
            "missing Stripe-Signature header",
        ),
        (
            "wrong secret",
            event.clone(),
            Some(wrong_secret),
            "no signature matches",
        ),
        (
            "tampered body",
            event.clone(),
            Some(tampered),
            "no signature matches",
        ),
        ("stale", event.clone(), Some(stale), "outside the tolerance"),
        (
            "future",
            event.clone(),
            Some(future),
            "outside the tolerance",
        ),
        (
            "garbage header",
            event.clone(),
            Some("t=abc,v1=zz".into()),
            "malformed",
        ),
        (
            "no v1",
            event.clone(),
            Some(format!("t={now}")),
            "malformed",
        ),
    ];
    for (name, body, header, expected) in cases {
        let (status, text) = harness.post_webhook(body, header).await;
        assert_eq!(status, 400, "{name}");
        assert!(text.contains(expected), "{name}: {text}");
    }
    // Signed correctly but not an event.
    for body in [
        b"not json".to_vec(),
        b"{\"id\":\"evt_1\"}".to_vec(),
        b"{\"id\":\"evt_1\",\"type\":\"invoice.paid\",\"created\":1}".to_vec(),
    ] {
        let header = signature::sign(&secret, now, &body);
        let (status, _) = harness.post_webhook(body, Some(header)).await;
        assert_eq!(status, 400);
    }
    assert_eq!(harness.count("webhook_events").await, 0);
    assert!(
        harness
            .stripe_requests("GET", "/v1/invoices/in_1Acme")
            .await
            .is_empty()
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Pending
    );
    assert!(harness.payment_events().await.is_empty());
}

#[tokio::test]
async fn invoice_paid_settles_the_payment_once_however_often_it_arrives() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    stripe_mocks::current_invoice(
        &harness.stripe,
        stripe_mocks::paid_invoice("inv_000001", "usd", 5000, 1),
    )
    .await;

    let event = invoice_event("evt_1Paid", "invoice.paid", "paid", 1);
    assert_eq!(
        harness.webhook(&event).await,
        (200, "payment succeeded".into())
    );
    assert_eq!(harness.webhook(&event).await, (200, "duplicate".into()));
    // Stripe's sibling event for the same payment changes nothing more.
    let sibling = invoice_event("evt_1Succeeded", "invoice.payment_succeeded", "paid", 1);
    assert_eq!(
        harness.webhook(&sibling).await,
        (200, "already settled".into())
    );

    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(payment.stripe_charge_id, CHARGE);
    let events = harness.payment_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, "pevt_evt_1Paid");
    assert!(matches!(events[0].kind, Some(Kind::Succeeded(_))));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(50.00));
    assert_eq!(harness.count("webhook_events").await, 2);
}

#[tokio::test]
async fn a_late_payment_failed_after_paid_changes_nothing() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    // Stripe's current state is paid: the failure was an earlier attempt.
    stripe_mocks::current_invoice(
        &harness.stripe,
        stripe_mocks::paid_invoice("inv_000001", "usd", 5000, 2),
    )
    .await;
    stripe_mocks::current_payment_intent(
        &harness.stripe,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "succeeded",
            STRIPE_INVOICE,
            Some(CHARGE),
            None,
        ),
    )
    .await;
    let paid = invoice_event("evt_2Paid", "invoice.paid", "paid", 2);
    let failed = invoice_event("evt_1Failed", "invoice.payment_failed", "open", 1);
    assert_eq!(harness.webhook(&paid).await.0, 200);
    assert_eq!(
        harness.webhook(&failed).await,
        (200, "already settled".into())
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
    assert_eq!(harness.payment_events().await.len(), 1);
}

#[tokio::test]
async fn an_early_event_is_read_against_the_current_state() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    // The failure arrives, but by now Stripe shows the invoice paid: payments
    // follows the current state, not the stale snapshot.
    stripe_mocks::current_invoice(
        &harness.stripe,
        stripe_mocks::paid_invoice("inv_000001", "usd", 5000, 2),
    )
    .await;
    let failed = invoice_event("evt_1Failed", "invoice.payment_failed", "open", 1);
    assert_eq!(
        harness.webhook(&failed).await,
        (200, "payment succeeded".into())
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(payment.attempts.len(), 1);
    assert!(payment.attempts[0].succeeded);
}

#[tokio::test]
async fn a_failed_customer_payment_is_an_attempt_with_stripes_reason() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    let open = open_after_one_attempt();
    stripe_mocks::current_invoice(&harness.stripe, open).await;
    stripe_mocks::current_payment_intent(
        &harness.stripe,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "requires_payment_method",
            STRIPE_INVOICE,
            Some("ch_1Failed"),
            Some(("expired_card", "Your card has expired.")),
        ),
    )
    .await;
    let event = fixtures::event(
        "evt_1PiFailed",
        "payment_intent.payment_failed",
        CREATED,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "requires_payment_method",
            STRIPE_INVOICE,
            None,
            None,
        ),
    );
    assert_eq!(
        harness.webhook(&event).await,
        (200, "payment failed".into())
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert_eq!(payment.attempts[0].failure_code, "expired_card");
    assert_eq!(
        payment.attempts[0].failure_message,
        "Your card has expired."
    );
    assert!(payment.next_retry_at.is_some());
    let events = harness.payment_events().await;
    let Some(Kind::Failed(failed)) = &events[0].kind else {
        panic!()
    };
    assert_eq!(failed.failure_code, "expired_card");
}

#[tokio::test]
async fn an_event_about_an_invoice_not_collected_yet_is_deferred() {
    let harness = harness().await;
    let event = fixtures::event(
        "evt_1Early",
        "invoice.paid",
        CREATED,
        fixtures::invoice(
            "in_1Unknown",
            "inv_000009",
            "paid",
            "usd",
            100,
            100,
            1,
            None,
            None,
        ),
    );
    assert_eq!(
        harness.webhook(&event).await.0,
        503,
        "Stripe redelivers later"
    );
    assert_eq!(
        harness.count("webhook_events").await,
        0,
        "not recorded, so the redelivery is applied"
    );
    let foreign = fixtures::event(
        "evt_1Foreign",
        "customer.created",
        CREATED,
        fixtures::customer("cus_other", "cus_x"),
    );
    assert_eq!(
        harness.webhook(&foreign).await,
        (200, "ignored: event type not handled".into())
    );
}

#[tokio::test]
async fn a_refund_made_in_the_stripe_dashboard_is_recorded() {
    let harness = harness().await;
    paid_invoice(&harness).await;
    let refund = fixtures::refund("re_1Dashboard", 1500, "succeeded", CHARGE, None);
    stripe_mocks::current_charge(
        &harness.stripe,
        fixtures::charge(CHARGE, 5000, 1500, STRIPE_INVOICE, vec![refund]),
    )
    .await;
    let event = fixtures::event(
        "evt_1Refunded",
        "charge.refunded",
        CREATED,
        fixtures::charge(CHARGE, 5000, 1500, STRIPE_INVOICE, vec![]),
    );
    assert_eq!(
        harness.webhook(&event).await,
        (200, "refunds recorded".into())
    );
    assert_eq!(harness.webhook(&event).await, (200, "duplicate".into()));
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.amount_refunded.as_ref().unwrap().amount, "15.00");
    assert_eq!(payment.refunds.len(), 1);
    assert_eq!(payment.refunds[0].status(), RefundStatus::Succeeded);
    assert_eq!(payment.refunds[0].stripe_refund_id, "re_1Dashboard");
    let events = harness.payment_events().await;
    let Some(Kind::Refunded(refunded)) = &events[1].kind else {
        panic!("{:?}", events[1].kind)
    };
    assert_eq!(refunded.amount.as_ref().unwrap().amount, "15.00");
    assert_eq!(refunded.total_refunded.as_ref().unwrap().amount, "15.00");
    assert_eq!(harness.usd(Book::Refunds).await, dec!(15.00));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(35.00));

    // A refund that cannot fit what was paid is not forced into the books.
    let big = fixtures::refund("re_2TooBig", 4000, "succeeded", CHARGE, None);
    let both = vec![
        fixtures::refund("re_1Dashboard", 1500, "succeeded", CHARGE, None),
        big,
    ];
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!("/v1/charges/{CHARGE}")))
        .respond_with(stripe_mocks::respond(
            200,
            fixtures::charge(CHARGE, 5000, 5500, STRIPE_INVOICE, both),
        ))
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    let again = fixtures::event(
        "evt_2Refunded",
        "charge.refunded",
        CREATED,
        fixtures::charge(CHARGE, 5000, 5500, STRIPE_INVOICE, vec![]),
    );
    assert_eq!(harness.webhook(&again).await, (200, "no change".into()));
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.amount_refunded.as_ref().unwrap().amount, "15.00");
    assert_eq!(payment.refunds.len(), 1);
}

#[tokio::test]
async fn a_dispute_is_recorded_once() {
    let harness = harness().await;
    paid_invoice(&harness).await;
    let event = fixtures::event(
        "evt_1Dispute",
        "charge.dispute.created",
        CREATED,
        fixtures::dispute("dp_1Acme", CHARGE, 5000),
    );
    assert_eq!(
        harness.webhook(&event).await,
        (200, "dispute recorded".into())
    );
    let again = fixtures::event(
        "evt_2Dispute",
        "charge.dispute.created",
        CREATED,
        fixtures::dispute("dp_1Acme", CHARGE, 5000),
    );
    assert_eq!(
        harness.webhook(&again).await,
        (200, "already recorded".into())
    );
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Disputed
    );
    let events = harness.payment_events().await;
    assert_eq!(events.len(), 2);
    let Some(Kind::DisputeCreated(dispute)) = &events[1].kind else {
        panic!()
    };
    assert_eq!(dispute.reason, "fraudulent");
    assert_eq!(dispute.amount.as_ref().unwrap().amount, "50.00");
    assert_eq!(harness.usd(Book::Disputes).await, dec!(50.00));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(0));
}

#[tokio::test]
async fn a_payment_waiting_for_authentication_is_a_failed_attempt() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    let open = open_after_one_attempt();
    stripe_mocks::current_invoice(&harness.stripe, open.clone()).await;
    stripe_mocks::current_payment_intent(
        &harness.stripe,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "requires_action",
            STRIPE_INVOICE,
            None,
            None,
        ),
    )
    .await;
    let event = fixtures::event(
        "evt_1Action",
        "invoice.payment_action_required",
        CREATED,
        open,
    );
    assert_eq!(
        harness.webhook(&event).await,
        (200, "payment failed".into())
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert_eq!(payment.attempts[0].failure_code, "authentication_required");
}

#[tokio::test]
async fn customer_updated_refreshes_the_payment_method_flag() {
    let harness = harness().await;
    pending_invoice(&harness).await;
    let mut customer = fixtures::customer(STRIPE_CUSTOMER, "cus_000100");
    customer["invoice_settings"]["default_payment_method"] = serde_json::Value::Null;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(format!(
            "/v1/customers/{STRIPE_CUSTOMER}"
        )))
        .respond_with(stripe_mocks::respond(200, customer.clone()))
        .mount(&harness.stripe)
        .await;
    let event = fixtures::event("evt_1Customer", "customer.updated", CREATED, customer);
    assert_eq!(
        harness.webhook(&event).await,
        (200, "customer refreshed".into())
    );
    let mapping = harness
        .client
        .clone()
        .get_stripe_customer(GetStripeCustomerRequest {
            lookup: Some(get_stripe_customer_request::Lookup::CustomerId(
                "cus_000100".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .stripe_customer
        .unwrap();
    assert!(!mapping.has_default_payment_method);
    // Another Tally's customer (its metadata says Tally, but this
    // installation never mapped it): acknowledged without reading it.
    let foreign = fixtures::event(
        "evt_2Customer",
        "customer.updated",
        CREATED,
        fixtures::customer("cus_someone_else", "cus_x"),
    );
    assert_eq!(
        harness.webhook(&foreign).await,
        (
            200,
            "ignored: a Tally customer this installation does not map".into()
        )
    );
    assert!(
        harness
            .stripe_requests("GET", "/v1/customers/cus_someone_else")
            .await
            .is_empty()
    );
}

/// A Stripe customer of another integration on the same account (a web
/// shop's checkout): no Tally metadata.
const OTHER_CUSTOMER: &str = "cus_R7shopCheckout";

/// Events another integration on the same Stripe account causes, each with
/// the outcome payments records: none is Tally's, and the event alone (with
/// payments' own rows) shows it.
fn other_integrations_events() -> Vec<(serde_json::Value, &'static str)> {
    let mut customer = fixtures::customer(OTHER_CUSTOMER, "");
    customer["metadata"] = serde_json::json!({"shop_account_id": "acc_8812"});
    customer["email"] = serde_json::json!("jenny@shop.test");

    // A Checkout payment of the shop: its PaymentIntent pays no invoice.
    let mut shop_payment =
        fixtures::payment_intent("pi_3ShopCheckout", "succeeded", "", Some("ch_3Shop"), None);
    shop_payment
        .as_object_mut()
        .map(|object| object.remove("invoice"));
    shop_payment["customer"] = serde_json::json!(OTHER_CUSTOMER);
    shop_payment["metadata"] = serde_json::json!({"order_id": "ord_10442"});
    shop_payment["description"] = serde_json::json!("Order #10442");

    // A guest checkout: no customer at all.
    let mut guest_payment = fixtures::payment_intent(
        "pi_3GuestCheckout",
        "requires_payment_method",
        "",
        Some("ch_3Guest"),
        Some(("insufficient_funds", "Your card has insufficient funds.")),
    );
    guest_payment
        .as_object_mut()
        .map(|object| object.remove("invoice"));
    guest_payment["customer"] = serde_json::Value::Null;

    let mut shop_charge = fixtures::charge("ch_3Shop", 2500, 2500, "", vec![]);
    shop_charge
        .as_object_mut()
        .map(|object| object.remove("invoice"));
    shop_charge["customer"] = serde_json::json!(OTHER_CUSTOMER);
    shop_charge["payment_intent"] = serde_json::json!("pi_3ShopCheckout");

    let mut shop_refund = fixtures::refund("re_3Shop", 2500, "succeeded", "ch_3Shop", None);
    shop_refund["payment_intent"] = serde_json::json!("pi_3ShopCheckout");

    // A Stripe Billing subscription invoice of the shop (no tally_invoice_id).
    let mut shop_invoice = fixtures::invoice(
        "in_3ShopSubscription",
        "",
        "paid",
        "eur",
        990,
        990,
        1,
        None,
        None,
    );
    shop_invoice["metadata"] = serde_json::json!({});
    shop_invoice["customer"] = serde_json::json!(OTHER_CUSTOMER);
    shop_invoice["billing_reason"] = serde_json::json!("subscription_cycle");

    let shop_dispute = fixtures::dispute("dp_3Shop", "ch_3Shop", 2500);

    vec![
        (
            fixtures::event("evt_3Customer", "customer.updated", CREATED, customer),
            "ignored: not a Tally customer",
        ),
        (
            fixtures::event(
                "evt_3PiSucceeded",
                "payment_intent.succeeded",
                CREATED,
                shop_payment,
            ),
            "ignored: not a Tally customer's payment",
        ),
        (
            fixtures::event(
                "evt_3PiFailed",
                "payment_intent.payment_failed",
                CREATED,
                guest_payment,
            ),
            "ignored: no customer, not a Tally payment",
        ),
        (
            fixtures::event("evt_3Refunded", "charge.refunded", CREATED, shop_charge),
            "ignored: not a Tally customer's payment",
        ),
        (
            fixtures::event(
                "evt_3RefundUpdated",
                "charge.refund.updated",
                CREATED,
                shop_refund,
            ),
            "ignored: not a Tally refund",
        ),
        (
            fixtures::event("evt_3InvoicePaid", "invoice.paid", CREATED, shop_invoice),
            "ignored: not a Tally invoice",
        ),
        (
            fixtures::event(
                "evt_3Dispute",
                "charge.dispute.created",
                CREATED,
                shop_dispute,
            ),
            "ignored: not a Tally charge",
        ),
    ]
}

/// Posts every event of another integration and checks each is
/// acknowledged and recorded as ignored, with no Stripe call.
async fn other_integrations_events_are_ignored(harness: &Harness) {
    for (event, reason) in other_integrations_events() {
        let name = event["type"].as_str().unwrap().to_owned();
        assert_eq!(
            harness.webhook(&event).await,
            (200, reason.into()),
            "{name}"
        );
        let outcome: String = sqlx::query_scalar(
            "SELECT outcome FROM payments.webhook_events WHERE stripe_event_id = $1",
        )
        .bind(event["id"].as_str().unwrap())
        .fetch_one(&harness.db.pool)
        .await
        .unwrap();
        assert_eq!(outcome, reason, "{name}: recorded with its reason");
        assert_eq!(
            harness.webhook(&event).await,
            (200, "duplicate".into()),
            "{name}"
        );
    }
    assert!(
        harness.stripe.received_requests().await.unwrap().is_empty(),
        "no Stripe read for objects that are not Tally's"
    );
    assert!(harness.payment_events().await.is_empty());
}

#[tokio::test]
async fn other_integrations_events_are_acknowledged_without_a_stripe_read() {
    let harness = harness().await;
    other_integrations_events_are_ignored(&harness).await;
}

#[tokio::test]
async fn other_integrations_events_are_acknowledged_without_a_stripe_key() {
    let harness = harness_with(
        std::sync::Arc::new(tally_bus::InProcessBus::new()),
        tally_payments::StripeSecrets {
            api_key: None,
            webhook_secret: Some(WebhookSecret::new(WEBHOOK_SECRET)),
        },
    )
    .await;
    other_integrations_events_are_ignored(&harness).await;

    // A Tally customer's event still needs Stripe's current state: without
    // the key it is deferred (503, not recorded), never ignored.
    sqlx::query(
        "INSERT INTO payments.stripe_customers (customer_id, stripe_customer_id, livemode, \
         has_default_payment_method, synced_hash, created_at, synced_at) \
         VALUES ('cus_000100', $1, false, true, '', now(), now())",
    )
    .bind(STRIPE_CUSTOMER)
    .execute(&harness.db.pool)
    .await
    .unwrap();
    let ours = fixtures::event(
        "evt_4Customer",
        "customer.updated",
        CREATED,
        fixtures::customer(STRIPE_CUSTOMER, "cus_000100"),
    );
    assert_eq!(harness.webhook(&ours).await.0, 503);
    let mut tally_payment = fixtures::payment_intent(
        "pi_4NotLinkedYet",
        "succeeded",
        "",
        Some("ch_4NotLinkedYet"),
        None,
    );
    tally_payment
        .as_object_mut()
        .map(|object| object.remove("invoice"));
    let ours = fixtures::event(
        "evt_4PiSucceeded",
        "payment_intent.succeeded",
        CREATED,
        tally_payment,
    );
    assert_eq!(harness.webhook(&ours).await.0, 503);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments.webhook_events WHERE stripe_event_id LIKE 'evt\\_4%'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 0, "deferred, so the redelivery is applied");
}
