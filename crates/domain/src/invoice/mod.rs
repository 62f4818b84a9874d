//! Invoices: lines, totals, the status machine, and credit notes against finalized invoices.

mod line;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use line::{InvoiceLine, LineKind};

use crate::credit::CreditApplication;
use crate::ids::{CreditNoteId, CustomerId, InvoiceId};
use crate::money::{Currency, Money, MoneyError, RoundingMode};

/// What can go wrong with an invoice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// The status machine does not allow this move.
    #[error("cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// Current status.
        from: InvoiceStatus,
        /// Requested status.
        to: InvoiceStatus,
    },
    /// Lines and credits can only change on a draft.
    #[error("invoice is {status:?}; only a draft can change")]
    NotDraft {
        /// Current status.
        status: InvoiceStatus,
    },
    /// A line's sign contradicts its kind (a negative usage line, a positive credit).
    #[error("a {kind:?} line cannot be {amount}")]
    LineSign {
        /// The kind.
        kind: LineKind,
        /// The amount.
        amount: Money,
    },
    /// Credits would take the total below zero.
    #[error("credits of {credits} exceed the amount due {due}")]
    CreditsExceedDue {
        /// Credits offered.
        credits: Money,
        /// Amount due before them.
        due: Money,
    },
    /// An invoice cannot be finalized with a negative total; carry the excess as a credit grant.
    #[error("total is negative: {total}")]
    NegativeTotal {
        /// The total.
        total: Money,
    },
    /// Credit notes need a finalized, paid or uncollectible invoice.
    #[error("cannot credit a {status:?} invoice")]
    NotCreditable {
        /// Current status.
        status: InvoiceStatus,
    },
    /// A credit note must be positive and in whole minor units.
    #[error("credit note amount must be positive and rounded, got {amount}")]
    InvalidCreditNoteAmount {
        /// The amount.
        amount: Money,
    },
    /// Credit notes can never exceed what was billed.
    #[error("credit note of {amount} exceeds the {remaining} left to credit")]
    CreditNoteExceedsRemaining {
        /// The amount asked.
        amount: Money,
        /// What is left to credit.
        remaining: Money,
    },
    /// Money arithmetic failed (including a line in another currency).
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Where an invoice is in its life.
///
/// `draft → finalized → paid | void | uncollectible`, and `uncollectible → paid | void`
/// (a written-off invoice can still be paid, or voided). Paid and void are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Being assembled; lines may change.
    Draft,
    /// Issued and immutable; awaiting payment.
    Finalized,
    /// Paid; terminal.
    Paid,
    /// Canceled after finalization; terminal.
    Void,
    /// Written off; may still be paid or voided.
    Uncollectible,
}

impl InvoiceStatus {
    /// Whether the status machine allows `self → to`.
    pub fn can_transition_to(self, to: InvoiceStatus) -> bool {
        use InvoiceStatus::{Draft, Finalized, Paid, Uncollectible, Void};
        match self {
            Draft => to == Finalized,
            Finalized => matches!(to, Paid | Void | Uncollectible),
            Uncollectible => matches!(to, Paid | Void),
            Paid | Void => false,
        }
    }
}

/// A credit note: money given back against a finalized invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// Its id.
    pub id: CreditNoteId,
    /// The invoice it credits.
    pub invoice: InvoiceId,
    /// The amount credited (positive).
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
}

/// An invoice.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::ids::{CreditNoteId, CustomerId, InvoiceId};
/// use tally_domain::invoice::{Invoice, InvoiceError, InvoiceLine, LineKind};
/// use tally_domain::money::{Currency, Money, RoundingMode};
///
/// let usd = |amount| Money::new(amount, Currency::USD);
/// let mut invoice = Invoice::draft(InvoiceId::parse("inv_1").unwrap(), CustomerId::parse("cus_1").unwrap(),
///     Currency::USD, RoundingMode::HalfEven);
/// invoice.add_line(InvoiceLine::new(LineKind::Recurring, "Pro", usd(dec!(20)), RoundingMode::HalfEven).unwrap()).unwrap();
/// invoice.add_line(InvoiceLine::new(LineKind::ProrationCredit, "Unused Basic", usd(dec!(-5)), RoundingMode::HalfEven).unwrap()).unwrap();
/// assert_eq!(invoice.total().unwrap(), usd(dec!(15.00)));
/// invoice.finalize().unwrap();
/// let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// invoice.issue_credit_note(CreditNoteId::parse("cn_1").unwrap(), usd(dec!(10)), "goodwill", now).unwrap();
/// let too_much = invoice.issue_credit_note(CreditNoteId::parse("cn_2").unwrap(), usd(dec!(5.01)), "again", now);
/// assert!(matches!(too_much, Err(InvoiceError::CreditNoteExceedsRemaining { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    id: InvoiceId,
    customer: CustomerId,
    currency: Currency,
    rounding: RoundingMode,
    status: InvoiceStatus,
    lines: Vec<InvoiceLine>,
    credit_notes: Vec<CreditNote>,
}

impl Invoice {
    /// An empty draft whose lines are rounded with `rounding`.
    pub fn draft(
        id: InvoiceId,
        customer: CustomerId,
        currency: Currency,
        rounding: RoundingMode,
    ) -> Invoice {
        Invoice {
            id,
            customer,
            currency,
            rounding,
            status: InvoiceStatus::Draft,
            lines: Vec::new(),
            credit_notes: Vec::new(),
        }
    }

    /// The id.
    pub fn id(&self) -> &InvoiceId {
        &self.id
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The rounding mode of its lines.
    pub fn rounding(&self) -> RoundingMode {
        self.rounding
    }

    /// The status.
    pub fn status(&self) -> InvoiceStatus {
        self.status
    }

    /// The lines.
    pub fn lines(&self) -> &[InvoiceLine] {
        &self.lines
    }

    /// The credit notes issued against it.
    pub fn credit_notes(&self) -> &[CreditNote] {
        &self.credit_notes
    }

    /// Adds a line to a draft; the line must be in the invoice's currency.
    pub fn add_line(&mut self, line: InvoiceLine) -> Result<(), InvoiceError> {
        self.require_draft()?;
        if line.amount().currency() != self.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: line.amount().currency(),
            }
            .into());
        }
        self.lines.push(line);
        Ok(())
    }

    /// Adds one credit line per grant of `application` (which must not exceed the amount due).
    pub fn apply_credits(&mut self, application: &CreditApplication) -> Result<(), InvoiceError> {
        self.require_draft()?;
        let due = self.total()?;
        if application.total.amount() > due.amount() {
            return Err(InvoiceError::CreditsExceedDue {
                credits: application.total,
                due,
            });
        }
        for (grant, amount) in &application.applied {
            let line = InvoiceLine::new(
                LineKind::CreditApplied,
                format!("Credit {grant}"),
                amount.negated(),
                self.rounding,
            )?;
            self.add_line(line)?;
        }
        Ok(())
    }

    /// Sum of the rounded lines except credits applied.
    pub fn subtotal(&self) -> Result<Money, InvoiceError> {
        self.sum_lines(|kind| kind != LineKind::CreditApplied)
    }

    /// Sum of the credits applied (zero or negative).
    pub fn credits(&self) -> Result<Money, InvoiceError> {
        self.sum_lines(|kind| kind == LineKind::CreditApplied)
    }

    /// `subtotal + credits`: what the customer owes.
    pub fn total(&self) -> Result<Money, InvoiceError> {
        Ok(self
            .subtotal()?
            .checked_add(&self.credits()?)?
            .round(self.rounding))
    }

    /// Total of the credit notes issued.
    pub fn credited(&self) -> Result<Money, InvoiceError> {
        Ok(Money::sum(
            self.currency,
            self.credit_notes.iter().map(|note| &note.amount),
        )?)
    }

    /// Draft → finalized; from now on the invoice is immutable. The total must not be negative.
    pub fn finalize(&mut self) -> Result<(), InvoiceError> {
        let total = self.total()?;
        if total.is_negative() {
            return Err(InvoiceError::NegativeTotal { total });
        }
        self.transition(InvoiceStatus::Finalized)
    }

    /// Finalized or uncollectible → paid.
    pub fn mark_paid(&mut self) -> Result<(), InvoiceError> {
        self.transition(InvoiceStatus::Paid)
    }

    /// Finalized or uncollectible → void.
    pub fn void(&mut self) -> Result<(), InvoiceError> {
        self.transition(InvoiceStatus::Void)
    }

    /// Finalized → uncollectible.
    pub fn mark_uncollectible(&mut self) -> Result<(), InvoiceError> {
        self.transition(InvoiceStatus::Uncollectible)
    }

    /// Issues a credit note; all credit notes together never exceed the invoice total.
    pub fn issue_credit_note(
        &mut self,
        id: CreditNoteId,
        amount: Money,
        reason: impl Into<String>,
        issued_at: DateTime<Utc>,
    ) -> Result<&CreditNote, InvoiceError> {
        match self.status {
            InvoiceStatus::Finalized | InvoiceStatus::Paid | InvoiceStatus::Uncollectible => {}
            InvoiceStatus::Draft | InvoiceStatus::Void => {
                return Err(InvoiceError::NotCreditable {
                    status: self.status,
                });
            }
        }
        if !amount.is_positive() || !amount.is_rounded() {
            return Err(InvoiceError::InvalidCreditNoteAmount { amount });
        }
        let remaining = self.total()?.checked_sub(&self.credited()?)?;
        if amount.checked_sub(&remaining)?.is_positive() {
            return Err(InvoiceError::CreditNoteExceedsRemaining { amount, remaining });
        }
        self.credit_notes.push(CreditNote {
            id,
            invoice: self.id.clone(),
            amount,
            reason: reason.into(),
            issued_at,
        });
        Ok(&self.credit_notes[self.credit_notes.len() - 1])
    }

    fn transition(&mut self, to: InvoiceStatus) -> Result<(), InvoiceError> {
        if !self.status.can_transition_to(to) {
            return Err(InvoiceError::InvalidTransition {
                from: self.status,
                to,
            });
        }
        self.status = to;
        Ok(())
    }

    fn require_draft(&self) -> Result<(), InvoiceError> {
        match self.status {
            InvoiceStatus::Draft => Ok(()),
            InvoiceStatus::Finalized
            | InvoiceStatus::Paid
            | InvoiceStatus::Void
            | InvoiceStatus::Uncollectible => Err(InvoiceError::NotDraft {
                status: self.status,
            }),
        }
    }

    fn sum_lines(&self, include: impl Fn(LineKind) -> bool) -> Result<Money, InvoiceError> {
        let mut amounts = self
            .lines
            .iter()
            .filter(|line| include(line.kind()))
            .map(InvoiceLine::amount);
        Ok(amounts.try_fold(Money::zero(self.currency), |sum, amount| {
            sum.checked_add(&amount)
        })?)
    }
}

#[cfg(test)]
mod tests;
