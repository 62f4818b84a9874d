//! Payments' audit chain: a finalized invoice sent to Stripe leaves
//! `invoice.sent_to_stripe` and its first charge `payment.collection_attempted`
//! (by `collection`); a refund leaves `refund.requested` and, once
//! Stripe has refunded, `payment.refunded` — one each, by the caller's key,
//! with the payment before and after; refused and replayed requests leave
//! nothing; neither the API key nor a Stripe secret appears anywhere.

use rust_decimal_macros::dec;
use serde_json::Value;
use tally_audit::{Filter, Schema};
use tally_proto::payments::payment_service_client::PaymentServiceClient;
use tally_runtime::auth::Scope;
use tally_testkit::keys::{REQUEST_ID, serve_with_key};

use crate::refunds::{refundable, request, usd};
use crate::support::*;

fn state(json: Option<&String>) -> Value {
    serde_json::from_str(json.expect("a state")).unwrap()
}

/// Payments' entries, oldest first, without the collection's (the invoice
/// sent to Stripe and its first charge, checked on their own below).
async fn entries_after_collection(harness: &Harness) -> Vec<tally_audit::StoredEntry> {
    let (entries, _) = tally_audit::list(
        &harness.db.pool,
        &[Schema::Payments],
        &Filter::default(),
        None,
        100,
    )
    .await
    .unwrap();
    entries
        .into_iter()
        .filter(|entry| entry.actor_id != "collection")
        .collect()
}

#[tokio::test]
async fn an_invoice_sent_to_stripe_and_charged_is_audited_once_each_by_the_collection() {
    let harness = harness().await;
    crate::stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    harness.deliver(&spec.finalized()).await.unwrap(); // a redelivery
    let payment = harness.payment_of("inv_000001").await;

    let (entries, _) = tally_audit::list(
        &harness.db.pool,
        &[Schema::Payments],
        &Filter::default(),
        None,
        100,
    )
    .await
    .unwrap();
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry.action.as_str(),
                entry.resource_id.as_str(),
                entry.actor_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("invoice.sent_to_stripe", "inv_000001", "collection"),
            (
                "payment.collection_attempted",
                payment.id.as_str(),
                "collection"
            ),
        ]
    );
    let sent = &entries[0];
    assert_eq!(sent.actor_kind, "system");
    assert_eq!(sent.resource_type, "invoice");
    assert_eq!(sent.comment.as_deref(), Some("Stripe invoice in_1Acme"));
    assert_eq!(state(sent.before_state.as_ref())["status"], "syncing");
    let after = state(sent.after_state.as_ref());
    assert_eq!(
        (
            after["status"].as_str(),
            after["stripe_invoice_id"].as_str(),
            after["amount_due"].as_str()
        ),
        (Some("open"), Some("in_1Acme"), Some("50.00"))
    );
    let attempted = &entries[1];
    assert_eq!(attempted.comment.as_deref(), Some("attempt 1: succeeded"));
    assert_eq!(state(attempted.before_state.as_ref())["status"], "pending");
    assert_eq!(state(attempted.after_state.as_ref())["status"], "succeeded");
    for entry in &entries {
        let text = format!("{entry:?}");
        for secret in [STRIPE_SECRET_KEY, WEBHOOK_SECRET] {
            assert!(!text.contains(secret), "a secret in {}", entry.id);
        }
    }
}

#[tokio::test]
async fn an_invoice_stripe_emails_is_audited_as_sent_with_no_attempt() {
    let harness = harness().await;
    crate::stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    crate::stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 1_000).await;
    crate::stripe_mocks::send_succeeds(&harness.stripe, "inv_000001", 1_000).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "10.00")]);
    spec.mode = tally_proto::invoicing::CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();

    let (entries, _) = tally_audit::list(
        &harness.db.pool,
        &[Schema::Payments],
        &Filter::default(),
        None,
        100,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, vec!["invoice.sent_to_stripe"], "{entries:?}");
}

#[tokio::test]
async fn a_refund_is_audited_once_with_the_key_and_the_payment_before_and_after() {
    let harness = harness().await;
    let payment_id = refundable(&harness).await;
    let (channel, key) = serve_with_key(
        harness.payments.grpc_server(16 << 20),
        &harness.shutdown,
        "key_support",
        "support-desk",
        &[Scope::Write],
    )
    .await
    .unwrap();
    let mut client = PaymentServiceClient::new(channel);

    let refused = client
        .refund(request("too-much", &payment_id, usd("50.01")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let refund = client
        .refund(request("refund-1", &payment_id, usd("20.00")))
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap();
    client
        .refund(request("refund-1", &payment_id, usd("20.00")))
        .await
        .unwrap(); // a replay

    let entries = entries_after_collection(&harness).await;
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| (entry.action.as_str(), entry.resource_id.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("refund.requested", refund.id.as_str()),
            ("payment.refunded", payment_id.as_str())
        ]
    );
    for entry in &entries {
        assert_eq!(
            (
                entry.actor_kind.as_str(),
                entry.actor_id.as_str(),
                entry.actor_name.as_str()
            ),
            ("api_key", "key_support", "support-desk")
        );
        assert_eq!(entry.request_id.as_deref(), Some(REQUEST_ID));
        assert_eq!(entry.reason.as_deref(), Some("requested_by_customer"));
    }
    let amount = |state: &Value, field: &str| -> rust_decimal::Decimal {
        state[field].as_str().unwrap().parse().unwrap()
    };
    let requested = state(entries[0].after_state.as_ref());
    assert_eq!(amount(&requested, "amount"), dec!(20));
    assert_eq!(requested["status"], "pending");
    assert_eq!(entries[0].comment.as_deref(), Some("goodwill"));
    let before = state(entries[1].before_state.as_ref());
    let after = state(entries[1].after_state.as_ref());
    assert_eq!(before["status"], "succeeded");
    assert_eq!(amount(&before, "amount_refunded"), dec!(0));
    assert_eq!(after["status"], "partially_refunded");
    assert_eq!(amount(&after, "amount_refunded"), dec!(20));

    for entry in &entries {
        let text = format!("{entry:?}");
        for secret in [key.plaintext.as_str(), STRIPE_SECRET_KEY, WEBHOOK_SECRET] {
            assert!(!text.contains(secret), "a secret in {}", entry.id);
        }
    }
    let verification = tally_audit::verify(&harness.db.pool, Schema::Payments)
        .await
        .unwrap();
    assert_eq!(
        (verification.entries_checked, verification.broken),
        (4, None),
        "and the collection's two"
    );
}

#[tokio::test]
async fn a_refund_stripe_reports_by_webhook_is_audited_once_by_that_event() {
    let harness = harness().await;
    refundable(&harness).await;
    let refund = crate::fixtures::refund("re_1Dashboard", 1500, "succeeded", CHARGE, None);
    crate::stripe_mocks::current_charge(
        &harness.stripe,
        crate::fixtures::charge(CHARGE, 5000, 1500, STRIPE_INVOICE, vec![refund]),
    )
    .await;
    let event = crate::fixtures::event(
        "evt_1Refunded",
        "charge.refunded",
        crate::fixtures::CREATED,
        crate::fixtures::charge(CHARGE, 5000, 1500, STRIPE_INVOICE, vec![]),
    );
    assert_eq!(
        harness.webhook(&event).await,
        (200, "refunds recorded".into())
    );
    assert_eq!(harness.webhook(&event).await, (200, "duplicate".into()));

    let entries = entries_after_collection(&harness).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.action, "payment.refunded");
    assert_eq!(
        (entry.actor_kind.as_str(), entry.actor_id.as_str()),
        ("system", "stripe_webhook:evt_1Refunded")
    );
    assert_eq!(entry.comment.as_deref(), Some("charge.refunded"));
    let after = state(entry.after_state.as_ref());
    assert_eq!(after["status"], "partially_refunded");
    let text = format!("{entry:?}");
    for secret in [STRIPE_SECRET_KEY, WEBHOOK_SECRET] {
        assert!(!text.contains(secret), "a secret in {}", entry.id);
    }
}
