//! `payment-events` → `payment_events`: one row per collection outcome.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tally_proto::events::{PaymentEvent, payment_event};

use super::{Poison, StagedRow, enum_name, micros, money, text, timestamp};
use crate::tables;

/// The kind's name and the event's own amount (with its currency).
fn kind_and_amount(
    kind: &payment_event::Kind,
) -> (&'static str, Option<&tally_proto::common::Money>) {
    use payment_event::Kind;
    match kind {
        Kind::Succeeded(succeeded) => ("succeeded", succeeded.amount.as_ref()),
        Kind::Failed(failed) => ("failed", failed.amount.as_ref()),
        Kind::Refunded(refunded) => ("refunded", refunded.amount.as_ref()),
        Kind::RefundFailed(failed) => ("refund_failed", failed.amount.as_ref()),
        Kind::Uncollectible(uncollectible) => ("uncollectible", uncollectible.amount.as_ref()),
        Kind::DisputeCreated(dispute) => ("dispute_created", dispute.amount.as_ref()),
        Kind::DunningStep(_) => ("dunning_step", None),
    }
}

/// The `payment_events` row of a payment event.
pub fn payment_row(event: &PaymentEvent, now: DateTime<Utc>) -> Result<StagedRow, Poison> {
    use payment_event::Kind;
    let kind = event.kind.as_ref().ok_or("PaymentEvent without a kind")?;
    if event.event_id.is_empty() || event.invoice_id.is_empty() || event.customer_id.is_empty() {
        return Err("PaymentEvent without event_id, invoice_id or customer_id".to_owned());
    }
    let (name, amount) = kind_and_amount(kind);
    let payment = event.payment.as_ref();
    let status = payment
        .and_then(|p| tally_proto::payments::PaymentStatus::try_from(p.status).ok())
        .map_or(Value::Null, |s| {
            enum_name(s.as_str_name(), "PAYMENT_STATUS_")
        });
    let mut data = Map::new();
    let mut put = |column: &str, value: Value| {
        data.insert(column.to_owned(), value);
    };
    put("event_id", json!(event.event_id));
    put("event_kind", json!(name));
    put(
        "occurred_at",
        match timestamp(event.occurred_at.as_ref()) {
            Value::Null => micros(now),
            value => value,
        },
    );
    put("invoice_id", json!(event.invoice_id));
    put("customer_id", json!(event.customer_id));
    put("payment_id", payment.map_or(Value::Null, |p| text(&p.id)));
    put("payment_status", status);
    put("amount", money(amount));
    put(
        "currency",
        amount.map_or(Value::Null, |m| text(&m.currency)),
    );
    put(
        "amount_refunded",
        payment.map_or(Value::Null, |p| money(p.amount_refunded.as_ref())),
    );
    put(
        "stripe_charge_id",
        payment.map_or(Value::Null, |p| text(&p.stripe_charge_id)),
    );
    put(
        "stripe_payment_intent_id",
        payment.map_or(Value::Null, |p| text(&p.stripe_payment_intent_id)),
    );
    put(
        "dunning_step",
        payment.map_or(Value::Null, |p| json!(i64::from(p.dunning_step))),
    );
    match kind {
        Kind::Succeeded(succeeded) => {
            put("attempt_number", json!(i64::from(succeeded.attempt_number)));
        }
        Kind::Failed(failed) => {
            put("attempt_number", json!(i64::from(failed.attempt_number)));
            put("failure_code", text(&failed.failure_code));
            put("failure_message", text(&failed.failure_message));
        }
        Kind::Refunded(refunded) => {
            put("refund_id", text(&refunded.refund_id));
            put("credit_note_id", text(&refunded.credit_note_id));
            put(
                "refund_reason",
                tally_proto::payments::RefundReason::try_from(refunded.reason)
                    .map_or(Value::Null, |r| {
                        enum_name(r.as_str_name(), "REFUND_REASON_")
                    }),
            );
        }
        Kind::RefundFailed(failed) => {
            put("refund_id", text(&failed.refund_id));
            put("credit_note_id", text(&failed.credit_note_id));
            put("failure_message", text(&failed.failure_reason));
        }
        Kind::DisputeCreated(dispute) => put("failure_message", text(&dispute.reason)),
        Kind::DunningStep(step) => {
            put("attempt_number", json!(i64::from(step.attempt_number)));
            put("dunning_step", json!(i64::from(step.step)));
        }
        Kind::Uncollectible(_) => {}
    }
    put("exported_at", micros(now));
    Ok(StagedRow {
        table: tables::PAYMENT_EVENTS,
        key: event.event_id.clone(),
        data,
    })
}
