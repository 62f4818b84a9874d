//! Priced lines under terms and the steps that explain them.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::TermsError;
use super::effective::PeriodShare;
use crate::ids::{ChargeCode, MeterCode};
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::{Currency, Money, MoneyError, RoundingMode};
use crate::period::Period;
use crate::pricing::PriceBreakdown;

/// What a line under terms bills for; the kind fixes its sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermsLineKind {
    /// A recurring charge, net of its discounts (≥ 0).
    Recurring,
    /// A usage charge, net of its discounts (≥ 0).
    Usage,
    /// Top-up to the minimum spend (≥ 0).
    MinimumTrueUp,
    /// What the maximum spend takes off (≤ 0).
    MaximumAdjustment,
    /// What earlier threshold invoices of the period billed (≤ 0).
    BilledEarlier,
}

impl TermsLineKind {
    /// The invoice line kind it is written as. The maximum adjustment and the deduction of
    /// earlier threshold invoices are (negative) adjustments.
    pub fn invoice_kind(self) -> LineKind {
        match self {
            TermsLineKind::Recurring => LineKind::Recurring,
            TermsLineKind::Usage => LineKind::Usage,
            TermsLineKind::MinimumTrueUp => LineKind::MinimumTrueUp,
            TermsLineKind::MaximumAdjustment | TermsLineKind::BilledEarlier => LineKind::Adjustment,
        }
    }

    /// Whether the kind takes money off (its amount is ≤ 0).
    pub fn is_deduction(self) -> bool {
        match self {
            TermsLineKind::Recurring | TermsLineKind::Usage | TermsLineKind::MinimumTrueUp => false,
            TermsLineKind::MaximumAdjustment | TermsLineKind::BilledEarlier => true,
        }
    }
}

/// One step of a line's amount under terms, in the documented order; amounts are exact
/// and in the line's currency. Pricing steps reuse the catalog's [`PriceBreakdown`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TermStep {
    /// A usage discount took free units off the quantity before pricing.
    FreeUnits {
        /// The usage discount (`usage_discounts[0]`).
        term: String,
        /// Its name.
        name: String,
        /// The meter.
        meter: MeterCode,
        /// Units taken off this charge's usage.
        quantity: Decimal,
    },
    /// The list price of the plan version priced the usage.
    ListPrice {
        /// How.
        breakdown: PriceBreakdown,
    },
    /// An override priced the usage in place of the list price.
    PriceOverride {
        /// The override (`overrides[0]`).
        term: String,
        /// What the list price would have been.
        list_amount: Decimal,
        /// How the override priced it.
        breakdown: PriceBreakdown,
    },
    /// A percentage discount.
    PercentageDiscount {
        /// The discount (`discounts[1]`).
        term: String,
        /// Its name.
        name: String,
        /// The percentage.
        percent: Decimal,
        /// What the line had left before it.
        base: Decimal,
        /// What it took off (≤ 0).
        amount: Decimal,
    },
    /// This line's share of a fixed discount.
    FixedDiscount {
        /// The discount.
        term: String,
        /// Its name.
        name: String,
        /// The discount's whole amount for the period.
        discount: Decimal,
        /// What it took off this line (≤ 0).
        amount: Decimal,
    },
    /// The minimum spend lifted the period's usage.
    MinimumCommitment {
        /// The minimum (`minimum`, `ramp[0].minimum`, `plan.minimum_commitment`).
        term: String,
        /// The minimum for a full period.
        per_period: Decimal,
        /// The minimum for this period.
        minimum: Decimal,
        /// The stub's share, if prorated.
        share: Option<PeriodShare>,
        /// What the usage lines billed.
        usage: Decimal,
    },
    /// The maximum spend capped the period's usage.
    MaximumSpend {
        /// The maximum.
        term: String,
        /// The maximum for a full period.
        per_period: Decimal,
        /// The maximum for this period.
        maximum: Decimal,
        /// The stub's share, if prorated.
        share: Option<PeriodShare>,
        /// What the usage lines billed before the cap.
        usage: Decimal,
    },
    /// Earlier threshold invoices of the same period already billed this much.
    BilledEarlier {
        /// How many invoices.
        invoices: usize,
        /// What they billed together.
        billed: Decimal,
    },
}

/// A line priced under terms: the precise amount from the steps and the amount rounded
/// once, with the invoice's rounding mode, exactly as [`InvoiceLine::new`] rounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermsLine {
    kind: TermsLineKind,
    description: String,
    charge: Option<ChargeCode>,
    quantity: Option<Decimal>,
    precise_amount: Money,
    amount: Money,
    steps: Vec<TermStep>,
}

impl TermsLine {
    pub(crate) fn new(
        kind: TermsLineKind,
        description: String,
        precise_amount: Money,
        rounding: RoundingMode,
        steps: Vec<TermStep>,
    ) -> TermsLine {
        TermsLine {
            kind,
            description,
            charge: None,
            quantity: None,
            amount: precise_amount.round(rounding),
            precise_amount,
            steps,
        }
    }

    pub(crate) fn for_charge(mut self, charge: ChargeCode, quantity: Option<Decimal>) -> TermsLine {
        self.charge = Some(charge);
        self.quantity = quantity;
        self
    }

    /// The kind.
    pub fn kind(&self) -> TermsLineKind {
        self.kind
    }

    /// What the customer reads.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The charge billed, for a charge line.
    pub fn charge(&self) -> Option<&ChargeCode> {
        self.charge.as_ref()
    }

    /// The quantity the charge was priced on (before free units), for a quantity charge.
    pub fn quantity(&self) -> Option<Decimal> {
        self.quantity
    }

    /// The exact amount.
    pub fn precise_amount(&self) -> Money {
        self.precise_amount
    }

    /// The amount billed: the precise amount rounded once.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// How the amount was reached, in order.
    pub fn steps(&self) -> &[TermStep] {
        &self.steps
    }

    /// The price breakdown of the list price or the override, if the line has one.
    pub fn price_breakdown(&self) -> Option<&PriceBreakdown> {
        self.steps.iter().find_map(|step| match step {
            TermStep::ListPrice { breakdown } | TermStep::PriceOverride { breakdown, .. } => {
                Some(breakdown)
            }
            TermStep::FreeUnits { .. }
            | TermStep::PercentageDiscount { .. }
            | TermStep::FixedDiscount { .. }
            | TermStep::MinimumCommitment { .. }
            | TermStep::MaximumSpend { .. }
            | TermStep::BilledEarlier { .. } => None,
        })
    }

    /// The invoice line for `period`, through [`InvoiceLine::new`] (same rounding, same
    /// sign rules); the price breakdown goes with it, the term steps stay here.
    pub fn to_invoice_line(
        &self,
        period: Period,
        rounding: RoundingMode,
    ) -> Result<InvoiceLine, TermsError> {
        let mut line = InvoiceLine::new(
            self.kind.invoice_kind(),
            self.description.clone(),
            self.precise_amount,
            rounding,
        )?
        .with_period(period);
        if let Some(charge) = &self.charge {
            line = line.with_charge(charge.clone());
        }
        if let Some(quantity) = self.quantity {
            line = line.with_quantity(quantity);
        }
        if let Some(breakdown) = self.price_breakdown() {
            line = line.with_breakdown(breakdown.clone());
        }
        Ok(line)
    }
}

/// The lines of one invoice under terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedPeriod {
    period: Period,
    currency: Currency,
    lines: Vec<TermsLine>,
}

impl PricedPeriod {
    pub(crate) fn new(period: Period, currency: Currency, lines: Vec<TermsLine>) -> PricedPeriod {
        PricedPeriod {
            period,
            currency,
            lines,
        }
    }

    /// The billing period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The lines: charge lines in charge order, then the true-up or the cap adjustment,
    /// then the deduction of earlier threshold invoices.
    pub fn lines(&self) -> &[TermsLine] {
        &self.lines
    }

    /// The sum of the rounded line amounts: what the invoice bills.
    pub fn total(&self) -> Result<Money, MoneyError> {
        Money::sum(self.currency, self.lines.iter().map(|line| &line.amount))
    }

    /// The line of `charge`.
    pub fn line(&self, charge: &ChargeCode) -> Option<&TermsLine> {
        self.lines
            .iter()
            .find(|line| line.charge.as_ref() == Some(charge))
    }

    /// The line of `kind` (the first, for charge kinds).
    pub fn line_of_kind(&self, kind: TermsLineKind) -> Option<&TermsLine> {
        self.lines.iter().find(|line| line.kind == kind)
    }

    pub(crate) fn push(&mut self, line: TermsLine) {
        self.lines.push(line);
    }
}
