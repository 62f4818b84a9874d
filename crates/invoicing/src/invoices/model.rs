//! Invoicing's own credit note, as `invoicing.credit_notes` stores it
//! (explicit columns; the lines as JSON). The wire
//! `tally.invoicing.v1.CreditNote` is made at the edge (`mapping.rs`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::money::Currency;

use crate::text_enum::text_enum;

text_enum! {
    /// Why a credit note was issued (`credit_notes.reason`).
    pub enum CreditNoteReason {
        Duplicate = "duplicate",
        Fraudulent = "fraudulent",
        OrderChange = "order_change",
        ProductUnsatisfactory = "product_unsatisfactory",
        BillingError = "billing_error",
        Refund = "refund",
    }
}

/// An immutable reduction of a finalized invoice (amounts in `currency`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditNote {
    /// `cn_…`.
    pub id: String,
    /// Gapless per prefix, e.g. `TALLY-CN-000007`.
    pub number: String,
    pub invoice_id: String,
    pub customer_id: String,
    pub reason: CreditNoteReason,
    pub memo: String,
    pub lines: Vec<CreditNoteLine>,
    pub currency: Currency,
    /// Sum of the lines.
    pub total: Decimal,
    /// Added to the customer's credit balance (a grant).
    pub credited_to_balance: bool,
    /// The payments refund this note mirrors (`ref_…`).
    pub refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The part payments returns to the customer's payment method.
    pub refund_amount: Option<Decimal>,
}

/// One credited line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteLine {
    /// `il_…`; empty for an amount not tied to a line.
    pub invoice_line_id: String,
    pub description: String,
    /// Positive, in the note's currency.
    pub amount: Decimal,
}
