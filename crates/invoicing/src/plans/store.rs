//! `invoicing.plan_versions`: the local copy of every plan version a
//! subscription names (published versions never change, so a copy is
//! never stale).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::{PlanInfo, interval_name};
use crate::error::{InvoicingError, Result};

/// A stored plan version.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub plan_id: String,
    pub version: i32,
    pub currency: String,
    pub billing_interval: String,
    pub trial_days: i32,
    pub minimum_commitment: Option<Decimal>,
    /// The recurring fees (JSON).
    pub recurring: serde_json::Value,
}

/// The stored plan version `id`, if any.
pub async fn plan_version(connection: &mut PgConnection, id: &str) -> Result<Option<PlanRow>> {
    Ok(sqlx::query_as(
        "SELECT id, plan_id, version, currency, billing_interval, trial_days, minimum_commitment, recurring \
         FROM invoicing.plan_versions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(connection)
    .await?)
}

/// Stores plan version `info` fetched at `now` (nothing when stored already).
pub async fn insert_plan_version(
    connection: &mut PgConnection,
    info: &PlanInfo,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.plan_versions (id, plan_id, version, currency, billing_interval, trial_days, \
           minimum_commitment, recurring, fetched_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&info.id)
    .bind(&info.plan_id)
    .bind(info.version)
    .bind(info.currency.code())
    .bind(interval_name(info.interval))
    .bind(i32::try_from(info.trial_days).unwrap_or(i32::MAX))
    .bind(info.minimum_commitment)
    .bind(serde_json::to_value(&info.recurring).map_err(InvoicingError::internal)?)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
