//! Staging's SQL: rows inserted once per (table, key).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StagedRow;

/// Stages `rows` (a row whose key is already staged is left as it is);
/// returns how many were new.
pub async fn stage(
    connection: &mut PgConnection,
    rows: &[StagedRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let tables: Vec<&str> = rows.iter().map(|row| row.table.name).collect();
    let keys: Vec<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    let data: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| serde_json::Value::Object(row.data.clone()))
        .collect();
    let result = sqlx::query(
        "INSERT INTO export.rows (table_name, row_key, row_data, staged_at) \
         SELECT t, k, d, $4 FROM UNNEST($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS r(t, k, d, n) \
         ORDER BY n \
         ON CONFLICT (table_name, row_key) DO NOTHING",
    )
    .bind(&tables)
    .bind(&keys)
    .bind(&data)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(result.rows_affected())
}
