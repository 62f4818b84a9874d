//! The mirroring tables (`connectors.orb_customers`' Orb ids,
//! `connectors.orb_plans`, `connectors.orb_subscriptions`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::model::{SubscriptionRecord, SubscriptionState};

/// The Orb external customer id of `customer_id`, when it is in Orb (mapped
/// by hand or mirrored).
pub async fn orb_customer(pool: &PgPool, customer_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT external_customer_id FROM connectors.orb_customers WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(pool)
    .await
}

/// The Tally customer holding `external_customer_id`, if any.
pub async fn holder_of(
    pool: &PgPool,
    external_customer_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM connectors.orb_customers WHERE external_customer_id = $1",
    )
    .bind(external_customer_id)
    .fetch_optional(pool)
    .await
}

/// Records a customer connectors created in Orb (nothing when it is mapped
/// already: the first mapping stands).
pub async fn record_customer(
    connection: &mut PgConnection,
    customer_id: &str,
    external_customer_id: &str,
    orb_customer_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO connectors.orb_customers \
         (customer_id, external_customer_id, orb_customer_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
    )
    .bind(customer_id)
    .bind(external_customer_id)
    .bind(orb_customer_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The Orb plan of `plan_id`, when mapped.
pub async fn orb_plan(pool: &PgPool, plan_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT orb_plan_id FROM connectors.orb_plans WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_optional(pool)
        .await
}

/// Maps `plan_id` to `orb_plan_id` (replacing an earlier mapping).
pub async fn map_plan(
    pool: &PgPool,
    plan_id: &str,
    orb_plan_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO connectors.orb_plans (plan_id, orb_plan_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (plan_id) DO UPDATE \
         SET orb_plan_id = EXCLUDED.orb_plan_id, updated_at = EXCLUDED.updated_at",
    )
    .bind(plan_id)
    .bind(orb_plan_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    subscription_id: String,
    customer_id: String,
    plan_id: String,
    currency: String,
    start_at: DateTime<Utc>,
    state: String,
    orb_subscription_id: Option<String>,
    reason: String,
    attempts: i32,
}

impl SubscriptionRow {
    fn into_record(self) -> Result<SubscriptionRecord, sqlx::Error> {
        let state = SubscriptionState::parse(&self.state).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown orb subscription state {:?}", self.state).into())
        })?;
        Ok(SubscriptionRecord {
            subscription_id: self.subscription_id,
            customer_id: self.customer_id,
            plan_id: self.plan_id,
            currency: self.currency,
            start_at: self.start_at,
            state,
            orb_subscription_id: self.orb_subscription_id,
            reason: self.reason,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
        })
    }
}

/// The record of `subscription_id`, if connectors saw it.
pub async fn subscription(
    pool: &PgPool,
    subscription_id: &str,
) -> Result<Option<SubscriptionRecord>, sqlx::Error> {
    let row: Option<SubscriptionRow> = sqlx::query_as(
        "SELECT subscription_id, customer_id, plan_id, currency, start_at, state, \
                orb_subscription_id, reason, attempts \
         FROM connectors.orb_subscriptions WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .fetch_optional(pool)
    .await?;
    row.map(SubscriptionRow::into_record).transpose()
}

/// The subscriptions of `customer_id` waiting for it to be in Orb.
pub async fn waiting_for(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Vec<SubscriptionRecord>, sqlx::Error> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(
        "SELECT subscription_id, customer_id, plan_id, currency, start_at, state, \
                orb_subscription_id, reason, attempts \
         FROM connectors.orb_subscriptions \
         WHERE customer_id = $1 AND state = 'waiting_for_customer' ORDER BY subscription_id",
    )
    .bind(customer_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(SubscriptionRow::into_record).collect()
}

/// Writes the record of a subscription; a `mirrored` one is never changed.
pub async fn record_subscription(
    connection: &mut PgConnection,
    record: &SubscriptionRecord,
    orb_plan_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO connectors.orb_subscriptions \
         (subscription_id, customer_id, plan_id, currency, start_at, state, orb_subscription_id, \
          orb_plan_id, reason, attempts, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (subscription_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, \
           currency = EXCLUDED.currency, start_at = EXCLUDED.start_at, state = EXCLUDED.state, \
           orb_subscription_id = EXCLUDED.orb_subscription_id, \
           orb_plan_id = EXCLUDED.orb_plan_id, reason = EXCLUDED.reason, \
           attempts = connectors.orb_subscriptions.attempts + EXCLUDED.attempts, \
           updated_at = EXCLUDED.updated_at \
         WHERE connectors.orb_subscriptions.state <> 'mirrored'",
    )
    .bind(&record.subscription_id)
    .bind(&record.customer_id)
    .bind(&record.plan_id)
    .bind(&record.currency)
    .bind(record.start_at)
    .bind(record.state.as_str())
    .bind(record.orb_subscription_id.as_deref())
    .bind(orb_plan_id)
    .bind(&record.reason)
    .bind(i32::try_from(record.attempts).unwrap_or(i32::MAX))
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
