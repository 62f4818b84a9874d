//! A line being assembled, in invoicing's own model (its wire form is made
//! only in `mapping.rs`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::invoice::{InvoiceLine as DomainLine, LineKind as DomainKind};
use tally_domain::money::{Currency, LINE_ROUNDING, Money};
use tally_domain::period::Period;

use crate::billing::model::{CreditApplication, Explanation, LineKind, Range, StoredLine};
use crate::error::{InvoicingError, Result};

/// A line of an invoice before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub kind: LineKind,
    pub description: String,
    pub service: Period,
    pub quantity: Decimal,
    pub unit_price: Option<Decimal>,
    pub precise: Decimal,
    pub amount: Decimal,
    pub plan_version_id: String,
    pub charge_key: String,
    pub in_advance: bool,
    pub usage_period_start: Option<DateTime<Utc>>,
    pub original_invoice_id: Option<String>,
    /// How the amount came about (matches `kind`).
    pub explanation: Option<Explanation>,
}

/// The domain kind of a line's kind.
pub fn domain_kind(kind: LineKind) -> DomainKind {
    match kind {
        LineKind::Recurring => DomainKind::Recurring,
        LineKind::Usage => DomainKind::Usage,
        LineKind::ProrationCredit => DomainKind::ProrationCredit,
        LineKind::ProrationCharge => DomainKind::ProrationCharge,
        LineKind::MinimumTrueUp => DomainKind::MinimumTrueUp,
        LineKind::CreditsApplied => DomainKind::CreditApplied,
        LineKind::Adjustment => DomainKind::Adjustment,
    }
}

/// An explanation's amount as invoices have always shown it: at least the
/// currency's minor-unit digits (`10.00`, not `10`); more are kept.
pub fn shown_money(amount: Decimal, currency: Currency) -> Money {
    let mut amount = amount;
    if amount.scale() < currency.minor_units() {
        amount.rescale(currency.minor_units());
    }
    Money::new(amount, currency)
}

/// An explanation's ratio as invoices have always shown it: without
/// trailing zeros.
pub fn shown_decimal(value: Decimal) -> Decimal {
    value.normalize()
}

/// A period as an explanation's range.
pub fn range(period: &Period) -> Range {
    Range {
        start: period.start(),
        end: period.end(),
    }
}

impl Line {
    /// A line of `kind` whose amount is `precise` rounded once (half-even);
    /// the domain checks the sign against the kind.
    pub fn new(
        kind: LineKind,
        description: impl Into<String>,
        service: Period,
        precise: Money,
    ) -> Result<Line> {
        let description = description.into();
        let domain = DomainLine::new(
            domain_kind(kind),
            description.clone(),
            precise,
            LINE_ROUNDING,
        )
        .map_err(InvoicingError::internal)?;
        Ok(Line {
            kind,
            description,
            service,
            quantity: Decimal::ONE,
            unit_price: None,
            precise: precise.amount(),
            amount: domain.amount().amount(),
            plan_version_id: String::new(),
            charge_key: String::new(),
            in_advance: false,
            usage_period_start: None,
            original_invoice_id: None,
            explanation: None,
        })
    }

    /// The line of the credit grants `burned` (grant id and amount, in
    /// burn-down order; not empty) against an invoice in `currency`.
    pub fn credits_applied(
        burned: &[(String, Money)],
        service: Period,
        currency: Currency,
    ) -> Result<Line> {
        let total: Decimal = burned.iter().map(|(_, amount)| amount.amount()).sum();
        let mut line = Line::new(
            LineKind::CreditsApplied,
            "Credits applied",
            service,
            Money::new(-total, currency),
        )?;
        line.explanation = Some(Explanation::CreditsApplied {
            applications: burned
                .iter()
                .map(|(grant, amount)| CreditApplication {
                    credit_grant_id: grant.clone(),
                    amount: Some(shown_money(amount.amount(), currency)),
                })
                .collect(),
        });
        Ok(line)
    }

    /// The domain line (for totals).
    pub fn domain(&self, currency: Currency) -> Result<DomainLine> {
        DomainLine::new(
            domain_kind(self.kind),
            self.description.clone(),
            Money::new(self.precise, currency),
            LINE_ROUNDING,
        )
        .map_err(InvoicingError::internal)
    }

    /// The line as stored under `id` (`il_…`; empty for a preview).
    pub fn stored(&self, id: String) -> StoredLine {
        StoredLine {
            id,
            kind: self.kind,
            description: self.description.clone(),
            service_start: self.service.start(),
            service_end: self.service.end(),
            quantity: self.quantity,
            unit_price: self.unit_price,
            precise_amount: self.precise,
            amount: self.amount,
            explanation: self.explanation.clone(),
        }
    }
}
