//! Backfills: a customer's time range in which events older than the
//! backfill window are accepted, for a limited time (an operator decision,
//! kept for audit).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tally_domain::ids::{BackfillId, CustomerId};
use tally_proto::common::TimeRange;
use tally_proto::ingest::Backfill;
use tally_runtime::clock_service::chrono_to_timestamp;

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

/// A backfill request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackfill {
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The customer.
    pub customer_id: CustomerId,
    /// Range start (inclusive).
    pub start: DateTime<Utc>,
    /// Range end (exclusive).
    pub end: DateTime<Utc>,
    /// How long it stays open.
    pub duration: chrono::Duration,
    /// Why.
    pub reason: String,
}

impl NewBackfill {
    fn request_hash(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for part in [
            self.customer_id.as_str(),
            &self.start.to_rfc3339(),
            &self.end.to_rfc3339(),
            &self.duration.num_seconds().to_string(),
            self.reason.as_str(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().to_vec()
    }
}

/// Why a backfill call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The idempotency key was used for a different request.
    #[error("idempotency key {0:?} was already used for a different backfill request")]
    IdempotencyConflict(String),
    /// No such backfill.
    #[error("backfill {0:?} does not exist")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

type BackfillRow = (
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

/// Opens a backfill, or returns the one opened earlier with the same key and request.
pub async fn open(
    pool: &PgPool,
    id: BackfillId,
    request: &NewBackfill,
    now: DateTime<Utc>,
) -> Result<Backfill, BackfillError> {
    let hash = request.request_hash();
    let inserted: Option<BackfillRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ingest.backfills \
         (id, idempotency_key, request_hash, customer_id, start_time, end_time, reason, opened_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(id.as_str())
    .bind(&request.idempotency_key)
    .bind(&hash)
    .bind(request.customer_id.as_str())
    .bind(request.start)
    .bind(request.end)
    .bind(&request.reason)
    .bind(now)
    .bind(now + request.duration)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        return Ok(to_proto(row));
    }
    let stored_hash: Vec<u8> =
        sqlx::query_scalar("SELECT request_hash FROM ingest.backfills WHERE idempotency_key = $1")
            .bind(&request.idempotency_key)
            .fetch_one(pool)
            .await?;
    let row: BackfillRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ingest.backfills WHERE idempotency_key = $1"
    )))
    .bind(&request.idempotency_key)
    .fetch_one(pool)
    .await?;
    if stored_hash != hash {
        return Err(BackfillError::IdempotencyConflict(
            request.idempotency_key.clone(),
        ));
    }
    Ok(to_proto(row))
}

/// Closes a backfill (idempotent: closing a closed one returns it unchanged).
pub async fn close(
    pool: &PgPool,
    id: &BackfillId,
    now: DateTime<Utc>,
) -> Result<Backfill, BackfillError> {
    let row: Option<BackfillRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE ingest.backfills SET closed_at = COALESCE(closed_at, LEAST($2, expires_at)) \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id.as_str())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    row.map(to_proto)
        .ok_or_else(|| BackfillError::NotFound(id.to_string()))
}

/// A page of backfills, newest first; `after` is the last id of the previous page.
pub async fn list(
    pool: &PgPool,
    customer_id: Option<&str>,
    open_only: bool,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Backfill>, sqlx::Error> {
    let rows: Vec<BackfillRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
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
    .await?;
    Ok(rows.into_iter().map(to_proto).collect())
}

fn to_proto(row: BackfillRow) -> Backfill {
    let (id, customer_id, start, end, reason, opened_at, expires_at, closed_at) = row;
    Backfill {
        id,
        customer_id,
        event_time_range: Some(TimeRange {
            start_time: Some(chrono_to_timestamp(start)),
            end_time: Some(chrono_to_timestamp(end)),
        }),
        reason,
        opened_at: Some(chrono_to_timestamp(opened_at)),
        expires_at: Some(chrono_to_timestamp(expires_at)),
        closed_at: closed_at.map(chrono_to_timestamp),
    }
}
