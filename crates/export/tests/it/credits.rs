//! Credit notes and refunds land once each: every fact sent is a row, a
//! redelivered or republished message adds none, and `refunds_current` has
//! each refund's latest outcome.

use tally_export::tables::{CREDIT_NOTES, INVOICES, PAYMENT_EVENTS, REFUNDS};
use tally_proto::common::Money;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_proto::invoicing::{CreditGrant, CreditNote, CreditNoteLine, CreditNoteReason};

use crate::support::*;

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    })
}

/// `cn_id` against `invoice` for `amount` on its first line, to the balance
/// (with a grant) or refunded.
fn credit_note_issued(
    event_id: &str,
    invoice: &tally_proto::invoicing::Invoice,
    cn_id: &str,
    amount: &str,
    to_balance: bool,
) -> InvoiceEvent {
    let mut after = invoice.clone();
    after.version += 1;
    after.amount_credited = usd(amount);
    let note = CreditNote {
        id: cn_id.to_owned(),
        number: format!("T-CN-{cn_id}"),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        reason: CreditNoteReason::BillingError.into(),
        memo: "mis-rated usage".to_owned(),
        lines: vec![CreditNoteLine {
            invoice_line_id: invoice.lines[0].id.clone(),
            description: "Platform fee".to_owned(),
            amount: usd(amount),
        }],
        total: usd(amount),
        credited_to_balance: to_balance,
        created_at: Some(ts(at("2026-12-04T10:00:00Z"))),
        refund_amount: if to_balance { None } else { usd(amount) },
        ..CreditNote::default()
    };
    InvoiceEvent {
        event_id: event_id.to_owned(),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        occurred_at: Some(ts(at("2026-12-04T10:00:00Z"))),
        invoice: Some(after),
        kind: Some(invoice_event::Kind::CreditNoteIssued(
            invoice_event::CreditNoteIssued {
                credit_note: Some(note),
                credit_grant: to_balance.then(|| CreditGrant {
                    id: format!("grant_{cn_id}"),
                    ..CreditGrant::default()
                }),
            },
        )),
        customer: None,
    }
}

fn refund_outcome(
    event_id: &str,
    refund_id: &str,
    amount: &str,
    failed: bool,
    at_time: &str,
) -> PaymentEvent {
    let kind = if failed {
        payment_event::Kind::RefundFailed(payment_event::RefundFailed {
            refund_id: refund_id.to_owned(),
            amount: usd(amount),
            failure_reason: "charge_for_pending_refund_disputed".to_owned(),
            credit_note_id: String::new(),
        })
    } else {
        payment_event::Kind::Refunded(payment_event::Refunded {
            refund_id: refund_id.to_owned(),
            amount: usd(amount),
            total_refunded: usd(amount),
            reason: tally_proto::payments::RefundReason::Duplicate.into(),
            stripe_refund_id: format!("re_{refund_id}"),
            credit_note_id: "cn_2".to_owned(),
        })
    };
    PaymentEvent {
        event_id: event_id.to_owned(),
        invoice_id: "inv_1".to_owned(),
        customer_id: "cus_a".to_owned(),
        occurred_at: Some(ts(at(at_time))),
        payment: Some(tally_proto::payments::Payment {
            id: "pay_1".to_owned(),
            ..tally_proto::payments::Payment::default()
        }),
        kind: Some(kind),
    }
}

#[tokio::test]
async fn every_credit_note_is_one_row_whatever_the_bus_redelivers() {
    let h = harness().await;
    let first = invoice("inv_1", "cus_a", &["10.00", "2.50"], "12.50");
    h.stage_invoice("m1", &finalized("ievt_1", &first)).await;
    let to_balance = credit_note_issued("ievt_2", &first, "cn_1", "2.50", true);
    h.stage_invoice("m2", &to_balance).await;
    // Redelivered, and republished under another message id: no new row.
    h.stage_invoice("m2", &to_balance).await;
    h.stage_invoice("m2-again", &to_balance).await;
    h.stage_invoice(
        "m3",
        &credit_note_issued("ievt_3", &first, "cn_2", "4.00", false),
    )
    .await;
    h.drain(CREDIT_NOTES).await;
    h.drain(INVOICES).await;

    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.credit_notes`")
            .await
            .as_deref(),
        Some("2")
    );
    let total = h
        .scalar("SELECT CAST(SUM(total) AS STRING) FROM `{dataset}.credit_notes`")
        .await
        .unwrap();
    assert_eq!(total.parse::<f64>().unwrap(), 6.5, "{total}");
    assert_eq!(
        h.scalar("SELECT CONCAT(reason, '/', credit_grant_id, '/', CAST(credited_to_balance AS STRING)) FROM `{dataset}.credit_notes` WHERE credit_note_id = 'cn_1'")
            .await
            .as_deref()
            .map(str::to_ascii_lowercase),
        Some("billing_error/grant_cn_1/true".to_owned())
    );
    let refunded = h
        .scalar("SELECT CAST(refund_amount AS STRING) FROM `{dataset}.credit_notes` WHERE credit_note_id = 'cn_2' AND NOT credited_to_balance")
        .await
        .unwrap();
    assert_eq!(refunded.parse::<f64>().unwrap(), 4.0, "{refunded}");
    assert_eq!(
        h.scalar("SELECT JSON_VALUE(lines, '$[0].invoice_line_id') FROM `{dataset}.credit_notes` WHERE credit_note_id = 'cn_2'")
            .await
            .as_deref(),
        Some("il_inv_1_0")
    );
    // The invoice's own rows: finalized, then one per note.
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM `{dataset}.invoices` WHERE event_kind = 'credit_note_issued'"
        )
        .await
        .as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn every_refund_outcome_is_one_row_and_the_current_view_has_the_latest() {
    let h = harness().await;
    h.stage_payment(
        "p1",
        &refund_outcome("pevt_1", "ref_1", "5.00", false, "2026-12-05T00:00:00Z"),
    )
    .await;
    // Redelivered: no new row.
    h.stage_payment(
        "p1",
        &refund_outcome("pevt_1", "ref_1", "5.00", false, "2026-12-05T00:00:00Z"),
    )
    .await;
    h.stage_payment(
        "p2",
        &refund_outcome("pevt_2", "ref_2", "7.00", true, "2026-12-05T01:00:00Z"),
    )
    .await;
    // ref_3 is made, then fails (Stripe's refund.failed), and the success is
    // republished under another event id: still one row per outcome.
    h.stage_payment(
        "p3",
        &refund_outcome("pevt_3", "ref_3", "3.00", false, "2026-12-05T02:00:00Z"),
    )
    .await;
    h.stage_payment(
        "p4",
        &refund_outcome("pevt_4", "ref_3", "3.00", true, "2026-12-06T02:00:00Z"),
    )
    .await;
    h.stage_payment(
        "p5",
        &refund_outcome("pevt_5", "ref_3", "3.00", false, "2026-12-05T02:00:00Z"),
    )
    .await;
    // A payment that is no refund adds no refunds row.
    h.stage_payment("p6", &succeeded("pevt_6", "inv_1", "12.50"))
        .await;
    h.drain(REFUNDS).await;
    h.drain(PAYMENT_EVENTS).await;

    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.refunds`")
            .await
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.refunds_current`")
            .await
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        h.scalar("SELECT status FROM `{dataset}.refunds_current` WHERE refund_id = 'ref_3'")
            .await
            .as_deref(),
        Some("failed")
    );
    let returned = h
        .scalar("SELECT CAST(SUM(amount) AS STRING) FROM `{dataset}.refunds_current` WHERE status = 'succeeded'")
        .await
        .unwrap();
    assert_eq!(returned.parse::<f64>().unwrap(), 5.0, "{returned}");
    assert_eq!(
        h.scalar("SELECT CONCAT(reason, '/', stripe_refund_id, '/', credit_note_id) FROM `{dataset}.refunds` WHERE refund_id = 'ref_1'")
            .await
            .as_deref(),
        Some("duplicate/re_ref_1/cn_2")
    );
    // Every payment event is still its own payment_events row.
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM `{dataset}.payment_events`")
            .await
            .as_deref(),
        Some("6")
    );
}
