//! Usage of already invoiced periods that changed after their invoice was
//! finalized (events arrive up to the ingest backfill window late): which
//! periods to recheck, and the adjustment line for each.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::money::Money;
use tally_domain::period::Period;

use crate::billing::lines::Line;
use crate::billing::model::{Explanation, LineKind};
use crate::billing::store::billed::{self, BilledUsagePeriod, UsagePeriodsQuery};
use crate::error::{InvoicingError, Result};
use crate::subscriptions::Subscription;

use super::Composer;

impl Composer<'_> {
    /// Usage of already invoiced periods that changed after their invoice
    /// was finalized (events arrive up to the ingest backfill window late):
    /// one adjustment line per period, the re-priced total minus what was billed.
    pub(super) async fn late_usage(
        &mut self,
        previous_boundary: DateTime<Utc>,
        current: &Period,
    ) -> Result<Vec<Line>> {
        let subscription = self.subscription;
        let periods = match self.late.take() {
            Some((read_for, periods)) if read_for == previous_boundary => periods,
            _ => {
                late_periods(
                    &mut *self.connection,
                    subscription,
                    previous_boundary,
                    self.lookback,
                    self.exclude_invoice,
                )
                .await?
            }
        };
        let mut lines = Vec::new();
        for (billing_period, invoice_id) in periods {
            if billing_period.start() == current.start() {
                continue;
            }
            let response = self.usage_of(&billing_period).await?;
            let total = response
                .total
                .as_ref()
                .map(|value| crate::wire::parse_decimal(&value.amount, "total"))
                .transpose()
                .map_err(InvoicingError::internal)?
                .unwrap_or(Decimal::ZERO);
            let billed = billed::usage_billed_for_period(
                &mut *self.connection,
                &subscription.id,
                billing_period.start(),
                self.exclude_invoice,
            )
            .await?;
            let billed_before: Decimal = self
                .billed_before
                .iter()
                .filter(|line| {
                    line.usage_period_start == Some(billing_period.start())
                        && matches!(line.kind, LineKind::Usage | LineKind::Adjustment)
                })
                .map(|line| line.amount)
                .sum();
            let difference = total - billed.unwrap_or(Decimal::ZERO) - billed_before;
            if difference.is_zero() {
                continue;
            }
            let mut line = Line::new(
                LineKind::Adjustment,
                format!(
                    "Usage adjustment for {}",
                    billing_period.start().format("%Y-%m-%d")
                ),
                billing_period,
                Money::new(difference, subscription.currency),
            )?;
            line.usage_period_start = Some(billing_period.start());
            line.original_invoice_id = Some(invoice_id.clone());
            line.explanation = Some(Explanation::Adjustment {
                original_invoice_id: invoice_id,
                original_line_id: String::new(),
                reason: "usage that arrived after the invoice was finalized".into(),
                repriced_charge: None,
            });
            lines.push(line);
        }
        Ok(lines)
    }
}

/// The invoiced usage periods of `subscription` whose usage may have changed
/// since `previous_boundary` (they ended less than `lookback` before it), each
/// with the finalized invoice that first billed it. A period first billed by a
/// draft is left to that draft.
pub async fn late_periods(
    connection: &mut PgConnection,
    subscription: &Subscription,
    previous_boundary: DateTime<Utc>,
    lookback: Duration,
    exclude_invoice: Option<&str>,
) -> Result<Vec<(Period, String)>> {
    let query = LateQuery {
        subscription,
        previous_boundary,
        exclude_invoice,
    };
    let mut periods = late_periods_many(connection, &[query], lookback).await?;
    Ok(periods.pop().unwrap_or_default())
}

/// The late periods of a subscription after a previous boundary: that
/// boundary, and each period with the invoice that first billed it.
pub type LatePeriods = (DateTime<Utc>, Vec<(Period, String)>);

/// One subscription's question to [`late_periods_many`].
#[derive(Debug)]
pub struct LateQuery<'a> {
    pub subscription: &'a Subscription,
    pub previous_boundary: DateTime<Utc>,
    pub exclude_invoice: Option<&'a str>,
}

/// [`late_periods`] of many subscriptions in one query, in the order given.
pub async fn late_periods_many(
    connection: &mut PgConnection,
    queries: &[LateQuery<'_>],
    lookback: Duration,
) -> Result<Vec<Vec<(Period, String)>>> {
    if lookback <= Duration::zero() || queries.is_empty() {
        return Ok(queries.iter().map(|_| Vec::new()).collect());
    }
    // A period starts at most a year before it ends.
    let since = |query: &LateQuery<'_>| query.previous_boundary - lookback - Duration::days(366);
    let asked: Vec<UsagePeriodsQuery<'_>> = queries
        .iter()
        .map(|query| UsagePeriodsQuery {
            subscription_id: query.subscription.id.as_str(),
            since: since(query),
            exclude_invoice: query.exclude_invoice,
        })
        .collect();
    let rows = billed::usage_periods_since(connection, &asked).await?;
    let mut periods: Vec<Vec<(Period, String)>> = queries.iter().map(|_| Vec::new()).collect();
    for BilledUsagePeriod {
        position,
        usage_period_start: start,
        invoice_id,
        status,
    } in rows
    {
        let index = usize::try_from(position - 1).map_err(InvoicingError::internal)?;
        let query = &queries[index];
        let period = query.subscription.period_containing(start)?;
        let horizon = query.previous_boundary - lookback;
        if status != "draft" && period.end() > horizon {
            periods[index].push((period, invoice_id));
        }
    }
    Ok(periods)
}
