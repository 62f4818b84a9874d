//! Invoice lines: the precise amount and the rounded amount side by side.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::InvoiceError;
use crate::ids::ChargeCode;
use crate::money::{Money, RoundingMode};
use crate::period::Period;
use crate::pricing::PriceBreakdown;

/// What a line bills for. The kind fixes the sign of its amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A recurring fee (≥ 0).
    Recurring,
    /// Usage of a meter (≥ 0).
    Usage,
    /// Credit for the unused part of a period after a change (≤ 0).
    ProrationCredit,
    /// Charge for the rest of a period after a change (≥ 0).
    ProrationCharge,
    /// Top-up to the plan's minimum commitment (≥ 0).
    MinimumTrueUp,
    /// Prepaid credits spent on this invoice (≤ 0); not part of the subtotal.
    CreditApplied,
    /// A manual or late-usage correction (either sign).
    Adjustment,
}

impl LineKind {
    fn sign_allows(self, amount: Decimal) -> bool {
        match self {
            LineKind::Recurring
            | LineKind::Usage
            | LineKind::ProrationCharge
            | LineKind::MinimumTrueUp => amount >= Decimal::ZERO,
            LineKind::ProrationCredit | LineKind::CreditApplied => amount <= Decimal::ZERO,
            LineKind::Adjustment => true,
        }
    }
}

/// One line of an invoice. The precise amount comes from rating; the amount is that,
/// rounded once with the invoice's rounding mode, and is what the totals add up.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::invoice::{InvoiceLine, LineKind};
/// use tally_domain::money::{Currency, Money, RoundingMode};
///
/// let line = InvoiceLine::new(
///     LineKind::Usage, "API calls", Money::new(dec!(2.5925907), Currency::USD), RoundingMode::HalfUp,
/// ).unwrap();
/// assert_eq!(line.precise_amount().amount(), dec!(2.5925907));
/// assert_eq!(line.amount().amount(), dec!(2.59));
/// assert!(InvoiceLine::new(LineKind::Usage, "x", Money::new(dec!(-1), Currency::USD), RoundingMode::HalfUp).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    kind: LineKind,
    description: String,
    charge: Option<ChargeCode>,
    period: Option<Period>,
    quantity: Option<Decimal>,
    precise_amount: Money,
    amount: Money,
    breakdown: Option<PriceBreakdown>,
}

impl InvoiceLine {
    /// A line whose amount is `precise_amount` rounded with `rounding`.
    pub fn new(
        kind: LineKind,
        description: impl Into<String>,
        precise_amount: Money,
        rounding: RoundingMode,
    ) -> Result<InvoiceLine, InvoiceError> {
        if !kind.sign_allows(precise_amount.amount()) {
            return Err(InvoiceError::LineSign {
                kind,
                amount: precise_amount,
            });
        }
        Ok(InvoiceLine {
            kind,
            description: description.into(),
            charge: None,
            period: None,
            quantity: None,
            amount: precise_amount.round(rounding),
            precise_amount,
            breakdown: None,
        })
    }

    /// Names the plan charge the line bills.
    pub fn with_charge(mut self, charge: ChargeCode) -> InvoiceLine {
        self.charge = Some(charge);
        self
    }

    /// The service period the line covers.
    pub fn with_period(mut self, period: Period) -> InvoiceLine {
        self.period = Some(period);
        self
    }

    /// The quantity billed.
    pub fn with_quantity(mut self, quantity: Decimal) -> InvoiceLine {
        self.quantity = Some(quantity);
        self
    }

    /// How the amount was reached.
    pub fn with_breakdown(mut self, breakdown: PriceBreakdown) -> InvoiceLine {
        self.breakdown = Some(breakdown);
        self
    }

    /// The kind.
    pub fn kind(&self) -> LineKind {
        self.kind
    }

    /// What the customer reads.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The plan charge, if any.
    pub fn charge(&self) -> Option<&ChargeCode> {
        self.charge.as_ref()
    }

    /// The service period, if any.
    pub fn period(&self) -> Option<Period> {
        self.period
    }

    /// The quantity, if any.
    pub fn quantity(&self) -> Option<Decimal> {
        self.quantity
    }

    /// The exact amount from rating.
    pub fn precise_amount(&self) -> Money {
        self.precise_amount
    }

    /// The rounded amount that is billed.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// The price breakdown, if any.
    pub fn breakdown(&self) -> Option<&PriceBreakdown> {
        self.breakdown.as_ref()
    }
}
