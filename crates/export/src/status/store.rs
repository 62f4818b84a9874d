//! The status's SQL.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};

/// One table's figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableFigures {
    /// Rows exported.
    pub rows_exported: i64,
    /// Rows waiting.
    pub rows_waiting: i64,
    /// The stream.
    pub stream: Option<String>,
    /// The next offset.
    pub next_offset: i64,
    /// When the oldest waiting row was staged.
    pub oldest_waiting: Option<DateTime<Utc>>,
    /// Last export.
    pub last_exported_at: Option<DateTime<Utc>>,
    /// Last error.
    pub last_error: String,
    /// When.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Stopped on a bug.
    pub stopped: bool,
}

/// The figures of `table` (zeros before anything was staged).
pub async fn figures(pool: &PgPool, table: &str) -> Result<TableFigures, sqlx::Error> {
    let row = sqlx::query(
        "SELECT s.stream_name, coalesce(s.next_offset, 0) AS next_offset, \
                coalesce(s.rows_exported, 0) AS rows_exported, s.last_exported_at, \
                coalesce(s.last_error, '') AS last_error, s.last_error_at, \
                coalesce(s.stopped, false) AS stopped, \
                (SELECT count(*) FROM export.rows r WHERE r.table_name = $1 AND r.exported_at IS NULL) AS waiting, \
                (SELECT min(staged_at) FROM export.rows r WHERE r.table_name = $1 AND r.exported_at IS NULL) AS oldest \
         FROM (SELECT $1::text AS table_name) t \
         LEFT JOIN export.streams s ON s.table_name = t.table_name",
    )
    .bind(table)
    .fetch_one(pool)
    .await?;
    Ok(TableFigures {
        rows_exported: row.try_get("rows_exported")?,
        rows_waiting: row.try_get("waiting")?,
        stream: row.try_get("stream_name")?,
        next_offset: row.try_get("next_offset")?,
        oldest_waiting: row.try_get("oldest")?,
        last_exported_at: row.try_get("last_exported_at")?,
        last_error: row.try_get("last_error")?,
        last_error_at: row.try_get("last_error_at")?,
        stopped: row.try_get("stopped")?,
    })
}
