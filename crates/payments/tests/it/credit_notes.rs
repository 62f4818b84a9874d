//! Credit notes issued in invoicing, mirrored to Stripe so Stripe never
//! collects more than Tally asks for.

use rust_decimal_macros::dec;
use tally_payments::ledger::Book;
use tally_proto::invoicing::{CollectionMode, CreditNoteReason};
use tally_proto::payments::PaymentStatus;
use wiremock::Mock;
use wiremock::matchers::{method, path};

use crate::fixtures::{self, CREATED};
use crate::stripe_mocks::{self, respond};
use crate::support::*;

const CREDIT_NOTES: &str = "/v1/credit_notes";

async fn credit_note_answers(harness: &Harness, amount: i64, out_of_band: bool) {
    Mock::given(method("POST"))
        .and(path(CREDIT_NOTES))
        .respond_with(respond(
            200,
            fixtures::credit_note(
                "cn_1StripeNote",
                STRIPE_INVOICE,
                amount,
                out_of_band,
                "cn_000001",
            ),
        ))
        .mount(&harness.stripe)
        .await;
}

/// Stripe mirrors `inv_000001` as a send-invoice invoice due `amount_due`
/// minor units, which stays open.
async fn stripe_sends_the_invoice(harness: &Harness, amount_due: i64) {
    stripe_mocks::customer_and_items(&harness.stripe, "usd").await;
    stripe_mocks::invoice(&harness.stripe, "inv_000001", "usd", amount_due).await;
    stripe_mocks::send_succeeds(&harness.stripe, "inv_000001", amount_due).await;
}

/// Stripe received exactly one credit note request for `cn_000001` on the
/// mapped invoice: `amount` minor units, never a refund or a balance credit.
async fn assert_one_credit_note(
    harness: &Harness,
    amount: &str,
    reason: &str,
    out_of_band: Option<&str>,
) {
    let created = harness.stripe_requests("POST", CREDIT_NOTES).await;
    assert_eq!(created.len(), 1);
    let request = &created[0];
    assert_eq!(
        idempotency_key(request),
        "tally:credit_note:cn_000001:create"
    );
    assert_eq!(field(request, "invoice").as_deref(), Some(STRIPE_INVOICE));
    assert_eq!(field(request, "amount").as_deref(), Some(amount));
    assert_eq!(field(request, "reason").as_deref(), Some(reason));
    assert_eq!(
        field(request, "metadata[tally_credit_note_id]").as_deref(),
        Some("cn_000001")
    );
    assert_eq!(field(request, "out_of_band_amount").as_deref(), out_of_band);
    assert_eq!(field(request, "refund_amount"), None);
    assert_eq!(field(request, "credit_amount"), None);
}

/// The ledger balances: debits equal credits over every entry.
async fn assert_ledger_balanced(harness: &Harness) {
    let (debits, credits): (rust_decimal::Decimal, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT coalesce(sum(amount) FILTER (WHERE side = 'debit'), 0), \
         coalesce(sum(amount) FILTER (WHERE side = 'credit'), 0) FROM payments.ledger_entries",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!(debits, credits);
}

#[tokio::test]
async fn a_credit_note_on_an_open_invoice_lowers_what_stripe_collects() {
    let harness = harness().await;
    stripe_sends_the_invoice(&harness, 5_000).await;
    credit_note_answers(&harness, 1_250, false).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    spec.mode = CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();

    let note = spec.credit_note("cn_000001", "12.50", CreditNoteReason::OrderChange, "");
    harness.deliver(&note).await.expect("handled");

    // Stripe: one credit note on the mapped invoice, exact minor units, our key.
    assert_one_credit_note(&harness, "1250", "order_change", None).await;

    // Tally: the payment collects what is still due; the receivable dropped.
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.amount.as_ref().unwrap().amount, "37.50");
    assert_eq!(payment.status(), PaymentStatus::Pending);
    assert_eq!(harness.usd(Book::Receivable).await, dec!(37.50));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(37.50));
    assert_ledger_balanced(&harness).await;

    // Redelivered, and republished under another message id: nothing new.
    harness.deliver(&note).await.expect("redelivery handled");
    let mut republished = note.clone();
    republished.event_id = "ievt_republished".into();
    harness
        .deliver(&republished)
        .await
        .expect("republish handled");
    assert_eq!(harness.stripe_requests("POST", CREDIT_NOTES).await.len(), 1);
    assert_eq!(harness.count("credit_notes").await, 1);
    assert_eq!(harness.usd(Book::Receivable).await, dec!(37.50));
    assert_eq!(
        harness
            .payment_of("inv_000001")
            .await
            .amount
            .unwrap()
            .amount,
        "37.50"
    );

    // The customer pays what Stripe now asks for: everything settles.
    let paid_invoice = stripe_mocks::paid_invoice("inv_000001", "usd", 3_750, 1);
    stripe_mocks::current_invoice(&harness.stripe, paid_invoice.clone()).await;
    let paid = fixtures::event("evt_1Paid", "invoice.paid", CREATED, paid_invoice);
    assert_eq!(harness.webhook(&paid).await.0, 200);
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(37.50));
    assert_ledger_balanced(&harness).await;
}

#[tokio::test]
async fn a_credit_note_on_a_paid_invoice_is_credited_outside_stripe() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    credit_note_answers(&harness, 2_000, true).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Succeeded
    );

    let note = spec.credit_note(
        "cn_000001",
        "20.00",
        CreditNoteReason::ProductUnsatisfactory,
        "",
    );
    harness.deliver(&note).await.expect("handled");

    // Stripe records the credit outside Stripe: no refund, no balance credit.
    assert_one_credit_note(&harness, "2000", "product_unsatisfactory", Some("2000")).await;
    assert!(
        harness
            .stripe_requests("POST", "/v1/refunds")
            .await
            .is_empty()
    );

    // The payment is untouched; the credit is owed to the customer.
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(payment.amount.unwrap().amount, "50.00");
    assert_eq!(harness.usd(Book::StripeBalance).await, dec!(50.00));
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(30.00));
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(20.00));
    assert_ledger_balanced(&harness).await;

    harness.deliver(&note).await.expect("redelivery handled");
    assert_eq!(harness.stripe_requests("POST", CREDIT_NOTES).await.len(), 1);
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(20.00));
}

#[tokio::test]
async fn a_credit_note_caused_by_a_payments_refund_is_not_echoed() {
    let harness = harness().await;
    stripe_mocks::happy_path(&harness.stripe, "inv_000001", "usd", 5_000).await;
    credit_note_answers(&harness, 1_000, true).await;
    let spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    harness.deliver(&spec.finalized()).await.unwrap();
    let before = (
        harness.usd(Book::Receivable).await,
        harness.usd(Book::Invoiced).await,
        harness.usd(Book::StripeBalance).await,
    );

    let note = spec.credit_note("cn_000001", "10.00", CreditNoteReason::Refund, "ref_000001");
    harness.deliver(&note).await.expect("handled");
    harness.deliver(&note).await.expect("redelivery handled");

    assert!(
        harness
            .stripe_requests("POST", CREDIT_NOTES)
            .await
            .is_empty()
    );
    assert!(
        harness
            .stripe_requests("POST", "/v1/refunds")
            .await
            .is_empty()
    );
    assert_eq!(harness.count("credit_notes").await, 0);
    assert_eq!(
        (
            harness.usd(Book::Receivable).await,
            harness.usd(Book::Invoiced).await,
            harness.usd(Book::StripeBalance).await,
        ),
        before
    );
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(0));
}

#[tokio::test]
async fn a_credit_note_for_everything_due_ends_collection() {
    let harness = harness().await;
    stripe_sends_the_invoice(&harness, 5_000).await;
    credit_note_answers(&harness, 5_000, false).await;
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "50.00")]);
    spec.mode = CollectionMode::SendInvoice;
    harness.deliver(&spec.finalized()).await.unwrap();

    let note = spec.credit_note("cn_000001", "50.00", CreditNoteReason::Duplicate, "");
    harness.deliver(&note).await.expect("handled");

    assert_one_credit_note(&harness, "5000", "duplicate", None).await;
    // Nothing is left to collect: no dunning, nothing owed.
    let payment = harness.payment_of("inv_000001").await;
    assert_eq!(payment.status(), PaymentStatus::Canceled);
    assert!(payment.next_retry_at.is_none());
    let (status, amount_due): (String, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT status, amount_due FROM payments.invoices WHERE invoice_id = 'inv_000001'",
    )
    .fetch_one(&harness.db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), amount_due), ("paid", dec!(0)));
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(0));
    assert_ledger_balanced(&harness).await;
}

#[tokio::test]
async fn only_what_stripe_billed_is_credited_in_stripe() {
    let harness = harness().await;
    stripe_sends_the_invoice(&harness, 1_750).await;
    credit_note_answers(&harness, 1_750, false).await;
    // 30.00 billed, 12.50 settled from the wallet before finalization: the
    // Stripe invoice totals 17.50.
    let mut spec = InvoiceSpec::usd("inv_000001", &[("il_000001", "30.00")]);
    spec.mode = CollectionMode::SendInvoice;
    let finalized = spec.finalized_with_due("17.50");
    harness.deliver(&finalized).await.unwrap();

    // Invoicing credits the whole total.
    let note = spec.credit_note("cn_000001", "30.00", CreditNoteReason::OrderChange, "");
    harness.deliver(&note).await.expect("handled");

    // Stripe is asked for what it billed, never more (it would refuse).
    assert_one_credit_note(&harness, "1750", "order_change", None).await;
    assert_eq!(
        harness.payment_of("inv_000001").await.status(),
        PaymentStatus::Canceled
    );
    assert_eq!(harness.usd(Book::Receivable).await, dec!(0));
    assert_eq!(harness.usd(Book::Invoiced).await, dec!(0));
    assert_eq!(harness.usd(Book::CustomerCredit).await, dec!(0));
    assert_ledger_balanced(&harness).await;

    // A later note finds nothing of the Stripe invoice left to credit.
    let again = spec.credit_note("cn_000002", "1.00", CreditNoteReason::OrderChange, "");
    harness.deliver(&again).await.expect("handled");
    assert_eq!(harness.stripe_requests("POST", CREDIT_NOTES).await.len(), 1);
    assert_eq!(harness.count("credit_notes").await, 1);
}
