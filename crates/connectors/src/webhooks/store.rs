//! `connectors.orb_webhook_events`: every webhook event received, once.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::biller::ExternalWebhookEvent;

/// Records `event`; `false` when its id was received before.
pub async fn record_once(
    pool: &PgPool,
    event: &ExternalWebhookEvent,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let subjects = serde_json::to_value(&event.subjects).unwrap_or_default();
    let inserted = sqlx::query(
        "INSERT INTO connectors.orb_webhook_events \
         (event_id, event_type, created_at, subjects, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.created_at)
    .bind(subjects)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// How many times `event_id` is recorded (0 or 1).
pub async fn count(pool: &PgPool, event_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM connectors.orb_webhook_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
}
