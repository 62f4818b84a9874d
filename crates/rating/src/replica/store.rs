//! The replica's tables: `rating.subscriptions` (the latest snapshot of each
//! subscription, its version and pauses) and `rating.subscription_phases`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::Snapshot;
use crate::error::RatingError;
use crate::usage::store::PauseWindow;

/// Whether `subscription_id` has aggregates of a period ending after
/// `changed_from` (usage a change from then would re-rate).
pub async fn rated_usage_after(
    connection: &mut PgConnection,
    subscription_id: &str,
    changed_from: DateTime<Utc>,
) -> Result<bool, RatingError> {
    let (affected,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM rating.aggregates \
           WHERE subscription_id = $1 AND period_end > $2)",
    )
    .bind(subscription_id)
    .bind(changed_from)
    .fetch_one(connection)
    .await?;
    Ok(affected)
}

/// Stores `snapshot` unless the stored version is as high; `true` when
/// written.
pub async fn upsert_snapshot_if_newer(
    connection: &mut PgConnection,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<bool, RatingError> {
    let written: Option<(String,)> = sqlx::query_as(
        "INSERT INTO rating.subscriptions (subscription_id, customer_id, version, snapshot, \
           updated_at, pauses) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (subscription_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
           version = EXCLUDED.version, snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at, \
           pauses = EXCLUDED.pauses \
         WHERE rating.subscriptions.version < EXCLUDED.version \
         RETURNING subscription_id",
    )
    .bind(&snapshot.subscription_id)
    .bind(&snapshot.customer_id)
    .bind(snapshot.version)
    .bind(&snapshot.bytes)
    .bind(now)
    .bind(Json(&snapshot.pauses))
    .fetch_optional(connection)
    .await?;
    Ok(written.is_some())
}

/// The stored snapshot version of `subscription_id` (which must exist).
pub async fn stored_version(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<i64, RatingError> {
    let (stored,): (i64,) =
        sqlx::query_as("SELECT version FROM rating.subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_one(connection)
            .await?;
    Ok(stored)
}

/// Replaces the stored phases of `snapshot`'s subscription by its phases.
pub async fn replace_phases(
    connection: &mut PgConnection,
    snapshot: &Snapshot,
) -> Result<(), RatingError> {
    sqlx::query("DELETE FROM rating.subscription_phases WHERE subscription_id = $1")
        .bind(&snapshot.subscription_id)
        .execute(&mut *connection)
        .await?;
    for (index, phase) in snapshot.phases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO rating.subscription_phases (subscription_id, customer_id, phase_index, \
               plan_version_id, billing_anchor_at, start_at, end_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&snapshot.subscription_id)
        .bind(&snapshot.customer_id)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .bind(&phase.plan_version_id)
        .bind(snapshot.billing_anchor_at)
        .bind(phase.start_at)
        .bind(phase.end_at)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The stored pause windows of `subscription_id`, if rating has it.
pub async fn stored_pauses(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<Option<Vec<PauseWindow>>, RatingError> {
    let subscription: Option<(Json<Vec<PauseWindow>>,)> =
        sqlx::query_as("SELECT pauses FROM rating.subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_optional(connection)
            .await?;
    Ok(subscription.map(|(Json(pauses),)| pauses))
}

/// A stored phase.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredPhase {
    pub plan_version_id: String,
    pub billing_anchor_at: DateTime<Utc>,
    pub start_at: DateTime<Utc>,
    pub end_at: Option<DateTime<Utc>>,
}

/// The stored phases of `subscription_id`, in order.
pub async fn stored_phases(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<Vec<StoredPhase>, RatingError> {
    Ok(sqlx::query_as(
        "SELECT plan_version_id, billing_anchor_at, start_at, end_at \
             FROM rating.subscription_phases WHERE subscription_id = $1 ORDER BY phase_index",
    )
    .bind(subscription_id)
    .fetch_all(connection)
    .await?)
}
