//! What pricing reads: the aggregates and percentage-charge transactions of
//! billing periods, the level a time-weighted sum carries over, and the
//! replica's subscription phases.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use sqlx::types::Json;
use tally_domain::meter::{AggregateState, GroupKey};
use tally_domain::period::Period;

use super::AggregateRow;
use crate::error::RatingError;
use crate::usage::store::{PHASE_COLUMNS, PhaseRow};

/// An aggregate with the (subscription, billing period) it belongs to.
#[derive(sqlx::FromRow)]
pub struct PeriodAggregate {
    pub subscription_id: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    #[sqlx(flatten)]
    pub row: AggregateRow,
}

/// The aggregates of many (subscription, billing period) pairs, in one query.
pub async fn aggregates_of_periods(
    pool: &PgPool,
    periods: &[(&str, Period)],
) -> Result<Vec<PeriodAggregate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.subscription_id, a.period_start, a.period_end, a.plan_version_id, a.segment_start, \
           a.segment_end, a.charge_code, a.group_key, a.state, a.event_count, a.max_seq \
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS wanted(subscription_id, period_start, period_end) \
         JOIN rating.aggregates a ON a.subscription_id = wanted.subscription_id COLLATE \"C\" \
           AND a.period_start = wanted.period_start AND a.period_end = wanted.period_end",
    )
    .bind(periods.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(periods.iter().map(|(_, period)| period.start()).collect::<Vec<_>>())
    .bind(periods.iter().map(|(_, period)| period.end()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
}

/// The state of the same charge and group in `subscription_id`'s latest
/// segment starting before `before`, if any.
pub async fn previous_segment_state(
    pool: &PgPool,
    subscription_id: &str,
    charge_code: &str,
    group_key: &Json<GroupKey>,
    before: DateTime<Utc>,
) -> Result<Option<AggregateState>, RatingError> {
    let previous: Option<(Json<AggregateState>,)> = sqlx::query_as(
        "SELECT state FROM rating.aggregates \
         WHERE subscription_id = $1 AND charge_code = $2 AND group_key = $3 \
           AND segment_start < $4 \
         ORDER BY segment_start DESC LIMIT 1",
    )
    .bind(subscription_id)
    .bind(charge_code)
    .bind(group_key)
    .bind(before)
    .fetch_optional(pool)
    .await?;
    Ok(previous.map(|(Json(state),)| state))
}

/// A stored transaction of a percentage charge, with its billing period.
#[derive(sqlx::FromRow)]
pub struct PeriodTransaction {
    pub subscription_id: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub segment_start: DateTime<Utc>,
    pub plan_version_id: String,
    pub charge_code: String,
    pub group_key: Json<GroupKey>,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub amount: Decimal,
}

/// The percentage-charge transactions of many (subscription, billing
/// period) pairs, in one query.
pub async fn transactions_of_periods(
    pool: &PgPool,
    periods: &[(&str, Period)],
) -> Result<Vec<PeriodTransaction>, RatingError> {
    Ok(sqlx::query_as(
        "SELECT t.subscription_id, t.period_start, wanted.period_end, t.segment_start, t.plan_version_id, \
           t.charge_code, t.group_key, t.event_id, t.occurred_at, t.amount \
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS wanted(subscription_id, period_start, period_end) \
         JOIN rating.transactions t ON t.subscription_id = wanted.subscription_id COLLATE \"C\" \
           AND t.period_start = wanted.period_start",
    )
    .bind(periods.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(periods.iter().map(|(_, period)| period.start()).collect::<Vec<_>>())
    .bind(periods.iter().map(|(_, period)| period.end()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?)
}

/// The phases of each of `subscription_ids`, by subscription then start.
pub async fn subscriptions_phases(
    pool: &PgPool,
    subscription_ids: &[&str],
) -> Result<Vec<PhaseRow>, RatingError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PHASE_COLUMNS} \
         FROM rating.subscription_phases p JOIN rating.subscriptions s USING (subscription_id) \
         WHERE subscription_id = ANY($1) ORDER BY subscription_id, p.start_at"
    )))
    .bind(subscription_ids)
    .fetch_all(pool)
    .await?)
}
