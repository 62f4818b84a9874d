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
