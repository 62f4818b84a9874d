//! A line being assembled, and its wire form.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::invoice::{InvoiceLine as DomainLine, LineKind};
use tally_domain::money::{Currency, LINE_ROUNDING, Money};
use tally_domain::period::Period;
use tally_proto::invoicing::{self as proto, InvoiceLineKind, invoice_line};

use crate::error::{InvoicingError, Result};
use crate::wire::{decimal, money, period_range};

/// A line of an invoice before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub kind: InvoiceLineKind,
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
    pub detail: Option<invoice_line::Detail>,
}

/// The domain kind of a wire kind.
pub fn domain_kind(kind: InvoiceLineKind) -> LineKind {
    match kind {
        InvoiceLineKind::Recurring | InvoiceLineKind::Unspecified => LineKind::Recurring,
        InvoiceLineKind::Usage => LineKind::Usage,
        InvoiceLineKind::ProrationCredit => LineKind::ProrationCredit,
        InvoiceLineKind::ProrationCharge => LineKind::ProrationCharge,
        InvoiceLineKind::MinimumTrueUp => LineKind::MinimumTrueUp,
        InvoiceLineKind::CreditsApplied => LineKind::CreditApplied,
        InvoiceLineKind::Adjustment => LineKind::Adjustment,
    }
}

/// The stored name of a kind.
pub fn kind_name(kind: InvoiceLineKind) -> &'static str {
    match kind {
        InvoiceLineKind::Recurring | InvoiceLineKind::Unspecified => "recurring",
        InvoiceLineKind::Usage => "usage",
        InvoiceLineKind::ProrationCredit => "proration_credit",
        InvoiceLineKind::ProrationCharge => "proration_charge",
        InvoiceLineKind::MinimumTrueUp => "minimum_true_up",
        InvoiceLineKind::CreditsApplied => "credits_applied",
        InvoiceLineKind::Adjustment => "adjustment",
    }
}

impl Line {
    /// A line of `kind` whose amount is `precise` rounded once (half-even);
    /// the domain checks the sign against the kind.
    pub fn new(
        kind: InvoiceLineKind,
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
            detail: None,
        })
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

    /// The wire line.
    pub fn to_proto(&self, id: String, currency: Currency) -> proto::InvoiceLine {
        proto::InvoiceLine {
            id,
            kind: self.kind as i32,
            description: self.description.clone(),
            period: Some(period_range(&self.service)),
            quantity: Some(decimal(self.quantity)),
            unit_price: self.unit_price.map(decimal),
            precise_amount: Some(money(self.precise, currency)),
            amount: Some(money(self.amount, currency)),
            detail: self.detail.clone(),
        }
    }
}
