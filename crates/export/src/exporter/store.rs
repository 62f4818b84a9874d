//! The exporter's SQL: the stream state per table, claims and marks.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};

/// A table's stream state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The committed stream, once created.
    pub stream_name: Option<String>,
    /// Rows of the stream known written.
    pub next_offset: i64,
    /// Stopped on a bug (OUT_OF_RANGE, a refused row).
    pub stopped: bool,
}

/// A claimed row.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRow {
    /// Its offset in the stream.
    pub offset: i64,
    /// Column → value.
    pub data: serde_json::Value,
}

/// The state of `table`, created empty when missing.
pub async fn state(pool: &PgPool, table: &str) -> Result<StreamState, sqlx::Error> {
    sqlx::query("INSERT INTO export.streams (table_name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(table)
        .execute(pool)
        .await?;
    let row = sqlx::query(
        "SELECT stream_name, next_offset, stopped FROM export.streams WHERE table_name = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await?;
    Ok(StreamState {
        stream_name: row.try_get("stream_name")?,
        next_offset: row.try_get("next_offset")?,
        stopped: row.try_get("stopped")?,
    })
}

/// Records `stream` as `table`'s stream unless another replica recorded one first.
pub async fn set_stream(
    pool: &PgPool,
    table: &str,
    stream: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE export.streams SET stream_name = $2, next_offset = 0, updated_at = $3 \
         WHERE table_name = $1 AND stream_name IS NULL",
    )
    .bind(table)
    .bind(stream)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// The claimed batch waiting for its append (in offset order), claiming
/// up to `limit` staged rows first when none waits.
pub async fn pending_or_claim(
    pool: &PgPool,
    table: &str,
    limit: i64,
) -> Result<Vec<ClaimedRow>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    // The stream row locked: claims of one table are serialised across replicas.
    let row = sqlx::query(
        "SELECT stream_name, next_offset FROM export.streams WHERE table_name = $1 FOR UPDATE",
    )
    .bind(table)
    .fetch_one(&mut *transaction)
    .await?;
    let stream: Option<String> = row.try_get("stream_name")?;
    let next_offset: i64 = row.try_get("next_offset")?;
    let Some(stream) = stream else {
        return Ok(Vec::new());
    };
    let pending = claimed(&mut transaction, table, &stream).await?;
    if !pending.is_empty() {
        transaction.commit().await?;
        return Ok(pending);
    }
    sqlx::query(
        "UPDATE export.rows r SET stream_name = $2, stream_offset = $3 + c.n - 1 \
         FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM export.rows \
               WHERE table_name = $1 AND stream_offset IS NULL ORDER BY seq LIMIT $4) c \
         WHERE r.table_name = $1 AND r.seq = c.seq",
    )
    .bind(table)
    .bind(&stream)
    .bind(next_offset)
    .bind(limit)
    .execute(&mut *transaction)
    .await?;
    let claimed = claimed(&mut transaction, table, &stream).await?;
    transaction.commit().await?;
    Ok(claimed)
}

async fn claimed(
    connection: &mut sqlx::PgConnection,
    table: &str,
    stream: &str,
) -> Result<Vec<ClaimedRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT stream_offset, row_data FROM export.rows \
         WHERE table_name = $1 AND stream_name = $2 AND stream_offset IS NOT NULL \
           AND exported_at IS NULL ORDER BY stream_offset",
    )
    .bind(table)
    .bind(stream)
    .fetch_all(connection)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedRow {
                offset: row.try_get("stream_offset")?,
                data: row.try_get("row_data")?,
            })
        })
        .collect()
}

/// Marks the batch `[from, from + count)` of `stream` exported and moves
/// `next_offset` past it, in one transaction; `false` when another replica
/// marked it first.
pub async fn mark_exported(
    pool: &PgPool,
    table: &str,
    stream: &str,
    from: i64,
    count: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE export.streams SET next_offset = next_offset + $4, \
             rows_exported = rows_exported + $4, last_exported_at = $5, last_error = '', \
             updated_at = $5 \
         WHERE table_name = $1 AND stream_name = $2 AND next_offset = $3",
    )
    .bind(table)
    .bind(stream)
    .bind(from)
    .bind(count)
    .bind(now)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE export.rows SET exported_at = $5 WHERE table_name = $1 AND stream_name = $2 \
           AND stream_offset >= $3 AND stream_offset < $3 + $4",
    )
    .bind(table)
    .bind(stream)
    .bind(from)
    .bind(count)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Records `error` on `table`; with `stop`, the table is stopped.
pub async fn record_error(
    pool: &PgPool,
    table: &str,
    error: &str,
    stop: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE export.streams SET last_error = $2, last_error_at = $3, \
             stopped = stopped OR $4, updated_at = $3 WHERE table_name = $1",
    )
    .bind(table)
    .bind(error)
    .bind(now)
    .bind(stop)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seconds since the oldest row of `table` not yet exported was staged (0 when none waits).
pub async fn lag_seconds(
    pool: &PgPool,
    table: &str,
    now: DateTime<Utc>,
) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM $2 - min(staged_at)), 0)::float8 FROM export.rows \
         WHERE table_name = $1 AND exported_at IS NULL",
    )
    .bind(table)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Moves `table` from `old` to the new stream `new`: the rows claimed on
/// `old` and not exported (a batch not written there) are given the same
/// positions from offset 0 of `new`, and `next_offset` starts at 0; `false`
/// when `old` is no longer the table's stream (another replica rotated).
pub async fn rotate(
    pool: &PgPool,
    table: &str,
    old: &str,
    old_next_offset: i64,
    new: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE export.streams SET stream_name = $3, next_offset = 0, updated_at = $4 \
         WHERE table_name = $1 AND stream_name = $2 AND next_offset = $5",
    )
    .bind(table)
    .bind(old)
    .bind(new)
    .bind(now)
    .bind(old_next_offset)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE export.rows SET stream_name = $3, stream_offset = stream_offset - $4 \
         WHERE table_name = $1 AND stream_name = $2 AND exported_at IS NULL",
    )
    .bind(table)
    .bind(old)
    .bind(new)
    .bind(old_next_offset)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(true)
}
