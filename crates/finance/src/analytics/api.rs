//! `AnalyticsService`: MRR at an instant and MRR movements over a range,
//! computed at query time from the stored fees and subscription instants
//! ([`super::store`], [`super::history`]) with the domain's rules.
//!
//! Instants: `GetMrr` at `as_of` counts every change at or before it (a
//! subscription starting at `as_of` counts). `ListMrrMovements` over
//! `[start, end)` lists the movements dated inside it; its starting MRR is
//! the MRR just before `start` and its ending MRR the MRR just before
//! `end`, so starting + the movements = ending (exactly for whole-cent
//! MRR; to Decimal's 28th digit when fees normalise to repeating decimals,
//! as the domain's precision rule says).
//!
//! Precision: `GetMrr` rounds MRR, ARR and ARPA for display
//! (`round_for_report`, half-even to minor units, each from the full
//! precision figure). `ListMrrMovements` sends amounts at full precision (at
//! least the currency's minor units), so they sum exactly; rates are exact
//! fractions.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tally_domain::finance::mrr::{
    self, MovementKind, MovementTotals, MrrMovement, arpa, gross_mrr_churn_rate, mrr_movements,
    net_mrr_churn_rate, quick_ratio, round_for_report,
};
use tally_domain::finance::retention::{CohortRetention, cohort_retention};
use tally_domain::money::{Currency, Money};
use tally_proto::common::{Decimal as WireDecimal, Money as WireMoney};
use tally_proto::convert;
use tally_proto::finance::analytics_service_server::AnalyticsService;
use tally_proto::finance::{
    Cohort as WireCohort, GetMrrRequest, GetMrrResponse, GetRetentionRequest, GetRetentionResponse,
    GetRevenueRequest, GetRevenueResponse, ListMrrMovementsRequest, ListMrrMovementsResponse,
    MovementKind as WireKind, MrrMovement as WireMovement, RetentionMonth as WireMonth,
    RevenueAmount,
};
use tally_runtime::SharedClock;
use tally_runtime::error::FieldViolation;
use tonic::{Request, Response, Status};

use super::history::mrr_before;
use super::revenue::{self, Revenue};
use super::store;
use crate::error::FinanceServiceError;

/// Revenue analytics over the finance schema.
#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    pool: PgPool,
    clock: SharedClock,
    movement_window: TimeDelta,
}

/// MRR at an instant, full precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MrrSnapshot {
    /// Σ customers' MRR.
    pub mrr: Money,
    /// Customers with MRR above zero.
    pub paying_customers: u64,
}

/// Movements over a range, full precision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movements {
    /// `(customer, movement)`, by time then customer.
    pub movements: Vec<(String, MrrMovement)>,
    /// MRR just before the range.
    pub starting_mrr: Money,
    /// MRR just before its end.
    pub ending_mrr: Money,
    /// Per kind (magnitudes).
    pub totals: MovementTotals,
}

impl AnalyticsApi {
    /// Revenue recognised in `currency` in `[start, end)` (see
    /// [`super::revenue`]).
    pub async fn revenue(
        &self,
        currency: Currency,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Revenue, FinanceServiceError> {
        revenue::revenue(&self.pool, currency, (start, end)).await
    }
}

/// A required currency.
fn currency(code: &str) -> Result<Currency, FinanceServiceError> {
    if code.is_empty() {
        return Err(FieldViolation::new(
            "currency",
            convert::rule::REQUIRED,
            "is required: MRR is per currency (no FX conversion)",
        )
        .into());
    }
    Currency::from_code(code).map_err(|_| {
        FieldViolation::new(
            "currency",
            convert::rule::UNKNOWN_CURRENCY,
            format!("{code:?} is not an ISO 4217 currency code"),
        )
        .into()
    })
}

/// An amount at full precision, shown with at least its minor units.
fn exact(money: Money) -> WireMoney {
    let mut amount = money.amount().normalize();
    if amount.scale() < money.currency().minor_units() {
        amount.rescale(money.currency().minor_units());
    }
    convert::money_value(amount, money.currency())
}

fn rounded(money: Money) -> WireMoney {
    let shown = round_for_report(money);
    convert::money_value(shown.amount(), shown.currency())
}

fn rate(value: Option<Decimal>) -> Option<WireDecimal> {
    value.map(|value| convert::decimal_value(value.normalize()))
}

/// A loss as a negative amount (zero stays `0`, never `-0`).
fn negated(money: Money) -> Money {
    if money.is_zero() {
        return money;
    }
    Money::new(-money.amount(), money.currency())
}

fn wire_kind(kind: MovementKind) -> WireKind {
    match kind {
        MovementKind::New => WireKind::New,
        MovementKind::Expansion => WireKind::Expansion,
        MovementKind::Contraction => WireKind::Contraction,
        MovementKind::Churn => WireKind::Churn,
        MovementKind::Reactivation => WireKind::Reactivation,
    }
}

impl AnalyticsApi {
    /// Serves analytics over `pool`; `as_of` defaults to `clock`'s now. No
    /// grouping window: each change is its own movement.
    pub fn new(pool: PgPool, clock: SharedClock) -> Self {
        Self {
            pool,
            clock,
            movement_window: TimeDelta::zero(),
        }
    }

    /// Groups one customer's changes within `window` of the group's first
    /// into one movement (see `mrr_movements`). A group straddling a range
    /// boundary is counted where it ends.
    pub fn with_movement_window(mut self, window: TimeDelta) -> Self {
        self.movement_window = window;
        self
    }

    /// MRR and paying customers in `currency` at `as_of`.
    pub async fn mrr_at(
        &self,
        currency: Currency,
        as_of: DateTime<Utc>,
    ) -> Result<MrrSnapshot, FinanceServiceError> {
        let customers = store::customer_histories(&self.pool, currency.code()).await?;
        let mut total = Money::zero(currency);
        let mut paying_customers = 0;
        for customer in customers.values() {
            let customer_mrr = customer.mrr_at(currency, as_of)?;
            if customer_mrr.is_positive() {
                paying_customers += 1;
            }
            total = total
                .checked_add(&customer_mrr)
                .map_err(tally_domain::finance::FinanceError::from)?;
        }
        Ok(MrrSnapshot {
            mrr: total,
            paying_customers,
        })
    }

    /// Movements in `currency` dated in `[from, to)`.
    pub async fn movements(
        &self,
        currency: Currency,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Movements, FinanceServiceError> {
        let customers = store::customer_histories(&self.pool, currency.code()).await?;
        let mut movements = Vec::new();
        let mut starting = Money::zero(currency);
        let mut ending = Money::zero(currency);
        for (customer_id, customer) in &customers {
            let changes = customer.changes(currency)?;
            let add = |total: Money, at| total.checked_add(&mrr_before(currency, &changes, at));
            starting = add(starting, from).map_err(tally_domain::finance::FinanceError::from)?;
            ending = add(ending, to).map_err(tally_domain::finance::FinanceError::from)?;
            movements.extend(
                mrr_movements(&changes, self.movement_window)?
                    .into_iter()
                    .filter(|movement| from <= movement.at && movement.at < to)
                    .map(|movement| (customer_id.clone(), movement)),
            );
        }
        movements.sort_by(|left, right| (left.1.at, &left.0).cmp(&(right.1.at, &right.0)));
        let totals = MovementTotals::of(currency, movements.iter().map(|(_, movement)| movement))?;
        Ok(Movements {
            movements,
            starting_mrr: starting,
            ending_mrr: ending,
            totals,
        })
    }

    /// Retention of the cohorts whose month starts in `[from, to)`, measured
    /// at each month end up to `as_of` (see the domain's `retention`).
    pub async fn retention(
        &self,
        currency: Currency,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        as_of: DateTime<Utc>,
    ) -> Result<Vec<CohortRetention>, FinanceServiceError> {
        let customers = store::customer_histories(&self.pool, currency.code()).await?;
        let changes = customers
            .values()
            .map(|customer| customer.changes(currency))
            .collect::<Result<Vec<_>, _>>()?;
        // `[from, to)` in whole months: the cohorts starting at or after `from`, before `to`.
        let first = first_month_at_or_after(from);
        let Some(last) = to
            .checked_sub_signed(TimeDelta::nanoseconds(1))
            .map(|last| last.date_naive().with_day(1).unwrap_or(NaiveDate::MIN))
        else {
            return Ok(Vec::new());
        };
        Ok(cohort_retention(currency, &changes, first, last, as_of)?)
    }
}

/// The first day of the first month starting at or after `at`.
fn first_month_at_or_after(at: DateTime<Utc>) -> NaiveDate {
    let month = at.date_naive().with_day(1).unwrap_or(NaiveDate::MIN);
    if month.and_time(NaiveTime::MIN).and_utc() < at {
        month
            .checked_add_months(Months::new(1))
            .unwrap_or(NaiveDate::MAX)
    } else {
        month
    }
}

fn month_start(month: NaiveDate) -> prost_types::Timestamp {
    convert::timestamp(month.and_time(NaiveTime::MIN).and_utc())
}

fn wire_cohort(cohort: CohortRetention) -> WireCohort {
    WireCohort {
        month: Some(month_start(cohort.cohort)),
        customers: cohort.customers,
        starting_mrr: Some(exact(cohort.starting_mrr)),
        months: cohort
            .months
            .into_iter()
            .map(|month| WireMonth {
                offset: month.offset,
                month: Some(month_start(month.month)),
                retained_customers: month.retained_customers,
                mrr: Some(exact(month.mrr)),
                net_retention: rate(month.net_retention),
                gross_retention: rate(month.gross_retention),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_mrr(
        &self,
        request: Request<GetMrrRequest>,
    ) -> Result<Response<GetMrrResponse>, Status> {
        let request = request.into_inner();
        let currency = currency(&request.currency)?;
        let as_of = convert::optional_instant(request.as_of.as_ref(), "as_of")
            .map_err(FinanceServiceError::from)?
            .unwrap_or_else(|| self.clock.now());
        let snapshot = self.mrr_at(currency, as_of).await?;
        let arr = mrr::arr(snapshot.mrr).map_err(FinanceServiceError::from)?;
        Ok(Response::new(GetMrrResponse {
            currency: currency.code().to_owned(),
            mrr: Some(rounded(snapshot.mrr)),
            arr: Some(rounded(arr)),
            paying_customers: snapshot.paying_customers,
            arpa: arpa(snapshot.mrr, snapshot.paying_customers).map(rounded),
        }))
    }

    async fn list_mrr_movements(
        &self,
        request: Request<ListMrrMovementsRequest>,
    ) -> Result<Response<ListMrrMovementsResponse>, Status> {
        let request = request.into_inner();
        let currency = currency(&request.currency)?;
        let range = convert::required_period(request.range.as_ref(), "range")
            .map_err(FinanceServiceError::from)?;
        let found = self.movements(currency, range.start(), range.end()).await?;
        let totals = &found.totals;
        let movements = found
            .movements
            .iter()
            .map(|(customer_id, movement)| {
                Ok(WireMovement {
                    customer_id: customer_id.clone(),
                    occurred_at: Some(convert::timestamp(movement.at)),
                    kind: wire_kind(movement.kind) as i32,
                    from_mrr: Some(exact(movement.from_mrr)),
                    to_mrr: Some(exact(movement.to_mrr)),
                    change: Some(exact(movement.amount()?)),
                })
            })
            .collect::<Result<Vec<_>, FinanceServiceError>>()?;
        Ok(Response::new(ListMrrMovementsResponse {
            movements,
            starting_mrr: Some(exact(found.starting_mrr)),
            ending_mrr: Some(exact(found.ending_mrr)),
            new_mrr: Some(exact(totals.new)),
            expansion_mrr: Some(exact(totals.expansion)),
            contraction_mrr: Some(exact(negated(totals.contraction))),
            churned_mrr: Some(exact(negated(totals.churn))),
            reactivation_mrr: Some(exact(totals.reactivation)),
            gross_mrr_churn_rate: rate(gross_mrr_churn_rate(totals, found.starting_mrr)),
            net_mrr_churn_rate: rate(net_mrr_churn_rate(totals, found.starting_mrr)),
            quick_ratio: rate(quick_ratio(totals)),
        }))
    }

    async fn get_retention(
        &self,
        request: Request<GetRetentionRequest>,
    ) -> Result<Response<GetRetentionResponse>, Status> {
        let request = request.into_inner();
        let currency = currency(&request.currency)?;
        let cohorts = convert::required_period(request.cohorts.as_ref(), "cohorts")
            .map_err(FinanceServiceError::from)?;
        let as_of = convert::optional_instant(request.as_of.as_ref(), "as_of")
            .map_err(FinanceServiceError::from)?
            .unwrap_or_else(|| self.clock.now());
        let found = self
            .retention(currency, (cohorts.start(), cohorts.end()), as_of)
            .await?;
        Ok(Response::new(GetRetentionResponse {
            currency: currency.code().to_owned(),
            cohorts: found
                .into_iter()
                .filter(|cohort| !cohort.months.is_empty())
                .map(wire_cohort)
                .collect(),
        }))
    }

    async fn get_revenue(
        &self,
        request: Request<GetRevenueRequest>,
    ) -> Result<Response<GetRevenueResponse>, Status> {
        let request = request.into_inner();
        let currency = currency(&request.currency)?;
        let range = convert::required_period(request.range.as_ref(), "range")
            .map_err(FinanceServiceError::from)?;
        let found = self.revenue(currency, range.start(), range.end()).await?;
        let amounts = |pairs: Vec<(String, Money)>| {
            pairs
                .into_iter()
                .map(|(key, amount)| RevenueAmount {
                    key,
                    amount: Some(exact(amount)),
                })
                .collect()
        };
        Ok(Response::new(GetRevenueResponse {
            currency: currency.code().to_owned(),
            total: Some(exact(found.total)),
            by_product_line: amounts(
                found
                    .by_product_line
                    .into_iter()
                    .map(|(line, amount)| (line.name().to_owned(), amount))
                    .collect(),
            ),
            by_meter: amounts(found.by_meter.into_iter().collect()),
            by_plan: amounts(found.by_plan.into_iter().collect()),
        }))
    }
}
