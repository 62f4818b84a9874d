//! The backfill's SQL: a day's exported rows of a table, read from staging
//! (`export.rows` keeps every row after its export).

use serde_json::Value;
use sqlx::{PgPool, Row as _};

/// The rows of `table` whose `partition_by` column (microseconds) falls in
/// `[start, end)` and that are exported, by key.
pub async fn day_rows(
    pool: &PgPool,
    table: &str,
    partition_by: &str,
    start: i64,
    end: i64,
) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT row_key, row_data FROM export.rows \
         WHERE table_name = $1 AND exported_at IS NOT NULL \
           AND (row_data ->> $2)::bigint >= $3 AND (row_data ->> $2)::bigint < $4 \
         ORDER BY row_key",
    )
    .bind(table)
    .bind(partition_by)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("row_key")?, row.try_get("row_data")?)))
        .collect()
}

/// Whether rows of that day are claimed by the stream but not yet marked
/// exported (an append in flight, which a load finishing meanwhile may replace).
pub async fn day_in_flight(
    pool: &PgPool,
    table: &str,
    partition_by: &str,
    start: i64,
    end: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM export.rows \
         WHERE table_name = $1 AND stream_offset IS NOT NULL AND exported_at IS NULL \
           AND (row_data ->> $2)::bigint >= $3 AND (row_data ->> $2)::bigint < $4)",
    )
    .bind(table)
    .bind(partition_by)
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await
}
