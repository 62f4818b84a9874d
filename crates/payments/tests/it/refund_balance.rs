//! Payments' side of the one creditable / refundable balance per invoice
//! (docs/architecture.md, "One balance per invoice"): a refund reaches Stripe only after invoicing reserved
//! it (`InvoiceService.ReserveRefund`, played here by `FakeInvoicing`), and a
//! credit note on a paid invoice can become the refund. Invoicing's own rule,
//! its races and its figures are tested in invoicing
//! (`crates/invoicing/tests/it/refund_balance.rs`).

use rust_decimal_macros::dec;
use tally_payments::ledger::Book;
use tally_proto::common::Money;
use tally_proto::events::payment_event::Kind;
use tally_proto::invoicing::CreditNoteReason;
use tally_proto::payments::{PaymentStatus, RefundReason, RefundRequest, RefundStatus};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::fixtures;
use crate::stripe_mocks::{self, respond};
use crate::support::*;

const REFUNDS: &str = "/v1/refunds";
const CREDIT_NOTES: &str = "/v1/credit_notes";

/// Answers `/v1/refunds` with a succeeded refund of the requested amount.
struct Refunds;

impl Respond for Refunds {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let amount: i64 = field(request, "amount").unwrap().parse().unwrap();
        let tally_refund = field(request, "metadata[tally_refund_id]").unwrap();
        respond(
            200,
            fixtures::refund(
                &format!("re_for_{tally_refund}"),
                amount,
                "succeeded",
                CHARGE,
                Some(&tally_refund),
            ),
        )
    }
}

async fn stripe_refunds(harness: &Harness) {
    Mock::given(method("POST"))
        .and(path(REFUNDS))
        .respond_with(Refunds)
        .mount(&harness.stripe)
        .await;
}

async fn stripe_refuses_refunds(harness: &Harness) {
    Mock::given(method("POST"))
        .and(path(REFUNDS))
        .respond_with(respond(
            400,
            serde_json::json!({"error": {"type": "invalid_request_error", "code": "charge_disputed", "message": "Charge ch_1Acme has been disputed."}}),
        ))
        .mount(&harness.stripe)
        .await;
}

async fn stripe_credit_notes(harness: &Harness, amount: i64) {
    Mock::given(method("POST"))
        .and(path(CREDIT_NOTES))
        .respond_with(respond(
            200,
            fixtures::credit_note("cn_1StripeNote", STRIPE_INVOICE, amount, true, "cn_000001"),
        ))
        .mount(&harness.stripe)
        .await;
}

/// `inv_000001` of 49.00, collected by card; its payment id.
async fn paid(harness: &Harness) -> (InvoiceSpec, String) {
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 4_900).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "49.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    (spec, payment.id)
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

fn request(key: &str, payment_id: &str, amount: &str) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount: usd(amount),
        reason: RefundReason::RequestedByCustomer.into(),
        memo: "goodwill".into(),
    }
}

/// The refunds and failed refunds published on `payment-events`:
/// (kind, refund id, amount, credit note).
async fn refund_events(harness: &Harness) -> Vec<(&'static str, String, String, String)> {
    harness
        .payment_events()
        .await
        .into_iter()
        .filter_map(|event| match event.kind {
            Some(Kind::Refunded(refunded)) => Some((
                "refunded",
                refunded.refund_id,
                refunded.amount.unwrap().amount,
                refunded.credit_note_id,
            )),
            Some(Kind::RefundFailed(failed)) => Some((
                "failed",
                failed.refund_id,
                failed.amount.unwrap().amount,
                failed.credit_note_id,
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_refund_beyond_what_invoicing_leaves_creditable_never_reaches_stripe() {
    let harness = harness().await;
    stripe_refunds(&harness).await;
    let (_spec, payment_id) = paid(&harness).await;
    // Invoicing already credited 45.00 of the 49.00 (a credit note).
    harness.invoicing.set_creditable("inv_000001", dec!(4.00));
    let mut client = harness.client.clone();

    let refused = client
        .refund(request("refund-46", &payment_id, "46.00"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let reason = refused.message().to_owned();
    assert!(
        reason.starts_with("refund ref_")
            && reason.ends_with(
                " of 46.00 USD exceeds the 4.00 USD still creditable on invoice inv_000001"
            ),
        "invoicing's reason, with its figures: {reason}"
    );
    assert!(harness.stripe_requests("POST", REFUNDS).await.is_empty());
    // Kept for audit as a failed refund; it holds nothing.
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.refunds.len(), 1);
    assert_eq!(payment.refunds[0].status(), RefundStatus::Failed);
    assert_eq!(payment.refunds[0].failure_reason, reason);
    assert_eq!(payment.amount_refunded.unwrap().amount, "0");

    // A replay gets the first answer again, and Stripe still nothing.
    let replay = client
        .refund(request("refund-46", &payment_id, "46.00"))
        .await
        .unwrap_err();
    assert_eq!(
        (replay.code(), replay.message()),
        (tonic::Code::FailedPrecondition, reason.as_str())
    );
    assert!(harness.stripe_requests("POST", REFUNDS).await.is_empty());

    // What remains, to the cent, is refunded.
    let rest = client
        .refund(request("refund-4", &payment_id, "4.00"))
        .await
        .unwrap()
        .into_inner();
    let refund = rest.refund.unwrap();
    assert_eq!(refund.status(), RefundStatus::Succeeded);
    assert_eq!(
        harness.invoicing.reservations(),
        vec![(refund.id.clone(), "inv_000001".into(), "4.00".into())]
    );
    let calls = harness.stripe_requests("POST", REFUNDS).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(field(&calls[0], "amount").as_deref(), Some("400"));
    assert_eq!(
        refund_events(&harness).await,
        vec![("refunded", refund.id, "4.00".into(), String::new())],
        "nothing to release for the refused one"
    );
    assert_eq!(harness.usd(Book::Refunds).await, dec!(4.00));
}

#[tokio::test]
async fn a_refund_invoicing_cannot_reserve_now_stays_pending_and_the_same_key_finishes_it() {
    let harness = harness().await;
    stripe_refunds(&harness).await;
    let (_spec, payment_id) = paid(&harness).await;
    harness.invoicing.set_unavailable(true);
    let mut client = harness.client.clone();
    let unavailable = client
        .refund(request("refund-10", &payment_id, "10.00"))
        .await
        .unwrap_err();
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    assert!(
        unavailable.message().contains("nothing was sent to Stripe"),
        "{}",
        unavailable.message()
    );
    assert!(harness.stripe_requests("POST", REFUNDS).await.is_empty());
    // The pending refund holds its amount in payments meanwhile.
    let over = client
        .refund(request("refund-40", &payment_id, "39.01"))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);

    harness.invoicing.set_unavailable(false);
    let finished = client
        .refund(request("refund-10", &payment_id, "10.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finished.refund.unwrap().status(), RefundStatus::Succeeded);
    assert_eq!(harness.stripe_requests("POST", REFUNDS).await.len(), 1);
    assert_eq!(harness.invoicing.reservations().len(), 1);
}

#[tokio::test]
async fn a_refund_stripe_refuses_releases_its_reservation() {
    let harness = harness().await;
    stripe_refuses_refunds(&harness).await;
    let (_spec, payment_id) = paid(&harness).await;
    let refused = harness
        .client
        .clone()
        .refund(request("refund-10", &payment_id, "10.00"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let reserved = harness.invoicing.reservations();
    assert_eq!(reserved.len(), 1, "reserved before Stripe was asked");
    assert_eq!(
        refund_events(&harness).await,
        vec![(
            "failed",
            reserved[0].0.clone(),
            "10.00".into(),
            String::new()
        )],
        "invoicing is told to release it"
    );
}

#[tokio::test]
async fn a_credit_note_on_a_paid_invoice_becomes_the_refund() {
    let harness = harness().await;
    stripe_refunds(&harness).await;
    stripe_credit_notes(&harness, 4_500).await;
    let (spec, _payment_id) = paid(&harness).await;

    let note = spec.credit_note_refunding(
        "cn_000001",
        "45.00",
        "45.00",
        CreditNoteReason::ProductUnsatisfactory,
    );
    harness.deliver(&note).await.expect("handled");

    // Stripe: the charge is refunded with payments' own key and metadata…
    let refunds = harness.stripe_requests("POST", REFUNDS).await;
    assert_eq!(refunds.len(), 1);
    let payment = harness.payment_of("inv_000001").await;
    let refund = payment.refunds[0].clone();
    assert_eq!(
        (
            field(&refunds[0], "amount"),
            field(&refunds[0], "charge"),
            field(&refunds[0], "metadata[tally_refund_id]"),
            idempotency_key(&refunds[0]),
        ),
        (
            Some("4500".into()),
            Some(CHARGE.into()),
            Some(refund.id.clone()),
            format!("tally:refund:{}:create", refund.id)
        )
    );
    // …and that refund is the Stripe credit note (no second refund by Stripe).
    let notes = harness.stripe_requests("POST", CREDIT_NOTES).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (
            field(&notes[0], "amount"),
            field(&notes[0], "refunds[0][refund]"),
            field(&notes[0], "refunds[0][amount_refunded]"),
            field(&notes[0], "out_of_band_amount"),
            field(&notes[0], "refund_amount"),
        ),
        (
            Some("4500".into()),
            Some(format!("re_for_{}", refund.id)),
            Some("4500".into()),
            None,
            None
        )
    );
    // Tally: the refund belongs to the note; invoicing reserved nothing more.
    assert_eq!(refund.credit_note_id, "cn_000001");
    assert_eq!(refund.status(), RefundStatus::Succeeded);
    assert_eq!(payment.status(), PaymentStatus::PartiallyRefunded);
    assert_eq!(payment.amount_refunded.unwrap().amount, "45.00");
    assert!(harness.invoicing.reservations().is_empty());
    assert_eq!(
        refund_events(&harness).await,
        vec![(
            "refunded",
            refund.id.clone(),
            "45.00".into(),
            "cn_000001".into()
        )]
    );
    assert_eq!(harness.usd(Book::Refunds).await, dec!(45.00));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(4.00));
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(0));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(49.00));

    // Redelivered: nothing new anywhere.
    harness.deliver(&note).await.expect("redelivery handled");
    assert_eq!(harness.stripe_requests("POST", REFUNDS).await.len(), 1);
    assert_eq!(harness.stripe_requests("POST", CREDIT_NOTES).await.len(), 1);
    assert_eq!(harness.count("refunds").await, 1);
    assert_eq!(harness.usd(Book::Refunds).await, dec!(45.00));
}

#[tokio::test]
async fn a_partial_refund_of_a_credit_note_credits_the_rest_outside_stripe() {
    let harness = harness().await;
    stripe_refunds(&harness).await;
    stripe_credit_notes(&harness, 1_000).await;
    let (spec, _payment_id) = paid(&harness).await;
    let note =
        spec.credit_note_refunding("cn_000001", "10.00", "6.00", CreditNoteReason::Duplicate);
    harness.deliver(&note).await.expect("handled");

    let refunds = harness.stripe_requests("POST", REFUNDS).await;
    assert_eq!(
        (field(&refunds[0], "amount"), field(&refunds[0], "reason")),
        (Some("600".into()), Some("duplicate".into()))
    );
    let notes = harness.stripe_requests("POST", CREDIT_NOTES).await;
    assert_eq!(
        (
            field(&notes[0], "amount"),
            field(&notes[0], "refunds[0][amount_refunded]"),
            field(&notes[0], "out_of_band_amount"),
        ),
        (Some("1000".into()), Some("600".into()), Some("400".into()))
    );
    assert_eq!(harness.usd(Book::Refunds).await, dec!(6.00));
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(4.00));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(45.00));
}

#[tokio::test]
async fn a_credit_notes_refund_stripe_refuses_is_credited_outside_stripe() {
    let harness = harness().await;
    stripe_refuses_refunds(&harness).await;
    stripe_credit_notes(&harness, 4_500).await;
    let (spec, _payment_id) = paid(&harness).await;
    let note = spec.credit_note_refunding(
        "cn_000001",
        "45.00",
        "45.00",
        CreditNoteReason::ProductUnsatisfactory,
    );
    harness.deliver(&note).await.expect("handled");

    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.refunds[0].status(), RefundStatus::Failed);
    assert_eq!(
        payment.refunds[0].failure_reason,
        "Charge ch_1Acme has been disputed."
    );
    assert_eq!(
        refund_events(&harness).await,
        vec![(
            "failed",
            payment.refunds[0].id.clone(),
            "45.00".into(),
            "cn_000001".into()
        )],
        "invoicing releases the note's refund"
    );
    let notes = harness.stripe_requests("POST", CREDIT_NOTES).await;
    assert_eq!(
        (
            field(&notes[0], "amount"),
            field(&notes[0], "out_of_band_amount"),
            field(&notes[0], "refunds[0][refund]"),
        ),
        (Some("4500".into()), Some("4500".into()), None)
    );
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(45.00));
    assert_eq!(harness.usd(Book::Refunds).await, dec!(0));
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
}

/// Answers `/v1/refunds` with a refund Stripe has not settled yet.
struct PendingRefunds;

impl Respond for PendingRefunds {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let amount: i64 = field(request, "amount").unwrap().parse().unwrap();
        let tally_refund = field(request, "metadata[tally_refund_id]").unwrap();
        respond(
            200,
            fixtures::refund(
                &format!("re_for_{tally_refund}"),
                amount,
                "pending",
                CHARGE,
                Some(&tally_refund),
            ),
        )
    }
}

#[tokio::test]
async fn a_pending_refund_stripe_fails_later_releases_its_reservation() {
    let harness = harness().await;
    Mock::given(method("POST"))
        .and(path(REFUNDS))
        .respond_with(PendingRefunds)
        .mount(&harness.stripe)
        .await;
    let (_spec, payment_id) = paid(&harness).await;
    let pending = harness
        .client
        .clone()
        .refund(request("refund-10", &payment_id, "10.00"))
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap();
    assert_eq!(pending.status(), RefundStatus::Pending);
    let reserved = harness.invoicing.reservations();
    assert_eq!(reserved.len(), 1);
    assert!(
        refund_events(&harness).await.is_empty(),
        "nothing settled yet"
    );

    // Days later the bank refuses it: Stripe says so through the charge.
    let failed = fixtures::refund(
        &format!("re_for_{}", pending.id),
        1000,
        "failed",
        CHARGE,
        Some(&pending.id),
    );
    stripe_mocks::current_charge(
        &harness.stripe,
        fixtures::charge(CHARGE, 4900, 0, STRIPE_INVOICE, vec![failed]),
    )
    .await;
    let event = fixtures::event(
        "evt_1RefundFailed",
        "charge.refunded",
        fixtures::CREATED,
        fixtures::charge(CHARGE, 4900, 0, STRIPE_INVOICE, vec![]),
    );
    let (status, _) = harness.webhook(&event).await;
    assert_eq!(status, 200);
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.refunds[0].status(), RefundStatus::Failed);
    assert_eq!(
        refund_events(&harness).await,
        vec![("failed", pending.id.clone(), "10.00".into(), String::new())],
        "invoicing is told to release what it reserved"
    );
}
