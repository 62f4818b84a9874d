//! Credit notes between the wire (`tally.invoicing.v1.CreditNote`) and
//! invoicing's model. Reading the wire is strict: an unset or unknown
//! reason, a missing amount or instant is an error, never a default.

use rust_decimal::Decimal;
use tally_domain::money::Currency;
use tally_proto::common;
use tally_proto::convert::money_value;
use tally_proto::invoicing::{self as wire, CreditNoteReason as WireReason};

use super::model::{CreditNote, CreditNoteLine, CreditNoteReason};
use crate::error::{InvoicingError, Result};
use crate::wire::{instant, money, timestamp};

/// The model reason of a wire reason (`None` for unset or unknown).
pub fn reason_from_wire(reason: WireReason) -> Option<CreditNoteReason> {
    match reason {
        WireReason::Unspecified => None,
        WireReason::Duplicate => Some(CreditNoteReason::Duplicate),
        WireReason::Fraudulent => Some(CreditNoteReason::Fraudulent),
        WireReason::OrderChange => Some(CreditNoteReason::OrderChange),
        WireReason::ProductUnsatisfactory => Some(CreditNoteReason::ProductUnsatisfactory),
        WireReason::BillingError => Some(CreditNoteReason::BillingError),
        WireReason::Refund => Some(CreditNoteReason::Refund),
    }
}

/// The wire reason.
pub fn reason_to_wire(reason: CreditNoteReason) -> WireReason {
    match reason {
        CreditNoteReason::Duplicate => WireReason::Duplicate,
        CreditNoteReason::Fraudulent => WireReason::Fraudulent,
        CreditNoteReason::OrderChange => WireReason::OrderChange,
        CreditNoteReason::ProductUnsatisfactory => WireReason::ProductUnsatisfactory,
        CreditNoteReason::BillingError => WireReason::BillingError,
        CreditNoteReason::Refund => WireReason::Refund,
    }
}

/// The model of a complete wire credit note.
pub fn from_wire(note: &wire::CreditNote) -> Result<CreditNote> {
    let invalid = |what: &str| InvoicingError::Internal(format!("credit note {}: {what}", note.id));
    let total = note.total.as_ref().ok_or_else(|| invalid("no total"))?;
    let currency = Currency::from_code(&total.currency).map_err(InvoicingError::internal)?;
    let amount = |value: &common::Money| -> Result<Decimal> {
        if value.currency != total.currency {
            return Err(invalid("amounts in two currencies"));
        }
        tally_proto::convert::decimal(&value.amount).map_err(InvoicingError::internal)
    };
    let reason = WireReason::try_from(note.reason)
        .ok()
        .and_then(reason_from_wire)
        .ok_or_else(|| invalid("no reason"))?;
    Ok(CreditNote {
        id: note.id.clone(),
        number: note.number.clone(),
        invoice_id: note.invoice_id.clone(),
        customer_id: note.customer_id.clone(),
        reason,
        memo: note.memo.clone(),
        lines: note
            .lines
            .iter()
            .map(|line| {
                Ok(CreditNoteLine {
                    invoice_line_id: line.invoice_line_id.clone(),
                    description: line.description.clone(),
                    amount: amount(
                        line.amount
                            .as_ref()
                            .ok_or_else(|| invalid("a line has no amount"))?,
                    )?,
                })
            })
            .collect::<Result<_>>()?,
        currency,
        total: amount(total)?,
        credited_to_balance: note.credited_to_balance,
        refund_id: (!note.refund_id.is_empty()).then(|| note.refund_id.clone()),
        created_at: instant(note.created_at.as_ref()).ok_or_else(|| invalid("no created_at"))?,
        refund_amount: note.refund_amount.as_ref().map(amount).transpose()?,
    })
}

/// The wire form of a credit note.
pub fn to_wire(note: &CreditNote) -> wire::CreditNote {
    wire::CreditNote {
        id: note.id.clone(),
        number: note.number.clone(),
        invoice_id: note.invoice_id.clone(),
        customer_id: note.customer_id.clone(),
        reason: reason_to_wire(note.reason) as i32,
        memo: note.memo.clone(),
        lines: note
            .lines
            .iter()
            .map(|line| wire::CreditNoteLine {
                invoice_line_id: line.invoice_line_id.clone(),
                description: line.description.clone(),
                // The text the request gave (scale included), as first stored.
                amount: Some(money_value(line.amount, note.currency)),
            })
            .collect(),
        total: Some(money(note.total, note.currency)),
        credited_to_balance: note.credited_to_balance,
        refund_id: note.refund_id.clone().unwrap_or_default(),
        created_at: Some(timestamp(note.created_at)),
        refund_amount: note
            .refund_amount
            .map(|amount| money(amount, note.currency)),
    }
}
