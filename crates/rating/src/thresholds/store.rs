//! SQL of thresholds (tables: `migrations/…_rating_thresholds.sql`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use tally_domain::ids::{SubscriptionId, ThresholdId};

use crate::error::RatingError;

/// A threshold's limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The period's usage cost (sum of the usage lines' precise amounts).
    Spend {
        /// ISO 4217 code, the plan currency.
        currency: String,
        /// Crossed at or above this amount.
        amount: Decimal,
    },
    /// The period's quantity of one meter.
    Usage {
        /// The meter.
        meter_code: String,
        /// Crossed at or above this quantity.
        quantity: Decimal,
    },
}

/// A stored threshold with its latest crossing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// `thr_…`.
    pub threshold_id: String,
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// The client's key.
    pub key: String,
    /// The limit.
    pub limit: Limit,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When the limit was last replaced.
    pub updated_at: DateTime<Utc>,
    /// The latest crossing: its period `[start, end)` and event time.
    pub last_crossing: Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(sqlx::FromRow)]
struct ThresholdRow {
    threshold_id: String,
    subscription_id: String,
    customer_id: String,
    key: String,
    spend_currency: Option<String>,
    spend_amount: Option<Decimal>,
    meter_code: Option<String>,
    usage_quantity: Option<Decimal>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    crossed_period_start: Option<DateTime<Utc>>,
    crossed_period_end: Option<DateTime<Utc>>,
    crossed_at: Option<DateTime<Utc>>,
}

const SELECT_THRESHOLDS: &str = "SELECT t.threshold_id, t.subscription_id, t.customer_id, t.key, \
       t.spend_currency, t.spend_amount, t.meter_code, t.usage_quantity, t.created_at, t.updated_at, \
       c.period_start AS crossed_period_start, c.period_end AS crossed_period_end, c.crossed_at \
     FROM rating.thresholds t \
     LEFT JOIN LATERAL (SELECT period_start, period_end, crossed_at FROM rating.threshold_crossings \
       WHERE threshold_id = t.threshold_id ORDER BY period_start DESC LIMIT 1) c ON true";

impl TryFrom<ThresholdRow> for Threshold {
    type Error = RatingError;

    fn try_from(row: ThresholdRow) -> Result<Self, RatingError> {
        let limit = match (
            row.spend_currency,
            row.spend_amount,
            row.meter_code,
            row.usage_quantity,
        ) {
            (Some(currency), Some(amount), None, None) => Limit::Spend { currency, amount },
            (None, None, Some(meter_code), Some(quantity)) => Limit::Usage {
                meter_code,
                quantity,
            },
            _ => {
                return Err(RatingError::Corrupt(format!(
                    "threshold {} has no single limit",
                    row.threshold_id
                )));
            }
        };
        let last_crossing = match (
            row.crossed_period_start,
            row.crossed_period_end,
            row.crossed_at,
        ) {
            (Some(start), Some(end), Some(at)) => Some((start, end, at)),
            _ => None,
        };
        Ok(Threshold {
            threshold_id: row.threshold_id,
            subscription_id: row.subscription_id,
            customer_id: row.customer_id,
            key: row.key,
            limit,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_crossing,
        })
    }
}

fn limit_columns(limit: &Limit) -> (Option<&str>, Option<Decimal>, Option<&str>, Option<Decimal>) {
    match limit {
        Limit::Spend { currency, amount } => (Some(currency), Some(*amount), None, None),
        Limit::Usage {
            meter_code,
            quantity,
        } => (None, None, Some(meter_code), Some(*quantity)),
    }
}

/// What `SetThreshold` stores.
#[derive(Clone, Debug)]
pub struct NewThreshold<'a> {
    /// Used if the key is new.
    pub threshold_id: &'a ThresholdId,
    /// The subscription.
    pub subscription_id: &'a SubscriptionId,
    /// `cus_…`.
    pub customer_id: &'a str,
    /// The client's key.
    pub key: &'a str,
    /// The limit.
    pub limit: &'a Limit,
    /// Now (service clock).
    pub now: DateTime<Utc>,
}

/// Creates the threshold, or replaces the limit of the one with the same
/// key (its crossings are forgotten when the limit changes, so the new limit
/// can be crossed in the open period). Returns the stored threshold.
pub async fn set(pool: &PgPool, new: &NewThreshold<'_>) -> Result<Threshold, RatingError> {
    let mut transaction = pool.begin().await?;
    let (spend_currency, spend_amount, meter_code, usage_quantity) = limit_columns(new.limit);
    let previous: Option<ThresholdRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_THRESHOLDS} WHERE t.subscription_id = $1 AND t.key = $2 FOR UPDATE OF t"
    )))
    .bind(new.subscription_id.as_str())
    .bind(new.key)
    .fetch_optional(&mut *transaction)
    .await?;
    let threshold_id = match previous {
        None => {
            sqlx::query(
                "INSERT INTO rating.thresholds (threshold_id, subscription_id, customer_id, key, \
                   spend_currency, spend_amount, meter_code, usage_quantity, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(new.threshold_id.as_str())
            .bind(new.subscription_id.as_str())
            .bind(new.customer_id)
            .bind(new.key)
            .bind(spend_currency)
            .bind(spend_amount)
            .bind(meter_code)
            .bind(usage_quantity)
            .bind(new.now)
            .execute(&mut *transaction)
            .await?;
            new.threshold_id.to_string()
        }
        Some(previous) => {
            let previous = Threshold::try_from(previous)?;
            if previous.limit != *new.limit {
                sqlx::query(
                    "UPDATE rating.thresholds SET spend_currency = $2, spend_amount = $3, \
                       meter_code = $4, usage_quantity = $5, updated_at = $6 WHERE threshold_id = $1",
                )
                .bind(&previous.threshold_id)
                .bind(spend_currency)
                .bind(spend_amount)
                .bind(meter_code)
                .bind(usage_quantity)
                .bind(new.now)
                .execute(&mut *transaction)
                .await?;
                sqlx::query("DELETE FROM rating.threshold_crossings WHERE threshold_id = $1")
                    .bind(&previous.threshold_id)
                    .execute(&mut *transaction)
                    .await?;
            }
            previous.threshold_id
        }
    };
    let stored = one(&mut transaction, &threshold_id).await?;
    transaction.commit().await?;
    stored.ok_or_else(|| RatingError::Corrupt(format!("threshold {threshold_id} vanished")))
}

/// The threshold `threshold_id`.
pub async fn one(
    connection: &mut PgConnection,
    threshold_id: &str,
) -> Result<Option<Threshold>, RatingError> {
    let row: Option<ThresholdRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_THRESHOLDS} WHERE t.threshold_id = $1"
    )))
    .bind(threshold_id)
    .fetch_optional(connection)
    .await?;
    row.map(Threshold::try_from).transpose()
}

/// The thresholds of a subscription, by key.
pub async fn of_subscription(
    pool: &PgPool,
    subscription_id: &SubscriptionId,
) -> Result<Vec<Threshold>, RatingError> {
    let rows: Vec<ThresholdRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_THRESHOLDS} WHERE t.subscription_id = $1 ORDER BY t.key"
    )))
    .bind(subscription_id.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Threshold::try_from).collect()
}

/// The thresholds of `customers`, by subscription and key.
pub async fn of_customers(
    pool: &PgPool,
    customers: &[&str],
) -> Result<Vec<Threshold>, RatingError> {
    let rows: Vec<ThresholdRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_THRESHOLDS} WHERE t.customer_id = ANY($1) ORDER BY t.subscription_id, t.key"
    )))
    .bind(customers)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Threshold::try_from).collect()
}

/// Deletes a threshold; `false` when there was none.
pub async fn delete(pool: &PgPool, threshold_id: &ThresholdId) -> Result<bool, RatingError> {
    let deleted = sqlx::query("DELETE FROM rating.thresholds WHERE threshold_id = $1")
        .bind(threshold_id.as_str())
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// A crossing to record.
#[derive(Clone, Debug)]
pub struct Crossing<'a> {
    /// `thr_…`.
    pub threshold_id: &'a str,
    /// The billing period.
    pub period: (DateTime<Utc>, DateTime<Utc>),
    /// The period's value when detected.
    pub value: Decimal,
    /// Event time of the triggering event.
    pub crossed_at: DateTime<Utc>,
    /// The triggering event's id.
    pub triggering_event_id: &'a str,
    /// Now (service clock).
    pub detected_at: DateTime<Utc>,
}

/// Records a crossing unless one exists for the threshold and period;
/// `true` when this call recorded it.
pub async fn record_crossing(
    connection: &mut PgConnection,
    crossing: &Crossing<'_>,
) -> Result<bool, RatingError> {
    let inserted = sqlx::query(
        "INSERT INTO rating.threshold_crossings (threshold_id, period_start, period_end, value, \
           crossed_at, triggering_event_id, detected_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7 \
         WHERE EXISTS (SELECT 1 FROM rating.thresholds WHERE threshold_id = $1) \
         ON CONFLICT DO NOTHING",
    )
    .bind(crossing.threshold_id)
    .bind(crossing.period.0)
    .bind(crossing.period.1)
    .bind(crossing.value)
    .bind(crossing.crossed_at)
    .bind(crossing.triggering_event_id)
    .bind(crossing.detected_at)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The customer of subscription `subscription_id`, if rating has it.
pub async fn subscription_customer(
    pool: &PgPool,
    subscription_id: &str,
) -> Result<Option<String>, RatingError> {
    let customer: Option<(String,)> =
        sqlx::query_as("SELECT customer_id FROM rating.subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_optional(pool)
            .await?;
    Ok(customer.map(|(customer,)| customer))
}

/// The billing periods `(start, end)` of `subscription_id` whose aggregates
/// an event from `lowest_seq` on changed, by start.
pub async fn periods_changed_since(
    pool: &PgPool,
    subscription_id: &str,
    lowest_seq: i64,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, RatingError> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT period_start, period_end FROM rating.aggregates \
         WHERE subscription_id = $1 AND max_seq >= $2 ORDER BY period_start",
    )
    .bind(subscription_id)
    .bind(lowest_seq)
    .fetch_all(pool)
    .await?)
}
