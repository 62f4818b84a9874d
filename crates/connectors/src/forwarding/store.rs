//! The forwarding tables (`connectors.orb_customers`,
//! `connectors.forwarded_events`): what the forwarder reads before it sends
//! and writes, with the inbox, after.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row as _};

use super::{ForwardingState, Settled};

/// The message ids of `message_ids` that `subscription` already applied.
pub async fn already_applied(
    pool: &PgPool,
    subscription: &str,
    message_ids: &[String],
) -> Result<BTreeSet<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT message_id FROM connectors.inbox WHERE subscription = $1 AND message_id = ANY($2)",
    )
    .bind(subscription)
    .bind(message_ids)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|row| row.try_get("message_id")).collect()
}

/// The (customer, event) pairs of `keys` that already have a state (an
/// event re-published under another message id is not sent again).
pub async fn already_settled(
    pool: &PgPool,
    keys: &[(String, String)],
) -> Result<BTreeSet<(String, String)>, sqlx::Error> {
    let (customers, events): (Vec<String>, Vec<String>) = keys.iter().cloned().unzip();
    let rows = sqlx::query(
        "SELECT f.customer_id, f.event_id FROM connectors.forwarded_events f \
         JOIN unnest($1::text[], $2::text[]) AS k(customer_id, event_id) \
           ON f.customer_id = k.customer_id AND f.event_id = k.event_id",
    )
    .bind(&customers)
    .bind(&events)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("customer_id")?, row.try_get("event_id")?)))
        .collect()
}

/// Customer → Orb external customer id, for those of `customers` mapped.
pub async fn mappings(
    pool: &PgPool,
    customers: &[String],
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT customer_id, external_customer_id FROM connectors.orb_customers \
         WHERE customer_id = ANY($1)",
    )
    .bind(customers)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("customer_id")?,
                row.try_get("external_customer_id")?,
            ))
        })
        .collect()
}

/// Records one settled event (nothing when it has a state already).
pub async fn record(
    connection: &mut PgConnection,
    settled: &Settled,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let forwarded_at = (settled.state == ForwardingState::Forwarded).then_some(now);
    sqlx::query(
        "INSERT INTO connectors.forwarded_events \
         (customer_id, event_id, message_id, idempotency_key, external_customer_id, state, \
          reason, attempts, event_time, forwarded_at, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (customer_id, event_id) DO NOTHING",
    )
    .bind(&settled.customer_id)
    .bind(&settled.event_id)
    .bind(&settled.message_id)
    .bind(&settled.idempotency_key)
    .bind(&settled.external_customer_id)
    .bind(settled.state.as_str())
    .bind(&settled.reason)
    .bind(i32::try_from(settled.attempts).unwrap_or(i32::MAX))
    .bind(settled.event_time)
    .bind(forwarded_at)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// The customer that `external_customer_id` is mapped to, if any.
pub async fn customer_mapped_to(
    connection: &mut PgConnection,
    external_customer_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM connectors.orb_customers WHERE external_customer_id = $1",
    )
    .bind(external_customer_id)
    .fetch_optional(connection)
    .await
}

/// When a mapping was made and last changed.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct MappingTimes {
    /// First mapped.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Maps `customer_id` to `external_customer_id`; returns the mapping's times
/// when this inserted or changed it, `None` when it was already so.
pub async fn upsert_mapping(
    connection: &mut PgConnection,
    customer_id: &str,
    external_customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<MappingTimes>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO connectors.orb_customers \
         (customer_id, external_customer_id, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (customer_id) DO UPDATE SET external_customer_id = EXCLUDED.external_customer_id, \
           updated_at = EXCLUDED.updated_at \
         WHERE connectors.orb_customers.external_customer_id <> EXCLUDED.external_customer_id \
         RETURNING created_at, updated_at",
    )
    .bind(customer_id)
    .bind(external_customer_id)
    .bind(now)
    .fetch_optional(connection)
    .await
}

/// The times of `customer_id`'s mapping (which must exist).
pub async fn mapping_times(
    connection: &mut PgConnection,
    customer_id: &str,
) -> Result<MappingTimes, sqlx::Error> {
    sqlx::query_as(
        "SELECT created_at, updated_at FROM connectors.orb_customers WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(connection)
    .await
}

/// One row of `connectors.forwarded_events`, as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ForwardedEventRow {
    /// Listing order (the page token).
    pub seq: i64,
    /// `cus_…`.
    pub customer_id: String,
    /// The usage event's id.
    pub event_id: String,
    /// What Orb deduplicates by.
    pub idempotency_key: String,
    /// The Orb customer (empty when not mapped).
    pub external_customer_id: String,
    /// `forwarded`, `rejected` or `not_mapped`.
    pub state: String,
    /// Why, when not forwarded.
    pub reason: String,
    /// Sends tried.
    pub attempts: i32,
    /// The usage event's time.
    pub event_time: DateTime<Utc>,
    /// When Orb accepted it.
    pub forwarded_at: Option<DateTime<Utc>>,
    /// When its state was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// Up to `limit` forwarded events after `after_seq`, of `customer_id` and in
/// `state` when given, oldest first.
pub async fn forwarded_events_page(
    pool: &PgPool,
    after_seq: i64,
    customer_id: Option<&str>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<ForwardedEventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, customer_id, event_id, idempotency_key, external_customer_id, state, \
                reason, attempts, event_time, forwarded_at, recorded_at \
         FROM connectors.forwarded_events \
         WHERE seq > $1 AND ($2::text IS NULL OR customer_id = $2) \
           AND ($3::text IS NULL OR state = $3) \
         ORDER BY seq LIMIT $4",
    )
    .bind(after_seq)
    .bind(customer_id)
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Counts of forwarded events by state, of mapped customers, and the last
/// forwarding.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct ForwardingCounts {
    /// Events Orb accepted.
    pub forwarded: i64,
    /// Events Orb refused.
    pub rejected: i64,
    /// Events of customers without a mapping.
    pub not_mapped: i64,
    /// When Orb last accepted one.
    pub last_forwarded_at: Option<DateTime<Utc>>,
    /// Customers mapped to Orb.
    pub mapped_customers: i64,
}

/// The forwarding counts of `customer_id` (of everyone when `None`).
pub async fn forwarding_counts(
    pool: &PgPool,
    customer_id: Option<&str>,
) -> Result<ForwardingCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'forwarded') AS forwarded, \
                count(*) FILTER (WHERE state = 'rejected') AS rejected, \
                count(*) FILTER (WHERE state = 'not_mapped') AS not_mapped, \
                max(forwarded_at) AS last_forwarded_at, \
                (SELECT count(*) FROM connectors.orb_customers \
                  WHERE $1::text IS NULL OR customer_id = $1) AS mapped_customers \
         FROM connectors.forwarded_events WHERE $1::text IS NULL OR customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(pool)
    .await
}
