//! The whole flow with every log line captured at DEBUG: no Stripe secret
//! key, webhook secret or card data may appear.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Duration as Days;
use tally_payments::dunning::Dunning;
use tally_payments::{SecretKey, StripeSecrets, WebhookSecret};
use tally_proto::payments::{PaymentStatus, RefundReason, RefundRequest};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::fixtures::{self, CREATED};
use crate::stripe_mocks::{self, respond};
use crate::support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_or_card_data_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::info!(secrets = ?StripeSecrets {
        api_key: Some(SecretKey::new(STRIPE_SECRET_KEY)),
        webhook_secret: Some(WebhookSecret::new(WEBHOOK_SECRET)),
    }, "configured");

    let harness = harness().await;
    // A decline whose answer carries the card's details, then a retry that
    // succeeds, a webhook with the card on the charge, a refund, a dispute.
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 5_000).await;
    stripe_mocks::pay_declined_once(&harness.stripe).await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    stripe_mocks::pay_succeeds(&harness.stripe, "inv_000001", "usd", 5_000).await;
    stripe_mocks::current_payment_intent(
        &harness.stripe,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "succeeded",
            STRIPE_INVOICE,
            Some(CHARGE),
            Some(("insufficient_funds", "Your card has insufficient funds.")),
        ),
    )
    .await;
    stripe_mocks::current_invoice(
        &harness.stripe,
        stripe_mocks::paid_invoice("inv_000001", "usd", 5000, 2),
    )
    .await;
    let refund = fixtures::refund("re_1Acme", 1000, "succeeded", CHARGE, None);
    stripe_mocks::current_charge(
        &harness.stripe,
        fixtures::charge(CHARGE, 5000, 1000, STRIPE_INVOICE, vec![refund.clone()]),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(respond(
            200,
            fixtures::refund("re_2Acme", 500, "succeeded", CHARGE, None),
        ))
        .mount(&harness.stripe)
        .await;

    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    harness.clock.advance(Days::days(1)).unwrap();
    Dunning::new(harness.payments.core().clone(), Duration::from_secs(60))
        .run_due_steps()
        .await
        .unwrap();
    let paid = fixtures::event(
        "evt_1Pi",
        "payment_intent.succeeded",
        CREATED,
        fixtures::payment_intent(
            PAYMENT_INTENT,
            "succeeded",
            STRIPE_INVOICE,
            Some(CHARGE),
            None,
        ),
    );
    assert_eq!(harness.webhook(&paid).await.0, 200);
    let refunded = fixtures::event(
        "evt_1Refund",
        "charge.refunded",
        CREATED,
        fixtures::charge(CHARGE, 5000, 1000, STRIPE_INVOICE, vec![refund]),
    );
    assert_eq!(harness.webhook(&refunded).await.0, 200);
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::PartiallyRefunded);
    harness
        .client
        .clone()
        .refund(RefundRequest {
            idempotency_key: "k".into(),
            payment_id: payment.id,
            amount: None,
            reason: RefundReason::Duplicate.into(),
            memo: String::new(),
        })
        .await
        .unwrap();
    let dispute = fixtures::event(
        "evt_1Dispute",
        "charge.dispute.created",
        CREATED,
        fixtures::dispute("dp_1", CHARGE, 5000),
    );
    assert_eq!(harness.webhook(&dispute).await.0, 200);
    let forged = serde_json::to_vec(&paid).unwrap();
    assert_eq!(
        harness
            .post_webhook(forged, Some("t=1,v1=00".into()))
            .await
            .0,
        400
    );
    drop(harness);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("stripe call failed"),
        "the flow was logged:\n{logs}"
    );
    assert!(logs.contains("webhook applied"));
    assert!(logs.contains("webhook refused"));
    for secret in [
        STRIPE_SECRET_KEY,
        WEBHOOK_SECRET,
        "Bearer",
        "last4",
        "exp_month",
        "exp_year",
        "Xt5EWLLDS7FJjR1c",
        "client_secret",
        "_secret_Zk3v",
        "pm_1QxCardVisa",
        "Jenny Rosen",
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` appears in the logs:\n{logs}"
        );
    }
}
