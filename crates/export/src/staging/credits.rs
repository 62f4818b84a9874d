//! The money going back: a credit note issued (on `invoice-events`) →
//! `credit_notes`, a refund made or failed (on `payment-events`) → `refunds`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tally_proto::events::{PaymentEvent, invoice_event, payment_event};

use super::{Poison, StagedRow, enum_name, micros, money, text, timestamp_or};
use crate::tables;

/// The `credit_notes` row of a credit note issued by `event_id` at `occurred_at`.
pub fn credit_note_row(
    event_id: &str,
    occurred_at: Option<&prost_types::Timestamp>,
    issued: &invoice_event::CreditNoteIssued,
    invoice_currency: &str,
    now: DateTime<Utc>,
) -> Result<StagedRow, Poison> {
    use tally_proto::invoicing::CreditNoteReason;
    let note = issued
        .credit_note
        .as_ref()
        .ok_or("CreditNoteIssued without a credit note")?;
    if note.id.is_empty() || note.invoice_id.is_empty() || note.customer_id.is_empty() {
        return Err("a credit note without id, invoice_id or customer_id".to_owned());
    }
    let created_at = timestamp_or(
        note.created_at.as_ref(),
        timestamp_or(occurred_at, micros(now)),
    );
    let currency = note
        .total
        .as_ref()
        .map(|m| m.currency.as_str())
        .filter(|c| !c.is_empty())
        .unwrap_or(invoice_currency);
    let lines: Vec<Value> = note
        .lines
        .iter()
        .map(|line| {
            json!({
                "invoice_line_id": text(&line.invoice_line_id),
                "description": text(&line.description),
                "amount": money(line.amount.as_ref()),
            })
        })
        .collect();
    let mut data = Map::new();
    let mut put = |column: &str, value: Value| {
        data.insert(column.to_owned(), value);
    };
    put("credit_note_id", json!(note.id));
    put("number", text(&note.number));
    put("invoice_id", json!(note.invoice_id));
    put("customer_id", json!(note.customer_id));
    put(
        "reason",
        CreditNoteReason::try_from(note.reason).map_or(Value::Null, |r| {
            enum_name(r.as_str_name(), "CREDIT_NOTE_REASON_")
        }),
    );
    put("memo", text(&note.memo));
    put("total", money(note.total.as_ref()));
    put("currency", json!(currency));
    put("credited_to_balance", json!(note.credited_to_balance));
    put(
        "credit_grant_id",
        issued
            .credit_grant
            .as_ref()
            .map_or(Value::Null, |grant| text(&grant.id)),
    );
    put("refund_amount", money(note.refund_amount.as_ref()));
    put("refund_id", text(&note.refund_id));
    put("lines", json!(Value::Array(lines).to_string()));
    put("created_at", created_at);
    put("event_id", json!(event_id));
    put("exported_at", micros(now));
    Ok(StagedRow {
        table: tables::CREDIT_NOTES,
        key: note.id.clone(),
        data,
    })
}

/// The `refunds` row of a payment event that is a refund's outcome (`None`
/// for every other kind, and for a refund without its id).
pub fn refund_row(event: &PaymentEvent, now: DateTime<Utc>) -> Option<StagedRow> {
    use payment_event::Kind;
    let (refund_id, status, amount, credit_note_id) = match event.kind.as_ref()? {
        Kind::Refunded(refunded) => (
            refunded.refund_id.as_str(),
            "succeeded",
            refunded.amount.as_ref(),
            refunded.credit_note_id.as_str(),
        ),
        Kind::RefundFailed(failed) => (
            failed.refund_id.as_str(),
            "failed",
            failed.amount.as_ref(),
            failed.credit_note_id.as_str(),
        ),
        _ => return None,
    };
    if refund_id.is_empty() {
        tracing::warn!(event_id = %event.event_id, "a refund outcome without a refund id: no refunds row");
        return None;
    }
    let mut data = Map::new();
    let mut put = |column: &str, value: Value| {
        data.insert(column.to_owned(), value);
    };
    put("refund_id", json!(refund_id));
    put("status", json!(status));
    put(
        "occurred_at",
        timestamp_or(event.occurred_at.as_ref(), micros(now)),
    );
    put("event_id", json!(event.event_id));
    put("invoice_id", json!(event.invoice_id));
    put("customer_id", json!(event.customer_id));
    put(
        "payment_id",
        event.payment.as_ref().map_or(Value::Null, |p| text(&p.id)),
    );
    put("amount", money(amount));
    put(
        "currency",
        amount.map_or(Value::Null, |m| text(&m.currency)),
    );
    put("credit_note_id", text(credit_note_id));
    match event.kind.as_ref()? {
        Kind::Refunded(refunded) => {
            put(
                "payment_refunded_total",
                money(refunded.total_refunded.as_ref()),
            );
            put(
                "reason",
                tally_proto::payments::RefundReason::try_from(refunded.reason)
                    .map_or(Value::Null, |r| {
                        enum_name(r.as_str_name(), "REFUND_REASON_")
                    }),
            );
            put("stripe_refund_id", text(&refunded.stripe_refund_id));
        }
        Kind::RefundFailed(failed) => put("failure_reason", text(&failed.failure_reason)),
        _ => return None,
    }
    put("exported_at", micros(now));
    Some(StagedRow {
        table: tables::REFUNDS,
        // A refund succeeds once and fails at most once, whatever event ids
        // carry the news.
        key: format!("{refund_id}/{status}"),
        data,
    })
}
