//! One creditable / refundable balance per invoice, shared by credit notes
//! and refunds (docs/architecture.md, "One balance per invoice"): a paid 49.00 invoice never gives back or
//! credits more than 49.00, whatever the order or the concurrency of credit
//! notes (`CreateCreditNote`), refund reservations (`ReserveRefund`, what
//! payments calls before Stripe) and payment events.

use prost::Message as _;
use rust_decimal::Decimal;
use tally_bus::Message;
use tally_bus::consumer::MessageHandler;
use tally_proto::common::Money;
use tally_proto::events::{PaymentEvent, payment_event};
use tally_proto::invoicing::*;
use tonic::Code;

use crate::support::*;

/// A paid invoice of 49.00 (`first_invoice` plus the payment's event).
async fn paid_invoice(h: &mut Harness) -> (String, String) {
    let (customer, _subscription, invoice) = h.first_invoice("49.00").await;
    pay(h, &customer, &invoice).await;
    (customer, invoice)
}

async fn pay(h: &Harness, customer: &str, invoice: &str) {
    deliver(
        h,
        &event(
            &format!("pevt_paid_{invoice}"),
            customer,
            invoice,
            payment_event::Kind::Succeeded(payment_event::Succeeded {
                amount: usd("49.00"),
                attempt_number: 1,
                ..Default::default()
            }),
        ),
    )
    .await;
}

fn event(id: &str, customer: &str, invoice: &str, kind: payment_event::Kind) -> PaymentEvent {
    PaymentEvent {
        event_id: id.into(),
        invoice_id: invoice.into(),
        customer_id: customer.into(),
        kind: Some(kind),
        ..Default::default()
    }
}

async fn deliver(h: &Harness, event: &PaymentEvent) {
    let message = Message::new("tally.events.v1.PaymentEvent", 1, event.encode_to_vec())
        .with_id(event.event_id.clone());
    h.invoicing
        .payment_events()
        .handle(&message, 1)
        .await
        .expect("the payment event is applied");
}

/// `PaymentEvent.Refunded` as payments publishes it.
fn refunded(customer: &str, invoice: &str, refund_id: &str, amount: &str) -> PaymentEvent {
    refunded_for_note(customer, invoice, refund_id, amount, "")
}

fn refunded_for_note(
    customer: &str,
    invoice: &str,
    refund_id: &str,
    amount: &str,
    credit_note_id: &str,
) -> PaymentEvent {
    event(
        &format!("pevt_{refund_id}_refunded"),
        customer,
        invoice,
        payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: refund_id.into(),
            amount: usd(amount),
            stripe_refund_id: format!("re_{refund_id}"),
            credit_note_id: credit_note_id.into(),
            ..Default::default()
        }),
    )
}

fn partial_note(key: &str, invoice: &str, amount: &str) -> CreateCreditNoteRequest {
    CreateCreditNoteRequest {
        idempotency_key: key.into(),
        invoice_id: invoice.into(),
        reason: CreditNoteReason::ProductUnsatisfactory as i32,
        memo: "goodwill".into(),
        amount: Some(create_credit_note_request::Amount::Partial(
            CreditNoteLines {
                lines: vec![CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "Goodwill".into(),
                    amount: usd(amount),
                }],
            },
        )),
        ..Default::default()
    }
}

fn reservation(refund_id: &str, invoice: &str, amount: &str) -> ReserveRefundRequest {
    ReserveRefundRequest {
        refund_id: refund_id.into(),
        invoice_id: invoice.into(),
        payment_id: "pay_1".into(),
        amount: usd(amount),
    }
}

fn amount(value: Option<&Money>) -> String {
    value.map(|money| money.amount.clone()).unwrap_or_default()
}

impl Harness {
    async fn note(
        &mut self,
        request: CreateCreditNoteRequest,
    ) -> Result<CreditNote, tonic::Status> {
        self.invoices
            .create_credit_note(request)
            .await
            .map(|response| response.into_inner().credit_note.unwrap())
    }

    async fn reserve(
        &mut self,
        request: ReserveRefundRequest,
    ) -> Result<ReserveRefundResponse, tonic::Status> {
        self.invoices
            .reserve_refund(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn notes(&mut self, invoice: &str) -> Vec<(String, String, String, String)> {
        let mut notes = self
            .invoices
            .list_credit_notes(ListCreditNotesRequest {
                invoice_id: invoice.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .credit_notes;
        notes.reverse();
        notes
            .into_iter()
            .map(|note| {
                (
                    note.number,
                    amount(note.total.as_ref()),
                    note.refund_id,
                    amount(note.refund_amount.as_ref()),
                )
            })
            .collect()
    }

    async fn credited(&mut self, invoice: &str) -> String {
        amount(self.invoice(invoice).await.amount_credited.as_ref())
    }
}

fn note_row(
    number: &str,
    total: &str,
    refund_id: &str,
    refund: &str,
) -> (String, String, String, String) {
    (number.into(), total.into(), refund_id.into(), refund.into())
}

#[tokio::test]
async fn a_credit_note_then_a_refund_beyond_what_remains_is_refused_with_the_figures() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    h.note(partial_note("cn-45", &invoice, "45.00"))
        .await
        .unwrap();

    let refused = h
        .reserve(reservation("ref_46", &invoice, "46.00"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "refund ref_46 of 46.00 USD exceeds the 4.00 USD still creditable on invoice {invoice} \
             (billed 49.00 USD, credited 45.00 USD (credit notes), refunds reserved 0.00 USD)"
        )
    );

    // What remains, to the cent, can be refunded.
    let reserved = h
        .reserve(reservation("ref_4", &invoice, "4.00"))
        .await
        .unwrap();
    let balance = reserved.balance.unwrap();
    assert_eq!(
        (
            amount(balance.creditable.as_ref()),
            amount(balance.refunds_held.as_ref())
        ),
        ("0.00".into(), "4.00".into())
    );
    assert_eq!(
        reserved.reservation.unwrap().status,
        RefundReservationStatus::Held as i32
    );
    // Payments reports the refund: the hold becomes the refund's credit note.
    deliver(&h, &refunded(&customer, &invoice, "ref_4", "4.00")).await;
    assert_eq!(
        h.notes(&invoice).await,
        vec![
            note_row("TALLY-CN-000001", "45.00", "", ""),
            note_row("TALLY-CN-000002", "4.00", "ref_4", ""),
        ]
    );
    assert_eq!(h.credited(&invoice).await, "49.00");
    let nothing = h
        .note(partial_note("cn-cent", &invoice, "0.01"))
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_refund_then_a_credit_note_beyond_what_remains_is_refused_with_the_figures() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    h.reserve(reservation("ref_46", &invoice, "46.00"))
        .await
        .unwrap();

    // The refund is still with Stripe: its hold already counts.
    let refused = h
        .note(partial_note("cn-45", &invoice, "45.00"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "credit notes of invoice {invoice} would total more than it billed: 45.00 requested, 3.00 creditable \
             (billed 49.00 USD, credited 0.00 USD (credit notes), refunds reserved 46.00 USD)"
        )
    );
    deliver(&h, &refunded(&customer, &invoice, "ref_46", "46.00")).await;
    let refused = h
        .note(partial_note("cn-45", &invoice, "45.00"))
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("45.00 requested, 3.00 creditable"),
        "{}",
        refused.message()
    );
    // The rest, in full.
    let full = CreateCreditNoteRequest {
        idempotency_key: "cn-full".into(),
        invoice_id: invoice.clone(),
        reason: CreditNoteReason::OrderChange as i32,
        amount: Some(create_credit_note_request::Amount::Full(true)),
        ..Default::default()
    };
    assert_eq!(amount(h.note(full).await.unwrap().total.as_ref()), "3.00");
    assert_eq!(
        h.notes(&invoice).await,
        vec![
            note_row("TALLY-CN-000001", "46.00", "ref_46", ""),
            note_row("TALLY-CN-000002", "3.00", "", ""),
        ]
    );
    assert_eq!(h.credited(&invoice).await, "49.00");
    let nothing = h
        .reserve(reservation("ref_more", &invoice, "0.01"))
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), Code::FailedPrecondition);
    assert!(
        nothing
            .message()
            .contains("exceeds the 0.00 USD still creditable"),
        "{}",
        nothing.message()
    );
}

#[tokio::test]
async fn a_credit_note_and_a_refund_racing_for_the_same_money_cannot_both_pass() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let now = at(2025, 1, 1);
    let plan = h.plan("basic", PlanSpec::advance("49.00")).await;
    let mut invoices = Vec::new();
    for round in 0..6 {
        let customer = h.customer(&format!("racer-{round}")).await;
        let subscription = h.subscribe(&customer, &plan, now).await;
        invoices.push((customer, subscription));
    }
    h.bill_at(now).await;
    for (round, (customer, subscription)) in invoices.iter().enumerate() {
        let invoice = h.invoice_at(subscription, now).await;
        pay(&h, customer, &invoice).await;
        // Both requests are in flight at once, each on its own connection.
        let (mut notes, mut refunds) = (h.invoices.clone(), h.invoices.clone());
        let note_invoice = invoice.clone();
        let note = tokio::spawn(async move {
            notes
                .create_credit_note(partial_note(
                    &format!("race-cn-{round}"),
                    &note_invoice,
                    "45.00",
                ))
                .await
        });
        let invoice_id = invoice.clone();
        let refund = tokio::spawn(async move {
            refunds
                .reserve_refund(reservation(
                    &format!("ref_race{round}"),
                    &invoice_id,
                    "46.00",
                ))
                .await
        });
        let (note, refund) = (note.await.unwrap(), refund.await.unwrap());
        assert_eq!(
            usize::from(note.is_ok()) + usize::from(refund.is_ok()),
            1,
            "exactly one of the pair passes: {note:?} {refund:?}"
        );
        let refused = note.err().or(refund.err()).unwrap();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("creditable"),
            "the refusal says why: {}",
            refused.message()
        );
        // Never more than the invoice, counting the refund still held.
        let (credited, held): (Decimal, Decimal) = sqlx::query_as(
            "SELECT i.amount_credited, coalesce((SELECT sum(amount) FROM invoicing.invoice_refunds r \
             WHERE r.invoice_id = i.id AND r.status = 'held'), 0) FROM invoicing.invoices i WHERE id = $1",
        )
        .bind(&invoice)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert!(
            credited + held <= Decimal::new(4900, 2),
            "{credited} + {held}"
        );
        assert!(
            credited + held >= Decimal::new(4500, 2),
            "one of them passed"
        );
    }
}

#[tokio::test]
async fn partial_and_full_refunds_and_credit_notes_share_the_balance_to_the_cent() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    h.reserve(reservation("ref_10", &invoice, "10.00"))
        .await
        .unwrap();
    h.note(partial_note("cn-20", &invoice, "20.00"))
        .await
        .unwrap();
    let over = h
        .reserve(reservation("ref_1901", &invoice, "19.01"))
        .await
        .unwrap_err();
    assert!(
        over.message()
            .contains("refund ref_1901 of 19.01 USD exceeds the 19.00 USD still creditable"),
        "{}",
        over.message()
    );
    let last = h
        .reserve(reservation("ref_19", &invoice, "19.00"))
        .await
        .unwrap();
    assert_eq!(
        amount(last.balance.unwrap().creditable.as_ref()),
        "0.00",
        "the invoice is taken in full"
    );
    deliver(&h, &refunded(&customer, &invoice, "ref_19", "19.00")).await;
    deliver(&h, &refunded(&customer, &invoice, "ref_10", "10.00")).await;
    assert_eq!(
        h.notes(&invoice).await,
        vec![
            note_row("TALLY-CN-000001", "20.00", "", ""),
            note_row("TALLY-CN-000002", "19.00", "ref_19", ""),
            note_row("TALLY-CN-000003", "10.00", "ref_10", ""),
        ]
    );
    assert_eq!(h.credited(&invoice).await, "49.00");
    let full = CreateCreditNoteRequest {
        idempotency_key: "cn-full".into(),
        invoice_id: invoice.clone(),
        reason: CreditNoteReason::OrderChange as i32,
        amount: Some(create_credit_note_request::Amount::Full(true)),
        ..Default::default()
    };
    let nothing = h.note(full).await.unwrap_err();
    assert_eq!(
        (nothing.code(), nothing.message()),
        (
            Code::FailedPrecondition,
            format!("nothing remains creditable on invoice {invoice}").as_str()
        )
    );
}

#[tokio::test]
async fn replays_of_a_reservation_a_credit_note_and_a_refund_return_the_first_result() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    let first = h
        .reserve(reservation("ref_10", &invoice, "10.00"))
        .await
        .unwrap();
    let again = h
        .reserve(reservation("ref_10", &invoice, "10.0"))
        .await
        .unwrap();
    assert_eq!(first.reservation, again.reservation);
    assert_eq!(
        amount(again.balance.unwrap().creditable.as_ref()),
        "39.00",
        "held once"
    );
    let conflict = h
        .reserve(reservation("ref_10", &invoice, "11.00"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let note = h
        .note(partial_note("cn-5", &invoice, "5.00"))
        .await
        .unwrap();
    let replay = h
        .note(partial_note("cn-5", &invoice, "5.00"))
        .await
        .unwrap();
    assert_eq!(note, replay);
    let conflict = h
        .note(partial_note("cn-5", &invoice, "6.00"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    // The same refund reported twice (a second message id) is credited once.
    let report = refunded(&customer, &invoice, "ref_10", "10.00");
    deliver(&h, &report).await;
    let mut redelivered = report.clone();
    redelivered.event_id = "pevt_ref_10_again".into();
    deliver(&h, &redelivered).await;
    assert_eq!(
        h.notes(&invoice).await,
        vec![
            note_row("TALLY-CN-000001", "5.00", "", ""),
            note_row("TALLY-CN-000002", "10.00", "ref_10", ""),
        ]
    );
    // A reservation asked again after its refund returns it as it is now.
    let done = h
        .reserve(reservation("ref_10", &invoice, "10.00"))
        .await
        .unwrap();
    let done = done.reservation.unwrap();
    assert_eq!(done.status, RefundReservationStatus::Refunded as i32);
    assert!(done.credit_note_id.starts_with("cn_"));
    assert_eq!(h.credited(&invoice).await, "15.00");
}

#[tokio::test]
async fn a_failed_refund_releases_its_reservation() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    h.reserve(reservation("ref_46", &invoice, "46.00"))
        .await
        .unwrap();
    let failed = event(
        "pevt_ref_46_failed",
        &customer,
        &invoice,
        payment_event::Kind::RefundFailed(payment_event::RefundFailed {
            refund_id: "ref_46".into(),
            amount: usd("46.00"),
            failure_reason: "Charge ch_1 has been disputed.".into(),
            credit_note_id: String::new(),
        }),
    );
    deliver(&h, &failed).await;
    h.note(partial_note("cn-45", &invoice, "45.00"))
        .await
        .unwrap();
    let released = h
        .reserve(reservation("ref_46", &invoice, "46.00"))
        .await
        .unwrap();
    assert_eq!(
        released.reservation.unwrap().status,
        RefundReservationStatus::Released as i32
    );
    assert_eq!(
        amount(released.balance.unwrap().creditable.as_ref()),
        "4.00"
    );
}

#[tokio::test]
async fn a_credit_note_on_a_paid_invoice_can_become_the_refund() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    let mut request = partial_note("cn-refund-45", &invoice, "45.00");
    request.refund_amount = usd("45.00");
    let note = h.note(request).await.unwrap();
    assert_eq!(amount(note.refund_amount.as_ref()), "45.00");

    // The note took 45.00 of the balance: a refund of the same money is refused.
    let refused = h
        .reserve(reservation("ref_46", &invoice, "46.00"))
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("exceeds the 4.00 USD still creditable"),
        "{}",
        refused.message()
    );
    // A refund part larger than its note is a field error; one above what was
    // paid and not yet refunded is refused with the figures.
    let mut request = partial_note("cn-bad", &invoice, "4.00");
    request.refund_amount = usd("4.01");
    let invalid = h.note(request).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("refund_amount"),
        "{}",
        invalid.message()
    );

    // Payments pays the note's refund out and reports it: no second note.
    deliver(
        &h,
        &refunded_for_note(&customer, &invoice, "ref_cn", "45.00", &note.id),
    )
    .await;
    assert_eq!(
        h.notes(&invoice).await,
        vec![note_row("TALLY-CN-000001", "45.00", "", "45.00")]
    );
    let mut rest = partial_note("cn-refund-4", &invoice, "4.00");
    rest.refund_amount = usd("4.00");
    h.note(rest).await.unwrap();
    assert_eq!(h.credited(&invoice).await, "49.00");

    // On an invoice nobody paid there is nothing to refund.
    let (_customer, _subscription, unpaid) = {
        let now = at(2025, 1, 1);
        let plan = h.plan("other", PlanSpec::advance("49.00")).await;
        let customer = h.customer("unpaid").await;
        let subscription = h.subscribe(&customer, &plan, now).await;
        h.bill_at(now).await;
        let invoice = h.invoice_at(&subscription, now).await;
        (customer, subscription, invoice)
    };
    let mut request = partial_note("cn-unpaid", &unpaid, "10.00");
    request.refund_amount = usd("10.00");
    let refused = h.note(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "refund_amount 10.00 USD exceeds the 0.00 USD refundable on invoice {unpaid} \
             (paid 0.00 USD, refunded or being refunded 0.00 USD)"
        )
    );
}

#[tokio::test]
async fn a_refund_made_outside_tally_is_credited_only_up_to_what_remains() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (customer, invoice) = paid_invoice(&mut h).await;
    h.note(partial_note("cn-45", &invoice, "45.00"))
        .await
        .unwrap();
    // Refunded in the Stripe dashboard: no reservation, the money has left.
    deliver(&h, &refunded(&customer, &invoice, "ref_dashboard", "46.00")).await;
    assert_eq!(
        h.notes(&invoice).await,
        vec![
            note_row("TALLY-CN-000001", "45.00", "", ""),
            note_row("TALLY-CN-000002", "4.00", "ref_dashboard", ""),
        ]
    );
    assert_eq!(h.credited(&invoice).await, "49.00", "never above the total");
}
