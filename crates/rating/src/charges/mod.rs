//! Pricing of stored aggregates: each aggregate row (one charge, group and
//! plan-version segment of a billing period) becomes one `UsageCharge` line,
//! priced through the charge's domain `ChargePrice` at full precision and
//! rounded once, per line, to the currency's minor unit (half-even). Totals are
//! sums of rounded lines, as on the invoice.
//!
//! A line prices its own group: a matrix charge's line is the matrix applied
//! to that one group; a quantity model on a grouped meter prices each group
//! on its own (tiers, free units, minimum and maximum apply per group); a
//! percentage charge prices the line's transactions (`rating.transactions`).
//!
//! A line whose net quantity is below zero (negative readings are corrections
//! that net out) is priced on zero, with a `BELOW_ZERO` step that says so
//! (the domain's `ChargePrice::price_net`): it never fails, and never pays the
//! customer back.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use sqlx::types::Json;
use tally_domain::ids::{ChargeCode, EventId};
use tally_domain::meter::{AggregateState, Aggregation, GroupKey};
use tally_domain::money::{Currency, LINE_ROUNDING};
use tally_domain::period::Period;
use tally_domain::plan::ChargeKind;
use tally_domain::pricing::{BreakdownItem, PriceModel, Transaction, Usage};
use tally_proto::rating::{self as proto, UsageCharge};

mod breakdown;
mod store;

use store::PeriodTransaction;
pub use store::subscriptions_phases;

use crate::cache::CatalogCache;
use crate::error::RatingError;
use crate::usage::store::PhaseRow;
use crate::wire::{decimal, money, time_range};

/// One stored aggregate of a period.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AggregateRow {
    /// `pv_…` of the segment.
    pub plan_version_id: String,
    /// Segment start.
    pub segment_start: DateTime<Utc>,
    /// Segment end.
    pub segment_end: DateTime<Utc>,
    /// The charge.
    pub charge_code: String,
    /// The group.
    pub group_key: Json<GroupKey>,
    /// The running aggregate.
    pub state: Json<AggregateState>,
    /// Events absorbed.
    pub event_count: i64,
    /// Highest sequence number absorbed.
    pub max_seq: i64,
}

/// One billing period of one subscription, as priced.
pub type PeriodKey = (String, DateTime<Utc>, DateTime<Utc>);

fn period_key(subscription_id: &str, period: &Period) -> PeriodKey {
    (subscription_id.to_owned(), period.start(), period.end())
}

/// The aggregates of many (subscription, billing period) pairs, in one query.
pub async fn period_rows(
    pool: &PgPool,
    periods: &[(&str, Period)],
) -> Result<HashMap<PeriodKey, Vec<AggregateRow>>, sqlx::Error> {
    let rows = store::aggregates_of_periods(pool, periods).await?;
    let mut by_period: HashMap<PeriodKey, Vec<AggregateRow>> = HashMap::new();
    for keyed in rows {
        by_period
            .entry((keyed.subscription_id, keyed.period_start, keyed.period_end))
            .or_default()
            .push(keyed.row);
    }
    Ok(by_period)
}

/// Gives each time-weighted sum the level it starts with: the last reading of
/// the same charge and group in the subscription's latest earlier segment
/// (previous period, or the part of this period before a plan change), as
/// rating.proto promises ("the level carried over from the previous period").
/// A gauge set once and never again is billed for every later period.
pub async fn with_carried_levels(
    pool: &PgPool,
    subscription_id: &str,
    mut rows: Vec<AggregateRow>,
) -> Result<Vec<AggregateRow>, RatingError> {
    for row in &mut rows {
        let AggregateState::TimeWeightedSum { unit, .. } = &row.state.0 else {
            continue;
        };
        let unit = *unit;
        let previous = store::previous_segment_state(
            pool,
            subscription_id,
            &row.charge_code,
            &row.group_key,
            row.segment_start,
        )
        .await?;
        let Some(AggregateState::TimeWeightedSum { readings, .. }) = previous else {
            continue;
        };
        let Some(last) = readings.as_slice().last() else {
            continue;
        };
        let carried = AggregateState::TimeWeightedSum {
            unit,
            readings: vec![last.clone()].into(),
        };
        row.state.0.merge(&carried).map_err(|error| {
            RatingError::Corrupt(format!(
                "carrying the level of charge {} into {}: {error}",
                row.charge_code, row.segment_start
            ))
        })?;
    }
    Ok(rows)
}

/// The line a transaction belongs to: segment start, plan version, charge, group.
pub type LineKey = (DateTime<Utc>, String, String, GroupKey);

/// The transactions of the percentage charges of one period, by line.
pub type PeriodTransactions = HashMap<LineKey, Vec<Transaction>>;

/// The transactions of the percentage charges of many (subscription, billing
/// period) pairs, in one query.
pub async fn period_transactions(
    pool: &PgPool,
    periods: &[(&str, Period)],
) -> Result<HashMap<PeriodKey, PeriodTransactions>, RatingError> {
    let rows = store::transactions_of_periods(pool, periods).await?;
    let mut by_period: HashMap<PeriodKey, PeriodTransactions> = HashMap::new();
    for PeriodTransaction {
        subscription_id,
        period_start: start,
        period_end: end,
        segment_start,
        plan_version_id: version,
        charge_code: charge,
        group_key: Json(group),
        event_id,
        occurred_at: timestamp,
        amount,
    } in rows
    {
        let event_id = EventId::parse(&event_id).map_err(|error| {
            RatingError::Corrupt(format!("stored transaction {event_id:?}: {error}"))
        })?;
        by_period
            .entry((subscription_id, start, end))
            .or_default()
            .entry((segment_start, version, charge, group))
            .or_default()
            .push(Transaction {
                event_id,
                timestamp,
                amount,
            });
    }
    Ok(by_period)
}

/// Adds a zero-usage row for every usage charge of every segment of `period`
/// (each phase of `phases` that overlaps it) that has no aggregate yet, then
/// puts the rows in line order (segment start, charge key, group). Invoicing
/// needs these lines: a charge minimum or a flat price is owed without usage,
/// and the live cost shows every charge.
pub async fn with_idle_charges(
    cache: &CatalogCache,
    mut rows: Vec<AggregateRow>,
    phases: &[PhaseRow],
    period: &Period,
) -> Result<Vec<AggregateRow>, RatingError> {
    let present: HashSet<(DateTime<Utc>, String, String)> = rows
        .iter()
        .map(|row| {
            (
                row.segment_start,
                row.plan_version_id.clone(),
                row.charge_code.clone(),
            )
        })
        .collect();
    for phase in phases {
        let Some(segment) = phase.segment(period) else {
            continue;
        };
        let entry = cache
            .version(&phase.plan_version_id)
            .await?
            .ok_or_else(|| {
                RatingError::Corrupt(format!(
                    "plan version {} of {} is not published",
                    phase.plan_version_id, phase.subscription_id
                ))
            })?;
        for charge in entry.published.plan.charges() {
            let ChargeKind::Usage { meter } = &charge.kind else {
                continue;
            };
            let key = (
                segment.start(),
                phase.plan_version_id.clone(),
                charge.code.as_str().to_owned(),
            );
            if present.contains(&key) {
                continue;
            }
            let meter = cache.meter(meter.as_str()).await?.ok_or_else(|| {
                RatingError::Corrupt(format!(
                    "meter {meter} of charge {} is missing",
                    charge.code
                ))
            })?;
            rows.push(AggregateRow {
                plan_version_id: key.1,
                segment_start: segment.start(),
                segment_end: segment.end(),
                charge_code: key.2,
                group_key: Json(GroupKey::empty()),
                state: Json(AggregateState::new(meter.aggregation())),
                event_count: 0,
                max_seq: 0,
            });
        }
    }
    rows.sort_by(|left, right| {
        (left.segment_start, &left.charge_code, &left.group_key.0).cmp(&(
            right.segment_start,
            &right.charge_code,
            &right.group_key.0,
        ))
    });
    Ok(rows)
}

/// The priced lines of a period.
#[derive(Clone, Debug, Default)]
pub struct PricedPeriod {
    /// One line per aggregate row.
    pub charges: Vec<UsageCharge>,
    /// Sum of the rounded amounts.
    pub total: Decimal,
    /// The lines' currency (`None` without lines).
    pub currency: Option<Currency>,
    /// Highest ingest sequence number reflected.
    pub as_of_sequence_number: u64,
}

/// A subscription's phases as the replica stores them, by start.
pub async fn subscription_phases(
    pool: &PgPool,
    subscription_id: &str,
) -> Result<Vec<PhaseRow>, RatingError> {
    subscriptions_phases(pool, &[subscription_id]).await
}

/// Prices a subscription's billing `period` from its stored aggregates: the
/// one function behind `GetUsageCharges`, `GetCurrentCost` and spend
/// thresholds, so they always agree.
pub async fn price_period(
    pool: &PgPool,
    cache: &CatalogCache,
    subscription_id: &str,
    period: &Period,
    phases: &[PhaseRow],
) -> Result<PricedPeriod, RatingError> {
    let mut priced = price_periods(pool, cache, &[(subscription_id, *period, phases)]).await?;
    priced.pop().unwrap_or_else(|| Ok(PricedPeriod::default()))
}

/// [`price_period`] for many (subscription, period, phases), reading the
/// aggregates and transactions of all of them in one query each (a bill run
/// prices thousands of periods). Results are in the order given, one per
/// period: a period that cannot be priced (a stored row that cannot be read,
/// a catalog entry missing) is an error for that period only, naming the
/// subscription and period, so one subscription's bad data never fails the
/// others of a batch; only the shared reads (a database error) fail all.
pub async fn price_periods(
    pool: &PgPool,
    cache: &CatalogCache,
    periods: &[(&str, Period, &[PhaseRow])],
) -> Result<Vec<Result<PricedPeriod, RatingError>>, RatingError> {
    // Each pair once: a pair asked twice must not read its rows twice.
    let keys: Vec<(&str, Period)> = periods
        .iter()
        .map(|(subscription_id, period, _)| (*subscription_id, *period))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = period_rows(pool, &keys).await?;
    let transactions = period_transactions(pool, &keys).await?;
    let mut priced = Vec::with_capacity(periods.len());
    for (subscription_id, period, phases) in periods {
        let key = period_key(subscription_id, period);
        let own_rows = rows.get(&key).cloned().unwrap_or_default();
        let own_transactions = transactions.get(&key).cloned().unwrap_or_default();
        let answer = async {
            let own_rows = with_idle_charges(cache, own_rows, phases, period).await?;
            let own_rows = with_carried_levels(pool, subscription_id, own_rows).await?;
            price_rows(cache, &own_rows, &own_transactions).await
        }
        .await;
        priced.push(match answer {
            Ok(period_priced) => Ok(period_priced),
            Err(RatingError::Database(error)) => return Err(RatingError::Database(error)),
            Err(error) => {
                let error = error.prefixed(&format!("subscription {subscription_id}, {period}"));
                tracing::warn!(%error, subscription = %subscription_id, "usage charges cannot be priced");
                Err(error)
            }
        });
    }
    Ok(priced)
}

/// Prices `rows` (percentage charges with their `transactions`).
pub async fn price_rows(
    cache: &CatalogCache,
    rows: &[AggregateRow],
    transactions: &PeriodTransactions,
) -> Result<PricedPeriod, RatingError> {
    let mut priced = PricedPeriod::default();
    for row in rows {
        let (line, currency) = price_row(cache, row, transactions).await?;
        if priced.currency.is_some_and(|known| known != currency) {
            return Err(RatingError::Corrupt(format!(
                "plan version {} is in {}, other lines of the period in another currency",
                row.plan_version_id,
                currency.code()
            )));
        }
        priced.currency = Some(currency);
        let rounded = LINE_ROUNDING.round(line_precise(&line)?, currency.minor_units());
        priced.total = priced
            .total
            .checked_add(rounded)
            .ok_or_else(|| RatingError::Corrupt("usage total overflows".into()))?;
        priced.as_of_sequence_number = priced
            .as_of_sequence_number
            .max(u64::try_from(row.max_seq).unwrap_or(0));
        priced.charges.push(line);
    }
    Ok(priced)
}

fn line_precise(line: &UsageCharge) -> Result<Decimal, RatingError> {
    line.precise_amount
        .as_ref()
        .and_then(|amount| amount.amount.parse().ok())
        .ok_or_else(|| RatingError::Corrupt(format!("line {} has no amount", line.charge_key)))
}

async fn price_row(
    cache: &CatalogCache,
    row: &AggregateRow,
    transactions: &PeriodTransactions,
) -> Result<(UsageCharge, Currency), RatingError> {
    let corrupt = |what: &str| {
        RatingError::Corrupt(format!(
            "aggregate of charge {} on {}: {what}",
            row.charge_code, row.plan_version_id
        ))
    };
    let entry = cache
        .version(&row.plan_version_id)
        .await?
        .ok_or_else(|| corrupt("the plan version is not published"))?;
    let plan = &entry.published.plan;
    let code = ChargeCode::parse(&row.charge_code).map_err(|error| corrupt(&error.to_string()))?;
    let charge = plan
        .charge(&code)
        .ok_or_else(|| corrupt("the plan version has no such charge"))?;
    let ChargeKind::Usage { meter: meter_code } = &charge.kind else {
        return Err(corrupt("the charge is not a usage charge"));
    };
    let meter = cache
        .meter(meter_code.as_str())
        .await?
        .ok_or_else(|| corrupt("its meter does not exist"))?;
    let segment = Period::new(row.segment_start, row.segment_end)
        .map_err(|error| corrupt(&error.to_string()))?;
    let quantity = row
        .state
        .value(&segment)
        .map_err(|error| corrupt(&error.to_string()))?;
    let group = &row.group_key.0;
    let breakdown = match charge.price.model() {
        PriceModel::Percentage(_) => {
            let key = (
                row.segment_start,
                row.plan_version_id.clone(),
                row.charge_code.clone(),
                group.clone(),
            );
            let line = transactions.get(&key).map_or(&[][..], Vec::as_slice);
            charge.price.price(Usage::Transactions(line))
        }
        PriceModel::Matrix(_) => {
            // An idle charge (no usage yet, see `with_idle_charges`) has no
            // group to look a cell up for: it prices no groups at all.
            let groups = if row.event_count == 0 && group.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([(group.clone(), quantity)])
            };
            charge.price.price_net(Usage::Grouped(&groups))
        }
        PriceModel::PerUnit(_)
        | PriceModel::Package(_)
        | PriceModel::Graduated(_)
        | PriceModel::Volume(_)
        | PriceModel::Bulk(_)
        | PriceModel::Flat(_) => charge.price.price_net(Usage::Quantity(quantity)),
    }
    .map_err(|error| {
        RatingError::FailedPrecondition(format!(
            "charge {} of plan version {} cannot price {quantity}: {error}",
            row.charge_code, row.plan_version_id
        ))
    })?;
    let currency = plan.currency();
    let free: Decimal = breakdown
        .items()
        .iter()
        .filter_map(|item| match item {
            BreakdownItem::FreeUnits { quantity } => Some(*quantity),
            _ => None,
        })
        .sum();
    let precise = breakdown.total();
    let rounded = LINE_ROUNDING.round(precise, currency.minor_units());
    let line = UsageCharge {
        charge_key: row.charge_code.clone(),
        charge_name: charge.name.clone(),
        plan_version_id: row.plan_version_id.clone(),
        meter_code: meter_code.as_str().to_owned(),
        aggregation: aggregation(meter.aggregation()) as i32,
        group: group
            .dimensions()
            .map(|(property, value)| (property.to_owned(), value.to_owned()))
            .collect::<HashMap<_, _>>(),
        period: Some(time_range(row.segment_start, row.segment_end)),
        quantity: Some(decimal(quantity)),
        // A net quantity below zero is priced as zero (`price_net`).
        billable_quantity: Some(decimal(quantity.max(Decimal::ZERO) - free)),
        event_count: u64::try_from(row.event_count).unwrap_or(0),
        price: entry.prices.get(&row.charge_code).cloned(),
        breakdown: breakdown
            .items()
            .iter()
            .flat_map(|item| breakdown::steps(item, currency))
            .collect(),
        precise_amount: Some(money(precise, currency)),
        amount: Some(money(rounded, currency)),
        as_of_sequence_number: u64::try_from(row.max_seq).unwrap_or(0),
    };
    Ok((line, currency))
}

/// The wire aggregation of a domain aggregation.
pub fn aggregation(aggregation: &Aggregation) -> proto::Aggregation {
    match aggregation {
        Aggregation::Count => proto::Aggregation::Count,
        Aggregation::Sum { .. } => proto::Aggregation::Sum,
        Aggregation::Max { .. } => proto::Aggregation::Max,
        Aggregation::Min { .. } => proto::Aggregation::Min,
        Aggregation::UniqueCount { .. } => proto::Aggregation::UniqueCount,
        Aggregation::Latest { .. } => proto::Aggregation::Latest,
        Aggregation::TimeWeightedSum { .. } => proto::Aggregation::TimeWeightedSum,
    }
}
