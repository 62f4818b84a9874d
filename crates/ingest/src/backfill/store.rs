//! The `ingest.backfills` table: open windows per customer, open, close, list.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tally_domain::ids::BackfillId;

use super::NewBackfill;

/// A stored backfill: id, customer, range start and end, reason, opened, expires, closed.
pub(super) type BackfillRow = (
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const COLUMNS: &str =
    "id, customer_id, start_time, end_time, reason, opened_at, expires_at, closed_at";

/// Open backfill ranges `[start, end)` per customer at `now`.
pub async fn open_windows(
    pool: &PgPool,
    customers: &BTreeSet<&str>,
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<(DateTime<Utc>, DateTime<Utc>)>>, sqlx::Error> {
    let customers: Vec<&str> = customers.iter().copied().collect();
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT customer_id, start_time, end_time FROM ingest.backfills \
         WHERE customer_id = ANY($1) AND closed_at IS NULL AND expires_at > $2 AND opened_at <= $2",
    )
    .bind(&customers)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let mut windows: HashMap<String, Vec<_>> = HashMap::new();
    for (customer, start, end) in rows {
        windows.entry(customer).or_default().push((start, end));
    }
    Ok(windows)
}

/// Inserts a backfill unless its idempotency key is taken; the new row, or `None`.
pub(super) async fn insert(
    connection: &mut PgConnection,
    id: &BackfillId,
    request: &NewBackfill,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<BackfillRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ingest.backfills \
         (id, idempotency_key, request_hash, customer_id, start_time, end_time, reason, opened_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(id.as_str())
    .bind(&request.idempotency_key)
    .bind(hash)
    .bind(request.customer_id.as_str())
    .bind(request.start)
    .bind(request.end)
    .bind(&request.reason)
    .bind(now)
    .bind(now + request.duration)
    .fetch_optional(connection)
    .await
}

/// The request hash and row of the backfill opened with `idempotency_key`.
pub(super) async fn by_key(
    pool: &PgPool,
    idempotency_key: &str,
) -> Result<(Vec<u8>, BackfillRow), sqlx::Error> {
    let stored_hash: Vec<u8> =
        sqlx::query_scalar("SELECT request_hash FROM ingest.backfills WHERE idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_one(pool)
            .await?;
    let row: BackfillRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ingest.backfills WHERE idempotency_key = $1"
    )))
    .bind(idempotency_key)
    .fetch_one(pool)
    .await?;
    Ok((stored_hash, row))
}

/// Backfill `id`, locked (`FOR UPDATE`) until the caller's transaction ends;
/// `None` if there is none.
pub(super) async fn lock(
    connection: &mut PgConnection,
    id: &BackfillId,
) -> Result<Option<BackfillRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ingest.backfills WHERE id = $1 FOR UPDATE"
    )))
    .bind(id.as_str())
    .fetch_optional(connection)
    .await
}

/// Closes a backfill (a closed one keeps its closing time); `None` if there is none.
pub(super) async fn close(
    connection: &mut PgConnection,
    id: &BackfillId,
    now: DateTime<Utc>,
) -> Result<Option<BackfillRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE ingest.backfills SET closed_at = COALESCE(closed_at, LEAST($2, expires_at)) \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id.as_str())
    .bind(now)
    .fetch_optional(connection)
    .await
}

/// A page of backfills, newest first; `after` is the last id of the previous page.
pub(super) async fn list(
    pool: &PgPool,
    customer_id: Option<&str>,
    open_only: bool,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<BackfillRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ingest.backfills \
         WHERE ($1::text IS NULL OR customer_id = $1) \
           AND (NOT $2 OR (closed_at IS NULL AND expires_at > $3)) \
           AND ($4::text IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5"
    )))
    .bind(customer_id)
    .bind(open_only)
    .bind(now)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
