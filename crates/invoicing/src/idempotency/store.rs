//! `invoicing.idempotency_keys`: the first result per (method, key), and
//! the transaction lock that serialises requests with the same key.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// A recorded request: its hash and the resource it produced.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RecordedKey {
    pub request_hash: String,
    pub resource_id: String,
}

/// Locks `(method, key)` for the rest of the caller's transaction.
pub async fn lock_key(connection: &mut PgConnection, method: &str, key: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(format!("{method}:{key}"))
        .execute(connection)
        .await?;
    Ok(())
}

/// The request recorded under `(method, key)`, if any.
pub async fn recorded_key(
    connection: &mut PgConnection,
    method: &str,
    key: &str,
) -> Result<Option<RecordedKey>> {
    Ok(sqlx::query_as(
        "SELECT request_hash, resource_id FROM invoicing.idempotency_keys WHERE method = $1 AND key = $2",
    )
    .bind(method)
    .bind(key)
    .fetch_optional(connection)
    .await?)
}

/// Records that the request `hash` under `(method, key)` produced
/// `resource_id`.
pub async fn insert_key(
    connection: &mut PgConnection,
    method: &str,
    key: &str,
    hash: &str,
    resource_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.idempotency_keys (method, key, request_hash, resource_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(method)
    .bind(key)
    .bind(hash)
    .bind(resource_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}
