//! `tally export backfill`: a table's daily partitions rebuilt from the rows
//! export already holds, idempotently. Each day is one BigQuery load job
//! replacing the partition (`table$YYYYMMDD`, `WRITE_TRUNCATE`) by the day's
//! exported rows, under a job id made of the table, the day, a hash of the
//! exact content and a generation: asking again for the same content is
//! refused by BigQuery (409 `ALREADY_EXISTS`) and counts as done once that
//! job succeeded; a job id spent by a failed load moves to the next
//! generation; a new generation (`--generation`) forces a reload of the
//! same content.
//!
//! The rows come from `export.rows` (staging keeps every row after its
//! export), only those marked exported, so the stream never appends them
//! again. A row of that day the stream appends while the load runs could be
//! replaced by it: after the load, the day is read again and loaded again
//! until what was loaded is what is exported and no append of that day is in
//! flight.

pub mod store;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::bigquery::BigQueryError;
use crate::bigquery::jobs::{JobState, Submitted};
use crate::bigquery::rest::Rest;
use crate::tables::{ColumnType, Table};

/// The most days one backfill rebuilds.
pub const MAX_DAYS: i64 = 92;
/// Loads of one day before giving up (job ids spent by failed loads, rows
/// of the day appended meanwhile).
const MAX_LOADS_PER_DAY: u32 = 8;

/// One day rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Rows the partition holds now.
    pub rows: u64,
    /// The load job.
    pub job_id: String,
    /// True when BigQuery had that exact load already (409 `ALREADY_EXISTS`).
    pub already_loaded: bool,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The request is wrong (table, days).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// BigQuery failed or refused a call.
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
    /// A load job this backfill created failed (nothing was written).
    #[error("load job {job_id} failed: {message}")]
    JobFailed {
        /// The job.
        job_id: String,
        /// BigQuery's `errorResult`.
        message: String,
    },
    /// The day could not be loaded stably (its rows kept changing, or job
    /// ids kept failing).
    #[error("{day}: not loaded after {MAX_LOADS_PER_DAY} loads: {reason}")]
    Unsettled {
        /// The day.
        day: NaiveDate,
        /// Why.
        reason: String,
    },
}

/// Rebuilds partitions of the warehouse.
#[derive(Debug, Clone)]
pub struct Backfill {
    pool: PgPool,
    rest: Rest,
    poll: Duration,
    job_timeout: Duration,
}

impl Backfill {
    /// A backfill over `pool`'s staged rows into `rest`'s dataset.
    pub fn new(pool: PgPool, rest: Rest) -> Self {
        Self {
            pool,
            rest,
            poll: Duration::from_secs(1),
            job_timeout: Duration::from_secs(600),
        }
    }

    /// The same, asking a job's state every `poll` (tests).
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Rebuilds the partitions of `table` from `from` to `to` (inclusive),
    /// day by day, starting at job generation `generation`.
    pub async fn run(
        &self,
        table: Table,
        from: NaiveDate,
        to: NaiveDate,
        generation: u32,
    ) -> Result<Vec<Partition>, BackfillError> {
        if to < from {
            return Err(BackfillError::Invalid(format!(
                "--to {to} is before --from {from}"
            )));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(BackfillError::Invalid(format!(
                "at most {MAX_DAYS} days per backfill ({from} to {to} is {} days)",
                (to - from).num_days() + 1
            )));
        }
        let mut done = Vec::new();
        for day in from.iter_days().take_while(|day| *day <= to) {
            done.push(self.day(table, day, generation).await?);
        }
        Ok(done)
    }

    /// Rebuilds one day's partition.
    pub async fn day(
        &self,
        table: Table,
        day: NaiveDate,
        generation: u32,
    ) -> Result<Partition, BackfillError> {
        let (start, end) = day_bounds(day);
        let mut generation = generation;
        let mut reason = String::new();
        for _ in 0..MAX_LOADS_PER_DAY {
            let rows =
                store::day_rows(&self.pool, table.name, table.partition_by, start, end).await?;
            let body = ndjson(&table, &rows).map_err(BackfillError::Invalid)?;
            let job_id = job_id(&table, day, &body, generation);
            let submitted = self
                .rest
                .insert_load_job(&table, day, &job_id, &body)
                .await?;
            match self.wait(&job_id).await? {
                JobState::Succeeded => {}
                JobState::Failed(message) if submitted == Submitted::AlreadyExists => {
                    tracing::warn!(%job_id, %message, "an earlier load of this content failed: its job id is spent, loading under the next generation");
                    reason = format!("job {job_id} failed: {message}");
                    generation += 1;
                    continue;
                }
                JobState::Failed(message) => {
                    return Err(BackfillError::JobFailed { job_id, message });
                }
                JobState::Running => return Err(timed_out(job_id)),
            }
            let after =
                store::day_rows(&self.pool, table.name, table.partition_by, start, end).await?;
            let in_flight =
                store::day_in_flight(&self.pool, table.name, table.partition_by, start, end)
                    .await?;
            if after == rows && !in_flight {
                tracing::info!(table = table.name, %day, %job_id, rows = rows.len(), ?submitted, "partition rebuilt");
                return Ok(Partition {
                    day,
                    rows: u64::try_from(rows.len()).unwrap_or(u64::MAX),
                    job_id,
                    already_loaded: submitted == Submitted::AlreadyExists,
                });
            }
            // Rows of the day were exported or are being appended while the
            // load ran: it may have replaced them. Load the day again.
            reason = "rows of the day were exported while it was loading".to_owned();
            tokio::time::sleep(self.poll).await;
        }
        Err(BackfillError::Unsettled { day, reason })
    }

    /// Waits until job `job_id` is done.
    async fn wait(&self, job_id: &str) -> Result<JobState, BackfillError> {
        let deadline = tokio::time::Instant::now() + self.job_timeout;
        loop {
            match self.rest.job_state(job_id).await? {
                JobState::Running if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.poll).await;
                }
                state => return Ok(state),
            }
        }
    }
}

fn timed_out(job_id: String) -> BackfillError {
    BackfillError::JobFailed {
        job_id,
        message:
            "still running after 10 minutes: see it with `bq show -j`, then run the backfill again"
                .to_owned(),
    }
}

/// `[start, end)` of `day` in microseconds since the epoch (UTC).
fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = start + TimeDelta::days(1);
    (start.timestamp_micros(), end.timestamp_micros())
}

/// The load job id of `body` for `table`'s partition `day` at `generation`:
/// the same content asked again is the same id.
pub fn job_id(table: &Table, day: NaiveDate, body: &[u8], generation: u32) -> String {
    let digest = Sha256::digest(body);
    format!(
        "tally_backfill_{}_{}_{}_g{generation}",
        table.name,
        day.format("%Y%m%d"),
        hex::encode(&digest[..12])
    )
}

/// The rows as a load job reads them: one JSON object per line, in key
/// order; `TIMESTAMP` as UTC text, `JSON` as the value itself, `INT64` as a
/// string (exact beyond 2^53).
pub fn ndjson(table: &Table, rows: &[(String, Value)]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    for (key, row) in rows {
        let mut line = Map::new();
        for column in table.columns {
            let value = row.get(column.name).unwrap_or(&Value::Null);
            let value = match (column.kind, value) {
                (_, Value::Null) => Value::Null,
                (ColumnType::Timestamp, Value::Number(micros)) => {
                    let micros = micros
                        .as_i64()
                        .ok_or_else(|| format!("{key}: {} is not an integer", column.name))?;
                    let time = DateTime::<Utc>::from_timestamp_micros(micros)
                        .ok_or_else(|| format!("{key}: {} is out of range", column.name))?;
                    json!(time.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                }
                (ColumnType::Json, Value::String(text)) => serde_json::from_str(text)
                    .map_err(|error| format!("{key}: {} is not JSON: {error}", column.name))?,
                (ColumnType::Int64, Value::Number(number)) => json!(number.to_string()),
                (_, value) => value.clone(),
            };
            line.insert(column.name.to_owned(), value);
        }
        serde_json::to_writer(&mut body, &Value::Object(line)).map_err(|e| e.to_string())?;
        body.push(b'\n');
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::INVOICES;

    #[test]
    fn the_same_content_is_the_same_job_and_any_change_another() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let first = job_id(&INVOICES, day, b"{\"a\":1}\n", 0);
        assert_eq!(first, job_id(&INVOICES, day, b"{\"a\":1}\n", 0));
        assert_ne!(first, job_id(&INVOICES, day, b"{\"a\":2}\n", 0));
        assert_ne!(first, job_id(&INVOICES, day, b"{\"a\":1}\n", 1));
        assert!(
            first.starts_with("tally_backfill_invoices_20261201_"),
            "{first}"
        );
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn rows_are_loaded_as_bigquery_reads_json() {
        let row = json!({
            "customer_id": "cus_1", "event_id": "e1", "event_type": "tokens",
            "event_time": 1_764_547_200_000_000_i64, "properties": "{\"tokens\":\"5\"}",
            "sequence_number": 7, "ingested_at": 1_764_547_200_000_001_i64,
            "exported_at": 1_764_547_200_000_002_i64,
        });
        let body = ndjson(
            &crate::tables::USAGE_EVENTS,
            &[("cus_1/e1".to_owned(), row)],
        )
        .unwrap();
        let line: Value = serde_json::from_slice(body.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(line["event_time"], json!("2025-12-01 00:00:00.000000"));
        assert_eq!(line["properties"], json!({"tokens": "5"}));
        assert_eq!(line["sequence_number"], json!("7"));
        assert_eq!(line["source"], Value::Null);
    }
}
