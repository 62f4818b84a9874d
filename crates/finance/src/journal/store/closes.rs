//! `finance.closes`: the period closes, and the exclusive side of the close
//! lock (postings take the shared side, `super::closed_through`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::CLOSE_LOCK;
use crate::error::FinanceServiceError;

/// A stored close.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Close {
    /// Nothing may be posted before it.
    pub close_through: DateTime<Utc>,
    /// When it was made.
    pub closed_at: DateTime<Utc>,
    /// Why.
    pub memo: String,
}

/// Takes the close lock exclusively for the rest of the caller's
/// transaction: no posting reads the old close and inserts after it commits.
pub async fn lock_closes(connection: &mut PgConnection) -> Result<(), FinanceServiceError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLOSE_LOCK)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Stores a close through `close_through` made at `closed_at`, unless a
/// close as late or later exists; whether it stored it.
pub async fn insert_close_if_later(
    connection: &mut PgConnection,
    close_through: DateTime<Utc>,
    closed_at: DateTime<Utc>,
    memo: &str,
) -> Result<bool, FinanceServiceError> {
    let inserted = sqlx::query(
        "INSERT INTO finance.closes (close_through, closed_at, memo) \
         SELECT $1, $2, $3 WHERE $1 > COALESCE((SELECT max(close_through) FROM finance.closes), '-infinity') \
         ON CONFLICT DO NOTHING",
    )
    .bind(close_through)
    .bind(closed_at)
    .bind(memo)
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    Ok(inserted)
}

/// Stores a close as it was made (a rebuild re-applying it).
pub async fn insert_close(
    connection: &mut PgConnection,
    close: &Close,
) -> Result<(), FinanceServiceError> {
    sqlx::query("INSERT INTO finance.closes (close_through, closed_at, memo) VALUES ($1, $2, $3)")
        .bind(close.close_through)
        .bind(close.closed_at)
        .bind(&close.memo)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The close in force (the latest `close_through`); there must be one.
pub async fn latest_close(connection: &mut PgConnection) -> Result<Close, FinanceServiceError> {
    latest_close_if_any(connection)
        .await?
        .ok_or(FinanceServiceError::Database(sqlx::Error::RowNotFound))
}

/// The close in force, if any close was made.
pub async fn latest_close_if_any(
    connection: &mut PgConnection,
) -> Result<Option<Close>, FinanceServiceError> {
    Ok(sqlx::query_as(
        "SELECT close_through, closed_at, memo FROM finance.closes ORDER BY close_through DESC LIMIT 1",
    )
    .fetch_optional(&mut *connection)
    .await?)
}

/// Every close, the latest `close_through` first.
pub async fn closes_latest_first(pool: &PgPool) -> Result<Vec<Close>, FinanceServiceError> {
    Ok(sqlx::query_as(
        "SELECT close_through, closed_at, memo FROM finance.closes ORDER BY close_through DESC",
    )
    .fetch_all(pool)
    .await?)
}

/// Every close, in the order they were made.
pub async fn closes_in_order_made(
    connection: &mut PgConnection,
) -> Result<Vec<Close>, FinanceServiceError> {
    Ok(sqlx::query_as(
        "SELECT close_through, closed_at, memo FROM finance.closes ORDER BY closed_at",
    )
    .fetch_all(&mut *connection)
    .await?)
}
