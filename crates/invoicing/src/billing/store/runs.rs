//! What the bill run reads to plan its work: the due subscriptions, the
//! drafts to refresh, and the subscription changes still in the outbox.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::Result;

/// Up to `limit` subscriptions due at `now` (of `customer_id` when given)
/// with an id after `after`, by id.
pub async fn due_subscription_ids(
    pool: &PgPool,
    now: DateTime<Utc>,
    customer_id: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM invoicing.subscriptions WHERE next_bill_at <= $1 \
           AND ($2::text IS NULL OR customer_id = $2) AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(now)
    .bind(customer_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(due.into_iter().map(|(id,)| id).collect())
}

/// A draft to refresh or finalize.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DraftToRefresh {
    /// `inv_…`.
    pub id: String,
    /// `sub_…`.
    pub subscription_id: String,
}

/// The drafts (of `customer_id` when given) whose grace period ended by
/// `now` or that were not refreshed since `stale_before`, by id.
pub async fn drafts_to_refresh(
    pool: &PgPool,
    customer_id: Option<&str>,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<Vec<DraftToRefresh>> {
    Ok(sqlx::query_as(
        "SELECT id, subscription_id FROM invoicing.invoices WHERE status = 'draft' \
         AND ($1::text IS NULL OR customer_id = $1) \
         AND (grace_period_ends_at <= $2 OR refreshed_at IS NULL OR refreshed_at <= $3) ORDER BY id",
    )
    .bind(customer_id)
    .bind(now)
    .bind(stale_before)
    .fetch_all(pool)
    .await?)
}

/// The customer of subscription `subscription_id`, if it exists.
pub async fn subscription_customer(
    pool: &PgPool,
    subscription_id: &str,
) -> std::result::Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer_id FROM invoicing.subscriptions WHERE id = $1")
        .bind(subscription_id)
        .fetch_optional(pool)
        .await
}

/// The customers among `customers` with a message on `topic` still
/// unpublished in the outbox (the outbox orders by customer).
pub async fn customers_with_unpublished(
    connection: &mut PgConnection,
    topic: &str,
    customers: &[&str],
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT ordering_key FROM invoicing.outbox \
         WHERE topic = $1 AND ordering_key = ANY($2) AND published_at IS NULL",
    )
    .bind(topic)
    .bind(customers)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(customer,)| customer).collect())
}
