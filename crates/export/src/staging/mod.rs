//! Staging: bus facts → warehouse rows, kept in `export.rows` until the
//! exporter has them in BigQuery. The rule: each bus message is staged once
//! (its inbox record is written in the same transaction), and each fact
//! once per table (`row_key`), whatever the bus redelivers.
//!
//! * [`consumers`] — the handlers of `usage-accepted`, `invoice-events`,
//!   `payment-events` and `subscription-events`;
//! * [`payments`] — payment events → `payment_events` rows;
//! * [`subscriptions`] — subscription events → `subscriptions` rows (one per version);
//! * [`credits`] — credit notes issued → `credit_notes`, refund outcomes → `refunds`;
//! * [`store`] — the SQL.
//!
//! The row shapes follow [`crate::tables`]; this module is the only place
//! that reads the bus messages' wire shape.

pub mod consumers;
pub mod credits;
pub mod payments;
pub mod store;
pub mod subscriptions;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tally_proto::events::{InvoiceEvent, UsageAccepted, invoice_event};
use tally_proto::invoicing::{Invoice, InvoiceLine, invoice_line};

use crate::tables::{self, Table};

/// A warehouse row waiting in PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    /// The table it goes to.
    pub table: Table,
    /// The fact's identity in that table.
    pub key: String,
    /// Column → value, as [`crate::bigquery::rows`] encodes it.
    pub data: Map<String, Value>,
}

fn micros(time: DateTime<Utc>) -> Value {
    json!(time.timestamp_micros())
}

fn timestamp(value: Option<&prost_types::Timestamp>) -> Value {
    match value {
        Some(ts) if ts.seconds != 0 || ts.nanos != 0 => {
            json!(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000)
        }
        _ => Value::Null,
    }
}

/// `value`'s microseconds, or `fallback` when it is unset.
fn timestamp_or(value: Option<&prost_types::Timestamp>, fallback: Value) -> Value {
    match timestamp(value) {
        Value::Null => fallback,
        value => value,
    }
}

fn text(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        json!(value)
    }
}

fn money(value: Option<&tally_proto::common::Money>) -> Value {
    value.map_or(Value::Null, |money| text(&money.amount))
}

fn decimal(value: Option<&tally_proto::common::Decimal>) -> Value {
    value.map_or(Value::Null, |decimal| text(&decimal.value))
}

/// `INVOICE_STATUS_FINALIZED` → `finalized`.
fn enum_name(name: &str, prefix: &str) -> Value {
    let short = name.strip_prefix(prefix).unwrap_or(name);
    if short == "UNSPECIFIED" {
        Value::Null
    } else {
        json!(short.to_ascii_lowercase())
    }
}

/// Why a message can never be staged (it is dead-lettered).
pub type Poison = String;

/// The `usage_events` row of an accepted event.
pub fn usage_row(accepted: &UsageAccepted, now: DateTime<Utc>) -> Result<StagedRow, Poison> {
    let event = accepted
        .event
        .as_ref()
        .ok_or("UsageAccepted without an event")?;
    if event.customer_id.is_empty() || event.id.is_empty() {
        return Err("UsageAccepted without event.customer_id or event.id".to_owned());
    }
    let event_time = timestamp(event.timestamp.as_ref());
    if event_time.is_null() {
        return Err("UsageAccepted without event.timestamp".to_owned());
    }
    let properties: Map<String, Value> = event
        .properties
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    let intake = tally_proto::events::Intake::try_from(accepted.intake)
        .map_or(Value::Null, |intake| {
            enum_name(intake.as_str_name(), "INTAKE_")
        });
    let mut data = Map::new();
    data.insert("customer_id".into(), json!(event.customer_id));
    data.insert("event_id".into(), json!(event.id));
    data.insert("event_type".into(), json!(event.event_type));
    data.insert("event_time".into(), event_time);
    data.insert(
        "properties".into(),
        json!(Value::Object(properties).to_string()),
    );
    data.insert("source".into(), text(&event.source));
    data.insert(
        "sequence_number".into(),
        json!(i64::try_from(accepted.sequence_number).unwrap_or(i64::MAX)),
    );
    data.insert(
        "ingested_at".into(),
        match timestamp(accepted.ingested_at.as_ref()) {
            Value::Null => micros(now),
            value => value,
        },
    );
    data.insert("intake".into(), intake);
    data.insert("exported_at".into(), micros(now));
    Ok(StagedRow {
        table: tables::USAGE_EVENTS,
        key: format!("{}/{}", event.customer_id, event.id),
        data,
    })
}

fn event_kind(kind: &invoice_event::Kind) -> &'static str {
    match kind {
        invoice_event::Kind::Finalized(_) => "finalized",
        invoice_event::Kind::Voided(_) => "voided",
        invoice_event::Kind::Paid(_) => "paid",
        invoice_event::Kind::MarkedUncollectible(_) => "marked_uncollectible",
        invoice_event::Kind::CreditNoteIssued(_) => "credit_note_issued",
    }
}

/// The rows of an invoice event: its `invoices` row and, at finalization,
/// one `invoice_lines` row per line; for a credit note, its `credit_notes` row.
pub fn invoice_rows(event: &InvoiceEvent, now: DateTime<Utc>) -> Result<Vec<StagedRow>, Poison> {
    let kind = event.kind.as_ref().ok_or("InvoiceEvent without a kind")?;
    let invoice = event
        .invoice
        .as_ref()
        .ok_or("InvoiceEvent without an invoice")?;
    if event.event_id.is_empty() || invoice.id.is_empty() || invoice.customer_id.is_empty() {
        return Err("InvoiceEvent without event_id, invoice.id or invoice.customer_id".to_owned());
    }
    let mut rows = vec![invoice_row(event, kind, invoice, now)];
    if matches!(kind, invoice_event::Kind::Finalized(_)) {
        for line in &invoice.lines {
            rows.push(line_row(invoice, line, now)?);
        }
    }
    if let invoice_event::Kind::CreditNoteIssued(issued) = kind {
        rows.push(credits::credit_note_row(
            &event.event_id,
            event.occurred_at.as_ref(),
            issued,
            &invoice.currency,
            now,
        )?);
    }
    Ok(rows)
}

fn invoice_row(
    event: &InvoiceEvent,
    kind: &invoice_event::Kind,
    invoice: &Invoice,
    now: DateTime<Utc>,
) -> StagedRow {
    use tally_proto::invoicing::{BillingReason, CollectionMode, InvoiceStatus};
    let status = InvoiceStatus::try_from(invoice.status).map_or(Value::Null, |s| {
        enum_name(s.as_str_name(), "INVOICE_STATUS_")
    });
    let reason = BillingReason::try_from(invoice.billing_reason).map_or(Value::Null, |r| {
        enum_name(r.as_str_name(), "BILLING_REASON_")
    });
    let mode = CollectionMode::try_from(invoice.collection_mode).map_or(Value::Null, |m| {
        enum_name(m.as_str_name(), "COLLECTION_MODE_")
    });
    let period = invoice.period.as_ref();
    let occurred_at = match timestamp(event.occurred_at.as_ref()) {
        Value::Null => micros(now),
        value => value,
    };
    let mut data = Map::new();
    data.insert("event_id".into(), json!(event.event_id));
    data.insert("event_kind".into(), json!(event_kind(kind)));
    data.insert("occurred_at".into(), occurred_at);
    data.insert("invoice_id".into(), json!(invoice.id));
    data.insert("number".into(), text(&invoice.number));
    data.insert("customer_id".into(), json!(invoice.customer_id));
    data.insert("subscription_id".into(), text(&invoice.subscription_id));
    data.insert("status".into(), status);
    data.insert("billing_reason".into(), reason);
    data.insert("collection_mode".into(), mode);
    data.insert("currency".into(), json!(invoice.currency));
    data.insert(
        "period_start".into(),
        timestamp(period.and_then(|p| p.start_time.as_ref())),
    );
    data.insert(
        "period_end".into(),
        timestamp(period.and_then(|p| p.end_time.as_ref())),
    );
    data.insert("subtotal".into(), money(invoice.subtotal.as_ref()));
    data.insert(
        "credits_applied".into(),
        money(invoice.credits_applied.as_ref()),
    );
    data.insert("total".into(), money(invoice.total.as_ref()));
    data.insert("amount_paid".into(), money(invoice.amount_paid.as_ref()));
    data.insert(
        "amount_credited".into(),
        money(invoice.amount_credited.as_ref()),
    );
    data.insert("amount_due".into(), money(invoice.amount_due.as_ref()));
    data.insert(
        "finalized_at".into(),
        timestamp(invoice.finalized_at.as_ref()),
    );
    data.insert("due_at".into(), timestamp(invoice.due_at.as_ref()));
    data.insert("paid_at".into(), timestamp(invoice.paid_at.as_ref()));
    data.insert("voided_at".into(), timestamp(invoice.voided_at.as_ref()));
    data.insert("void_reason".into(), text(&invoice.void_reason));
    data.insert(
        "version".into(),
        json!(i64::try_from(invoice.version).unwrap_or(i64::MAX)),
    );
    data.insert("exported_at".into(), micros(now));
    StagedRow {
        table: tables::INVOICES,
        key: event.event_id.clone(),
        data,
    }
}

fn line_row(
    invoice: &Invoice,
    line: &InvoiceLine,
    now: DateTime<Utc>,
) -> Result<StagedRow, Poison> {
    use tally_proto::invoicing::InvoiceLineKind;
    if line.id.is_empty() {
        return Err(format!("a line of {} has no id", invoice.id));
    }
    let kind = InvoiceLineKind::try_from(line.kind).map_or(Value::Null, |k| {
        enum_name(k.as_str_name(), "INVOICE_LINE_KIND_")
    });
    let period = line.period.as_ref();
    let amount = money(line.amount.as_ref());
    let mut data = Map::new();
    data.insert("invoice_id".into(), json!(invoice.id));
    data.insert("line_id".into(), json!(line.id));
    data.insert("customer_id".into(), json!(invoice.customer_id));
    data.insert("subscription_id".into(), text(&invoice.subscription_id));
    data.insert("kind".into(), kind);
    data.insert("description".into(), text(&line.description));
    data.insert(
        "period_start".into(),
        timestamp(period.and_then(|p| p.start_time.as_ref())),
    );
    data.insert(
        "period_end".into(),
        timestamp(period.and_then(|p| p.end_time.as_ref())),
    );
    data.insert("quantity".into(), decimal(line.quantity.as_ref()));
    data.insert("unit_price".into(), decimal(line.unit_price.as_ref()));
    data.insert("precise_amount".into(), money(line.precise_amount.as_ref()));
    data.insert(
        "amount".into(),
        if amount.is_null() { json!("0") } else { amount },
    );
    data.insert(
        "currency".into(),
        json!(line.amount.as_ref().map_or(invoice.currency.as_str(), |m| {
            if m.currency.is_empty() {
                invoice.currency.as_str()
            } else {
                m.currency.as_str()
            }
        })),
    );
    data.insert(
        "explanation".into(),
        line.detail
            .as_ref()
            .map_or(Value::Null, |detail| json!(explanation(detail).to_string())),
    );
    data.insert(
        "finalized_at".into(),
        timestamp(invoice.finalized_at.as_ref()),
    );
    data.insert("exported_at".into(), micros(now));
    Ok(StagedRow {
        table: tables::INVOICE_LINES,
        key: format!("{}/{}", invoice.id, line.id),
        data,
    })
}

fn usage_charge(charge: &tally_proto::rating::UsageCharge) -> Value {
    json!({
        "charge_key": charge.charge_key,
        "charge_name": charge.charge_name,
        "plan_version_id": charge.plan_version_id,
        "meter_code": charge.meter_code,
        "group": charge.group,
        "quantity": decimal(charge.quantity.as_ref()),
        "billable_quantity": decimal(charge.billable_quantity.as_ref()),
        "event_count": charge.event_count,
        "precise_amount": money(charge.precise_amount.as_ref()),
        "steps": charge.breakdown.iter().map(|step| json!({
            "description": step.description,
            "quantity": decimal(step.quantity.as_ref()),
            "unit_price": decimal(step.unit_price.as_ref()),
            "flat_amount": money(step.flat_amount.as_ref()),
            "amount": money(step.amount.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// A line's detail as JSON: what its amount comes from.
fn explanation(detail: &invoice_line::Detail) -> Value {
    match detail {
        invoice_line::Detail::Recurring(recurring) => json!({
            "recurring": {
                "plan_version_id": recurring.plan_version_id,
                "charge_key": recurring.charge_key,
                "period_amount": money(recurring.period_amount.as_ref()),
            }
        }),
        invoice_line::Detail::Usage(usage) => json!({
            "usage": usage.charge.as_ref().map_or(Value::Null, usage_charge)
        }),
        invoice_line::Detail::Proration(proration) => json!({
            "proration": {
                "plan_version_id": proration.plan_version_id,
                "charge_key": proration.charge_key,
                "factor": decimal(proration.factor.as_ref()),
                "period_amount": money(proration.period_amount.as_ref()),
                "prorated_start": timestamp(proration.prorated_period.as_ref().and_then(|p| p.start_time.as_ref())),
                "prorated_end": timestamp(proration.prorated_period.as_ref().and_then(|p| p.end_time.as_ref())),
            }
        }),
        invoice_line::Detail::MinimumTrueUp(minimum) => json!({
            "minimum_true_up": {
                "minimum_commitment": money(minimum.minimum_commitment.as_ref()),
                "charges_total": money(minimum.charges_total.as_ref()),
                "prorated_minimum": money(minimum.prorated_minimum.as_ref()),
            }
        }),
        invoice_line::Detail::CreditsApplied(credits) => json!({
            "credits_applied": {"applications": credits.applications.len()}
        }),
        invoice_line::Detail::Adjustment(adjustment) => json!({
            "adjustment": {
                "original_invoice_id": adjustment.original_invoice_id,
                "original_line_id": adjustment.original_line_id,
                "reason": adjustment.reason,
                "repriced_charge": adjustment.repriced_charge.as_ref().map_or(Value::Null, usage_charge),
            }
        }),
    }
}
