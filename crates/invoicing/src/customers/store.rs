//! `invoicing.customers`: each customer's snapshot (the encoded
//! `tally.invoicing.v1.Customer`) with the columns it is looked up and
//! listed by, and what decides whether its currency may change or it may be
//! archived.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::Result;

/// A customer's id and snapshot.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CustomerSnapshot {
    /// `cus_…` (the page token).
    pub id: String,
    /// The encoded `tally.invoicing.v1.Customer`.
    pub snapshot: Vec<u8>,
}

/// How a customer is looked up.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// By `cus_…`.
    Id(&'a str),
    /// By the platform's external id.
    ExternalId(&'a str),
}

/// The snapshot of customer `id` (`FOR UPDATE` when `lock`).
pub async fn snapshot(
    connection: &mut PgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<Vec<u8>>> {
    let sql = if lock {
        "SELECT snapshot FROM invoicing.customers WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT snapshot FROM invoicing.customers WHERE id = $1"
    };
    let row: Option<(Vec<u8>,)> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(connection)
        .await?;
    Ok(row.map(|(snapshot,)| snapshot))
}

/// The snapshot of the customer `lookup` names, outside a transaction.
pub async fn snapshot_by(pool: &PgPool, lookup: Lookup<'_>) -> Result<Option<Vec<u8>>> {
    let (sql, value) = match lookup {
        Lookup::Id(id) => ("SELECT snapshot FROM invoicing.customers WHERE id = $1", id),
        Lookup::ExternalId(id) => (
            "SELECT snapshot FROM invoicing.customers WHERE external_id = $1",
            id,
        ),
    };
    let row: Option<(Vec<u8>,)> = sqlx::query_as(sql).bind(value).fetch_optional(pool).await?;
    Ok(row.map(|(snapshot,)| snapshot))
}

/// The snapshots of the customers of `ids` that exist (unlocked).
pub async fn snapshots(
    connection: &mut PgConnection,
    ids: &[&str],
) -> Result<Vec<CustomerSnapshot>> {
    Ok(
        sqlx::query_as("SELECT id, snapshot FROM invoicing.customers WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(connection)
            .await?,
    )
}

/// Locks `external_id` for the rest of the caller's transaction (two
/// creations with the same external id run one after the other).
pub async fn lock_external_id(connection: &mut PgConnection, external_id: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 11))")
        .bind(external_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The snapshot of the customer with `external_id`, in the caller's
/// transaction.
pub async fn snapshot_by_external_id(
    connection: &mut PgConnection,
    external_id: &str,
) -> Result<Option<Vec<u8>>> {
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT snapshot FROM invoicing.customers WHERE external_id = $1")
            .bind(external_id)
            .fetch_optional(connection)
            .await?;
    Ok(row.map(|(snapshot,)| snapshot))
}

/// A new customer's row.
#[derive(Clone, Copy, Debug)]
pub struct NewCustomer<'a> {
    pub id: &'a str,
    pub external_id: &'a str,
    pub currency: &'a str,
    /// The encoded `tally.invoicing.v1.Customer`.
    pub snapshot: &'a [u8],
    pub created_at: DateTime<Utc>,
}

/// Stores a new, active customer.
pub async fn insert(connection: &mut PgConnection, customer: NewCustomer<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.customers (id, external_id, currency, status, request_hash, snapshot, created_at, updated_at) \
         VALUES ($1, $2, $3, 'active', '', $4, $5, $5)",
    )
    .bind(customer.id)
    .bind(customer.external_id)
    .bind(customer.currency)
    .bind(customer.snapshot)
    .bind(customer.created_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Replaces customer `id`'s currency, status (`active` or `archived`) and
/// snapshot.
pub async fn update(
    connection: &mut PgConnection,
    id: &str,
    currency: &str,
    status: &str,
    snapshot: &[u8],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.customers SET currency = $2, status = $3, snapshot = $4, updated_at = $5 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(currency)
    .bind(status)
    .bind(snapshot)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The stored currency of customer `id` (which must exist).
pub async fn currency(connection: &mut PgConnection, id: &str) -> Result<String> {
    let (currency,): (String,) =
        sqlx::query_as("SELECT currency FROM invoicing.customers WHERE id = $1")
            .bind(id)
            .fetch_one(connection)
            .await?;
    Ok(currency)
}

/// Whether customer `id` has a subscription or a credit grant (its
/// currency can then no longer change).
pub async fn has_subscriptions_or_credits(connection: &mut PgConnection, id: &str) -> Result<bool> {
    let (used,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM invoicing.subscriptions WHERE customer_id = $1) \
             OR EXISTS (SELECT 1 FROM invoicing.credit_grants WHERE customer_id = $1)",
    )
    .bind(id)
    .fetch_one(connection)
    .await?;
    Ok(used)
}

/// Up to `limit` customers (with `status` when given) with an id after
/// `after`, by id.
pub async fn page(
    pool: &PgPool,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<CustomerSnapshot>> {
    Ok(sqlx::query_as(
        "SELECT id, snapshot FROM invoicing.customers \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2) \
         ORDER BY id LIMIT $3",
    )
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The ids of customer `id`'s subscriptions not canceled by `now`, by id.
pub async fn live_subscription_ids(
    connection: &mut PgConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM invoicing.subscriptions WHERE customer_id = $1 AND (cancel_at IS NULL OR cancel_at > $2) ORDER BY id",
    )
    .bind(id)
    .bind(now)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
