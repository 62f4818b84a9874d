//! `PaymentService.Refund`: partial and full, idempotent, never more than paid.

use rust_decimal_macros::dec;
use tally_payments::ledger::Book;
use tally_proto::common::Money;
use tally_proto::events::payment_event::Kind;
use tally_proto::payments::{PaymentStatus, RefundReason, RefundRequest, RefundStatus};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::fixtures;
use crate::stripe_mocks::{self, respond};
use crate::support::*;

/// Answers `/v1/refunds` with a succeeded refund of the requested amount
/// (after a pause, when `slow`).
#[derive(Clone, Copy)]
struct RefundResponder {
    slow: bool,
}

impl Respond for RefundResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let amount: i64 = field(request, "amount").unwrap().parse().unwrap();
        let tally_refund = field(request, "metadata[tally_refund_id]").unwrap();
        let id = format!("re_for_{tally_refund}");
        let answer = respond(
            200,
            fixtures::refund(&id, amount, "succeeded", CHARGE, Some(&tally_refund)),
        );
        if self.slow {
            answer.set_delay(std::time::Duration::from_millis(150))
        } else {
            answer
        }
    }
}

async fn paid(harness: &Harness) -> String {
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    harness.payment_of("inv_000001").await.id
}

pub(crate) fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

pub(crate) fn request(key: &str, payment_id: &str, amount: Option<Money>) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount,
        reason: RefundReason::RequestedByCustomer.into(),
        memo: "goodwill".into(),
    }
}

/// A paid 50.00 invoice whose refunds Stripe grants at once: its payment id.
pub(crate) async fn refundable(harness: &Harness) -> String {
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(RefundResponder { slow: false })
        .mount(&harness.stripe)
        .await;
    paid(harness).await
}

#[tokio::test]
async fn partial_refunds_up_to_the_amount_paid_and_not_a_cent_more() {
    let harness = harness().await;
    let payment_id = refundable(&harness).await;
    let mut client = harness.client.clone();

    let first = client
        .refund(request("refund-1", &payment_id, usd("20.00")))
        .await
        .unwrap()
        .into_inner();
    let refund = first.refund.unwrap();
    assert_eq!(refund.status(), RefundStatus::Succeeded);
    assert_eq!(refund.amount.as_ref().unwrap().amount, "20.00");
    assert_eq!(
        first.payment.as_ref().unwrap().status(),
        PaymentStatus::PartiallyRefunded
    );
    let calls = harness.stripe_requests("POST", "/v1/refunds").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(field(&calls[0], "amount").as_deref(), Some("2000"));
    assert_eq!(field(&calls[0], "charge").as_deref(), Some(CHARGE));
    assert_eq!(
        field(&calls[0], "reason").as_deref(),
        Some("requested_by_customer")
    );
    assert_eq!(
        idempotency_key(&calls[0]),
        format!("tally:refund:{}:create", refund.id)
    );

    // A replay returns the first refund without calling Stripe again
    // (`20.0` is the same amount as `20.00`).
    let replay = client
        .refund(request("refund-1", &payment_id, usd("20.0")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.refund.unwrap().id, refund.id);
    assert_eq!(
        harness.stripe_requests("POST", "/v1/refunds").await.len(),
        1
    );
    // The same key for another request is a conflict.
    let conflict = client
        .refund(request("refund-1", &payment_id, usd("21.00")))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);

    // More than what remains: refused with the figures.
    let over = client
        .refund(request("refund-2", &payment_id, usd("30.01")))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);
    assert!(
        over.message()
            .contains("refund of 30.01 USD exceeds the 30.00 USD still refundable"),
        "{}",
        over.message()
    );

    // No amount: everything that remains.
    let rest = client
        .refund(request("refund-3", &payment_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.refund.unwrap().amount.unwrap().amount, "30.00");
    let payment = rest.payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Refunded);
    assert_eq!(payment.amount_refunded.unwrap().amount, "50.00");
    assert_eq!(payment.refunds.len(), 2);

    let nothing_left = client
        .refund(request("refund-4", &payment_id, usd("0.01")))
        .await
        .unwrap_err();
    assert_eq!(nothing_left.code(), tonic::Code::FailedPrecondition);
    assert!(nothing_left.message().contains("already refunded in full"));

    let refunded: Vec<(String, String)> = harness
        .payment_events()
        .await
        .iter()
        .filter_map(|event| match &event.kind {
            Some(Kind::Refunded(refunded)) => Some((
                refunded.amount.as_ref().unwrap().amount.clone(),
                refunded.total_refunded.as_ref().unwrap().amount.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        refunded,
        vec![
            ("20.00".into(), "20.00".into()),
            ("30.00".into(), "50.00".into())
        ]
    );
    assert_eq!(harness.usd(Book::Refunds).await, dec!(50.00));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(0));
}

#[tokio::test]
async fn refund_requests_that_cannot_be_right_are_refused_precisely() {
    let harness = harness().await;
    let payment_id = paid(&harness).await;
    let mut client = harness.client.clone();
    let cases = [
        (
            request("", &payment_id, usd("1.00")),
            tonic::Code::InvalidArgument,
            "idempotency_key: required",
        ),
        (
            request("k1", &payment_id, usd("-1.00")),
            tonic::Code::InvalidArgument,
            "amount: must be positive",
        ),
        (
            request("k2", &payment_id, usd("1.001")),
            tonic::Code::InvalidArgument,
            "more decimal places than USD allows",
        ),
        (
            request(
                "k3",
                &payment_id,
                Some(Money {
                    currency: "EUR".into(),
                    amount: "1.00".into(),
                }),
            ),
            tonic::Code::InvalidArgument,
            "currency EUR differs from the payment's USD",
        ),
        (
            request("k4", "pay_missing", usd("1.00")),
            tonic::Code::NotFound,
            "pay_missing",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.refund(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{message}");
        assert!(status.message().contains(message), "{}", status.message());
    }
    assert!(
        harness
            .stripe_requests("POST", "/v1/refunds")
            .await
            .is_empty()
    );
    assert_eq!(harness.count("refunds").await, 0);
}

#[tokio::test]
async fn a_failed_payment_cannot_be_refunded() {
    let harness = harness().await;
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", 5_000).await;
    stripe_mocks::pay_declined(&harness.stripe).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let payment_id = harness.payment_of("inv_000001").await.id;
    let status = harness
        .client
        .clone()
        .refund(request("k", &payment_id, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("is failed, not succeeded"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn stripe_unreachable_leaves_the_refund_pending_and_the_same_key_finishes_it() {
    let harness = harness().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&harness.stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(body_string_contains("amount=1000"))
        .respond_with(RefundResponder { slow: false })
        .mount(&harness.stripe)
        .await;
    let payment_id = paid(&harness).await;
    let mut client = harness.client.clone();

    let unavailable = client
        .refund(request("refund-1", &payment_id, usd("10.00")))
        .await
        .unwrap_err();
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    // The pending refund holds its amount: another refund cannot take it.
    let over = client
        .refund(request("refund-2", &payment_id, usd("40.01")))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);

    let finished = client
        .refund(request("refund-1", &payment_id, usd("10.00")))
        .await
        .unwrap()
        .into_inner();
    let refund = finished.refund.unwrap();
    assert_eq!(refund.status(), RefundStatus::Succeeded);
    let keys: Vec<String> = harness.keys("/v1/refunds").await;
    assert_eq!(keys.len(), 5);
    assert!(
        keys.iter()
            .all(|key| *key == format!("tally:refund:{}:create", refund.id))
    );
    assert_eq!(harness.count("refunds").await, 1);
}

#[tokio::test]
async fn a_refund_stripe_refuses_is_recorded_as_failed() {
    let harness = harness().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(respond(
            400,
            serde_json::json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge ch_1Acme has already been refunded."}}),
        ))
        .mount(&harness.stripe)
        .await;
    let payment_id = paid(&harness).await;
    let status = harness
        .client
        .clone()
        .refund(request("refund-1", &payment_id, usd("10.00")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("has already been refunded"),
        "{}",
        status.message()
    );
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.refunds[0].status(), RefundStatus::Failed);
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(
        harness.stripe_requests("POST", "/v1/refunds").await.len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn two_refunds_racing_for_the_same_money_cannot_both_pass() {
    let harness = harness().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(RefundResponder { slow: true })
        .mount(&harness.stripe)
        .await;
    let payment_id = paid(&harness).await;
    let (mut first, mut second) = (harness.client.clone(), harness.client.clone());
    let (a, b) = tokio::join!(
        first.refund(request("race-a", &payment_id, usd("30.00"))),
        second.refund(request("race-b", &payment_id, usd("30.00"))),
    );
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let refused = a.err().or(b.err()).unwrap();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(harness.keys("/v1/refunds").await.len(), 1);
    assert_eq!(
        harness
            .payment_of("inv_000001")
            .await
            .amount_refunded
            .unwrap()
            .amount,
        "30.00"
    );
}
