//! The facts the finance service receives, as plain domain values.
//!
//! The service maps each bus message (protobuf) into one of these at its edge; the posting
//! rules ([`super::posting`]) turn a fact into ledger transactions. Amounts are the rounded
//! amounts of the source (invoice line, payment, refund), in the fact's currency.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ExternalId;
use crate::ids::{CreditGrantId, CreditNoteId, CustomerId, InvoiceId, MeterCode};
use crate::money::{Currency, Money};
use crate::period::Period;

/// An invoice became final: its lines are what the customer owes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFinalized {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// Its currency; every line is in it.
    pub currency: Currency,
    /// When it was finalized (the effective instant of its transactions).
    pub finalized_at: DateTime<Utc>,
    /// Its lines, in invoice order.
    pub lines: Vec<FinalizedLine>,
}

/// One line of a finalized invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedLine {
    /// The line's id in invoicing (e.g. `il_…`).
    pub line_id: ExternalId,
    /// What it bills.
    pub kind: FinalizedLineKind,
    /// Its rounded amount; the sign the kind allows (see [`FinalizedLineKind`]).
    pub amount: Money,
}

/// What an invoice line bills; the kind fixes the sign of the amount and the account the
/// posting rules use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FinalizedLineKind {
    /// A recurring fee billed in advance for `service_period` (≥ 0).
    RecurringFee {
        /// The period the fee pays for.
        service_period: Period,
    },
    /// Usage of `meter` over `service_period`, billed in arrears (≥ 0).
    Usage {
        /// The meter.
        meter: MeterCode,
        /// The period the usage happened in.
        service_period: Period,
    },
    /// A one-off charge or a manual adjustment (either sign).
    OneOff,
    /// The charge for the rest of a period after a plan change (≥ 0).
    ProrationCharge {
        /// The part of the period it pays for.
        service_period: Period,
    },
    /// The credit for the unused part of a period after a plan change (≤ 0).
    ProrationCredit {
        /// The unused part of the period it gives back.
        service_period: Period,
    },
    /// The top-up to a plan's minimum commitment (≥ 0).
    MinimumTrueUp,
    /// A discount (≤ 0).
    Discount,
    /// Credits spent on this invoice (≤ 0).
    CreditsApplied {
        /// Where the credits came from.
        source: CreditSource,
    },
}

impl FinalizedLineKind {
    /// The kind's name as it appears in descriptions, e.g. `recurring_fee`.
    pub fn name(&self) -> &'static str {
        match self {
            FinalizedLineKind::RecurringFee { .. } => "recurring_fee",
            FinalizedLineKind::Usage { .. } => "usage",
            FinalizedLineKind::OneOff => "one_off",
            FinalizedLineKind::ProrationCharge { .. } => "proration_charge",
            FinalizedLineKind::ProrationCredit { .. } => "proration_credit",
            FinalizedLineKind::MinimumTrueUp => "minimum_true_up",
            FinalizedLineKind::Discount => "discount",
            FinalizedLineKind::CreditsApplied { .. } => "credits_applied",
        }
    }

    /// Whether an amount of this sign is allowed (zero always is).
    pub fn allows(&self, amount: &Money) -> bool {
        match self {
            FinalizedLineKind::RecurringFee { .. }
            | FinalizedLineKind::Usage { .. }
            | FinalizedLineKind::ProrationCharge { .. }
            | FinalizedLineKind::MinimumTrueUp => !amount.is_negative(),
            FinalizedLineKind::ProrationCredit { .. }
            | FinalizedLineKind::Discount
            | FinalizedLineKind::CreditsApplied { .. } => !amount.is_positive(),
            FinalizedLineKind::OneOff => true,
        }
    }

    /// The service period of a fee recognised ratably (recurring fees and prorations).
    pub fn deferred_service_period(&self) -> Option<&Period> {
        match self {
            FinalizedLineKind::RecurringFee { service_period }
            | FinalizedLineKind::ProrationCharge { service_period }
            | FinalizedLineKind::ProrationCredit { service_period } => Some(service_period),
            FinalizedLineKind::Usage { .. }
            | FinalizedLineKind::OneOff
            | FinalizedLineKind::MinimumTrueUp
            | FinalizedLineKind::Discount
            | FinalizedLineKind::CreditsApplied { .. } => None,
        }
    }
}

/// Where credits spent on an invoice (or burned against usage) came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditSource {
    /// Paid prepaid credits (a liability until used).
    Prepaid,
    /// Promotional (free) credits: contra-revenue when used.
    Promotional,
    /// The customer's credit balance (from negative invoices or credit notes).
    CustomerBalance,
}

/// A finalized invoice was voided: everything its finalization posted is reversed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceVoided {
    /// The invoice.
    pub invoice: InvoiceId,
    /// Its customer.
    pub customer: CustomerId,
    /// When it was voided.
    pub voided_at: DateTime<Utc>,
}

/// A card payment of an invoice succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    /// The payment's id in payments.
    pub payment_id: ExternalId,
    /// The invoice it pays.
    pub invoice: InvoiceId,
    /// The customer.
    pub customer: CustomerId,
    /// The amount collected (positive).
    pub amount: Money,
    /// When it succeeded.
    pub paid_at: DateTime<Utc>,
}

/// A refund of a payment succeeded (the money left).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSucceeded {
    /// The refund's id in payments.
    pub refund_id: ExternalId,
    /// The payment it refunds.
    pub payment_id: ExternalId,
    /// The invoice that payment paid.
    pub invoice: InvoiceId,
    /// The customer.
    pub customer: CustomerId,
    /// The amount refunded (positive).
    pub amount: Money,
    /// When it succeeded.
    pub refunded_at: DateTime<Utc>,
}

/// A credit note was issued against a finalized invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteIssued {
    /// The credit note.
    pub credit_note: CreditNoteId,
    /// The invoice it credits.
    pub invoice: InvoiceId,
    /// The customer.
    pub customer: CustomerId,
    /// Its currency (the invoice's).
    pub currency: Currency,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// What it credits (positive amounts).
    pub amounts: CreditNoteAmounts,
    /// How the customer gets the money.
    pub settlement: CreditNoteSettlement,
}

/// The amounts of a credit note: one total, or one amount per invoice line it corrects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum CreditNoteAmounts {
    /// One amount for the whole invoice (positive).
    Total {
        /// The amount.
        amount: Money,
    },
    /// Amounts per invoice line (each positive).
    PerLine {
        /// The lines.
        lines: Vec<CreditNoteLine>,
    },
}

/// The part of a credit note that corrects one invoice line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    /// The invoice line corrected.
    pub line_id: ExternalId,
    /// The amount credited (positive).
    pub amount: Money,
}

/// How a credit note reaches the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditNoteSettlement {
    /// The invoice is unpaid: the note reduces what is due.
    ReducesAmountDue,
    /// The invoice was paid and the money is not refunded: the customer keeps a credit.
    CustomerCreditBalance,
    /// The invoice was paid and the money is refunded (the refund fact pays it out).
    Refunded,
}

/// Usage of one meter by one customer on one UTC day, as rated: recognised as it happens.
///
/// Rating reports a day once (`sequence` 0) and, when late events or a re-rating change the
/// day's amount, again with the next sequence number and the *change* (either sign) as the
/// amount; each report is its own fact, so replays stay identical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRated {
    /// The customer.
    pub customer: CustomerId,
    /// The meter.
    pub meter: MeterCode,
    /// The UTC day the usage happened.
    pub day: NaiveDate,
    /// 0 for the first report of the day, then 1, 2, … for corrections.
    pub sequence: u32,
    /// The rated amount (first report) or its change (corrections), rounded.
    pub amount: Money,
}

/// Credits were granted to a customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsGranted {
    /// The grant.
    pub grant: CreditGrantId,
    /// The customer.
    pub customer: CustomerId,
    /// The amount granted (positive).
    pub amount: Money,
    /// When.
    pub granted_at: DateTime<Utc>,
    /// Paid or free.
    pub funding: CreditFunding,
}

/// Whether granted credits were bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditFunding {
    /// Bought: a receivable and a liability until used.
    Paid,
    /// Free: nothing owed, contra-revenue when used.
    Promotional,
}

/// Credits of a grant were used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsBurned {
    /// The burn's id in invoicing's wallet ledger.
    pub burn_id: ExternalId,
    /// The grant burned.
    pub grant: CreditGrantId,
    /// The customer.
    pub customer: CustomerId,
    /// The amount burned (positive).
    pub amount: Money,
    /// When.
    pub burned_at: DateTime<Utc>,
    /// Paid or free credits.
    pub funding: CreditFunding,
    /// The invoice the credits were applied to, if any. A burn on an invoice posts nothing:
    /// that invoice's `CreditsApplied` line already did.
    pub invoice: Option<InvoiceId>,
}

/// Any fact, for a service that dispatches on one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// See [`InvoiceFinalized`].
    InvoiceFinalized(InvoiceFinalized),
    /// See [`PaymentSucceeded`].
    PaymentSucceeded(PaymentSucceeded),
    /// See [`RefundSucceeded`].
    RefundSucceeded(RefundSucceeded),
    /// See [`CreditNoteIssued`].
    CreditNoteIssued(CreditNoteIssued),
    /// See [`UsageRated`].
    UsageRated(UsageRated),
    /// See [`CreditsGranted`].
    CreditsGranted(CreditsGranted),
    /// See [`CreditsBurned`].
    CreditsBurned(CreditsBurned),
}

impl Fact {
    /// The meters whose usage revenue accounts the fact's transactions (and an invoice's
    /// usage true-ups) touch: open them ([`open_usage_account`](super::open_usage_account))
    /// before posting.
    pub fn usage_meters(&self) -> Vec<&MeterCode> {
        match self {
            Fact::InvoiceFinalized(invoice) => invoice
                .lines
                .iter()
                .filter_map(|line| {
                    if let FinalizedLineKind::Usage { meter, .. } = &line.kind {
                        Some(meter)
                    } else {
                        None
                    }
                })
                .collect(),
            Fact::UsageRated(usage) => vec![&usage.meter],
            Fact::PaymentSucceeded(_)
            | Fact::RefundSucceeded(_)
            | Fact::CreditNoteIssued(_)
            | Fact::CreditsGranted(_)
            | Fact::CreditsBurned(_) => Vec::new(),
        }
    }
}
