//! Revenue recognised over a range, by product line, by meter and by plan
//! (`GetRevenue`): read from the journal's revenue accounts, so the figures
//! tie out to the trial balance — every breakdown sums to the change of the
//! revenue accounts' balances over the range, contra-revenue netted.
//!
//! The product line and the meter come from the account (`4000` recurring
//! fees, `4100` one-off, `4200/<meter>` usage, `49xx` contra-revenue). The
//! plan comes from the invoice line an entry recognises: the plan version
//! `finance.subscription_fees` keeps for it (a recurring fee or a proration
//! charge, as invoiced); everything else — usage, one-off charges, credit
//! notes, proration credits (no fee row names their line) — is under the
//! empty plan. A voided invoice's fee rows are forgotten, so its revenue and
//! its reversal both fall under the empty plan: they cancel there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tally_domain::money::{Currency, Money};

use super::store;
use crate::error::FinanceServiceError;

/// A product line, in the chart's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProductLine {
    /// 4000.
    RecurringFees,
    /// 4100.
    OneOff,
    /// 4200/<meter>.
    Usage,
    /// 49xx.
    ContraRevenue,
}

impl ProductLine {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ProductLine::RecurringFees => "recurring_fees",
            ProductLine::OneOff => "one_off",
            ProductLine::Usage => "usage",
            ProductLine::ContraRevenue => "contra_revenue",
        }
    }

    /// The product line of a revenue account code, and the meter of a usage
    /// account; `None` for a code that is not a revenue account's.
    pub fn of_code(code: &str) -> Option<(Self, Option<&str>)> {
        if let Some(meter) = code.strip_prefix("4200/") {
            return Some((ProductLine::Usage, Some(meter)));
        }
        match code {
            "4000" => Some((ProductLine::RecurringFees, None)),
            "4100" => Some((ProductLine::OneOff, None)),
            _ if code.starts_with("49") => Some((ProductLine::ContraRevenue, None)),
            _ => None,
        }
    }
}

/// Revenue recognised over a range, exact, each breakdown summing to `total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revenue {
    /// Net revenue.
    pub total: Money,
    /// By product line, in the chart's order.
    pub by_product_line: Vec<(ProductLine, Money)>,
    /// Usage by meter code.
    pub by_meter: BTreeMap<String, Money>,
    /// By plan version id (`""`: revenue from no plan's fee).
    pub by_plan: BTreeMap<String, Money>,
}

/// Revenue recognised in `currency` in `[start, end)`.
pub async fn revenue(
    pool: &PgPool,
    currency: Currency,
    range: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Revenue, FinanceServiceError> {
    let rows = store::revenue_by_account_and_plan(pool, currency.code(), range).await?;
    summarise(currency, &rows)
}

/// Groups (account code, plan, amount) rows.
pub fn summarise(
    currency: Currency,
    rows: &[(String, String, Decimal)],
) -> Result<Revenue, FinanceServiceError> {
    let mut total = Decimal::ZERO;
    let mut lines: BTreeMap<ProductLine, Decimal> = BTreeMap::new();
    let mut meters: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut plans: BTreeMap<String, Decimal> = BTreeMap::new();
    for (code, plan, amount) in rows {
        let (line, meter) = ProductLine::of_code(code).ok_or_else(|| {
            FinanceServiceError::Internal(format!(
                "{code} is a revenue-kind account of no product line"
            ))
        })?;
        total += amount;
        *lines.entry(line).or_default() += amount;
        if let Some(meter) = meter {
            *meters.entry(meter.to_owned()).or_default() += amount;
        }
        *plans.entry(plan.clone()).or_default() += amount;
    }
    let money = |amount: Decimal| Money::new(amount, currency);
    Ok(Revenue {
        total: money(total),
        by_product_line: lines
            .into_iter()
            .map(|(line, amount)| (line, money(amount)))
            .collect(),
        by_meter: meters
            .into_iter()
            .map(|(key, amount)| (key, money(amount)))
            .collect(),
        by_plan: plans
            .into_iter()
            .map(|(key, amount)| (key, money(amount)))
            .collect(),
    })
}
