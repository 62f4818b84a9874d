//! The exporter: staged rows → BigQuery, exactly once, one loop per table.
//!
//! Each table has one committed write stream; PostgreSQL holds its name and
//! `next_offset`, the number of its rows known written. One round:
//!
//! 1. **claim** — in a transaction, give the next staged rows (in staging
//!    order) the offsets `next_offset…`; a claimed batch never changes;
//! 2. **append** the claimed batch at `next_offset`;
//! 3. **mark** — in one transaction, set `exported_at` on the batch and move
//!    `next_offset` past it.
//!
//! A crash between 1 and 2 re-sends the same batch; between 2 and 3 the
//! re-sent append answers `ALREADY_EXISTS` (appends are atomic: the whole
//! batch is there), which is marked like a success. So a row is never
//! missing (nothing is marked before BigQuery has it) and never twice (an
//! offset is written once). `OUT_OF_RANGE` means the stream ends before
//! `next_offset`, which this bookkeeping never allows: the table stops, with
//! its error in `tally export status` and the `tally.export.stopped` metric.
//!
//! A stream that refuses appends (finalized) is finalized again for its row
//! count, which tells whether the claimed batch is in it (marked if so), and
//! replaced by a new stream from offset 0; a stream BigQuery no longer has
//! stops the table (whether the batch landed cannot be known).

pub mod store;

use std::time::Duration;

use sqlx::PgPool;
use tally_runtime::{SharedClock, Shutdown};

use crate::bigquery::write::{Appended, Writer};
use crate::bigquery::{BigQueryError, rows};
use crate::metrics;
use crate::tables::Table;

/// How often the lag gauge (`tally.export.lag_seconds`) is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Longest pause after a failed round (doubled from the poll interval).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Nothing was waiting.
    Idle,
    /// This many rows were exported.
    Exported(u64),
    /// The table is stopped (a bug was found); it waits for an operator.
    Stopped,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database failed (retried).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// BigQuery failed (retried).
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
}

/// Exports one table.
#[derive(Debug, Clone)]
pub struct TableExporter {
    pool: PgPool,
    clock: SharedClock,
    writer: Writer,
    table: Table,
    batch_rows: i64,
}

impl TableExporter {
    /// An exporter of `table` in batches of at most `batch_rows`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        writer: Writer,
        table: Table,
        batch_rows: usize,
    ) -> Self {
        Self {
            pool,
            clock,
            writer,
            table,
            batch_rows: i64::try_from(batch_rows).unwrap_or(500).max(1),
        }
    }

    /// One claim, append and mark.
    pub async fn round(&self) -> Result<Round, ExportError> {
        let name = self.table.name;
        let state = store::state(&self.pool, name).await?;
        if state.stopped {
            return Ok(Round::Stopped);
        }
        let stream = match state.stream_name {
            Some(stream) => stream,
            None => {
                let stream = self.writer.create_committed_stream(&self.table).await?;
                store::set_stream(&self.pool, name, &stream, self.clock.now()).await?;
                tracing::info!(table = name, %stream, "committed write stream created");
                // Another replica may have recorded its own first: read again.
                match store::state(&self.pool, name).await?.stream_name {
                    Some(recorded) => recorded,
                    None => return Ok(Round::Idle),
                }
            }
        };
        let batch = store::pending_or_claim(&self.pool, name, self.batch_rows).await?;
        let Some(first) = batch.first() else {
            return Ok(Round::Idle);
        };
        let from = first.offset;
        let count = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let contiguous = batch
            .iter()
            .enumerate()
            .all(|(index, row)| row.offset == from + i64::try_from(index).unwrap_or(i64::MAX));
        let state = store::state(&self.pool, name).await?;
        if from != state.next_offset || !contiguous {
            return self
                .stop(format!(
                    "claimed rows start at offset {from} (contiguous: {contiguous}) but the \
                     stream's next offset is {}",
                    state.next_offset
                ))
                .await;
        }
        let mut serialized = Vec::with_capacity(batch.len());
        for row in &batch {
            let object = row.data.as_object().cloned().unwrap_or_default();
            match rows::encode(&self.table, &object) {
                Ok(bytes) => serialized.push(bytes),
                Err(error) => return self.stop(error.to_string()).await,
            }
        }
        match self
            .writer
            .append(&stream, &self.table, from, serialized)
            .await
        {
            Ok(Appended::Written) => {}
            Ok(Appended::AlreadyExists) => {
                tracing::info!(
                    table = name,
                    offset = from,
                    count,
                    "batch already in BigQuery (a retry after a crash); marking it exported"
                );
            }
            Ok(Appended::OutOfRange(message)) => {
                return self
                    .stop(format!(
                        "OUT_OF_RANGE appending at offset {from} to {stream}: {message} (the \
                         stream ends before the rows recorded as exported: a bug)"
                    ))
                    .await;
            }
            Err(BigQueryError::Invalid(message)) => return self.stop(message).await,
            Err(BigQueryError::Grpc(status))
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                return self.replace_stream(&stream, from, count, &status).await;
            }
            Err(error) => return Err(error.into()),
        }
        let now = self.clock.now();
        if store::mark_exported(&self.pool, name, &stream, from, count, now).await? {
            metrics::rows_exported(name, u64::try_from(count).unwrap_or(0));
        }
        Ok(Round::Exported(u64::try_from(count).unwrap_or(0)))
    }

    /// The stream refuses appends (finalized) or is gone. Finalizing it
    /// answers how many rows it holds, which says whether the claimed batch
    /// `[from, from + count)` is there: then it is marked. Either way the
    /// table moves to a new stream, the unwritten batch keeping its order.
    /// A stream BigQuery no longer has leaves that unknowable: the table stops.
    async fn replace_stream(
        &self,
        stream: &str,
        from: i64,
        count: i64,
        status: &tonic::Status,
    ) -> Result<Round, ExportError> {
        let name = self.table.name;
        if self.writer.get_stream(stream).await?.is_none() {
            return self
                .stop(format!(
                    "write stream {stream} is gone ({}): whether the batch at offsets \
                     {from}..{} was written cannot be known; compare the table with \
                     export.rows before resetting export.streams",
                    status.message(),
                    from + count
                ))
                .await;
        }
        let rows = self.writer.finalize(stream).await?;
        let mut next_offset = from;
        if rows == from + count {
            let now = self.clock.now();
            if store::mark_exported(&self.pool, name, stream, from, count, now).await? {
                metrics::rows_exported(name, u64::try_from(count).unwrap_or(0));
            }
            next_offset = from + count;
        } else if rows != from {
            return self
                .stop(format!(
                    "write stream {stream} holds {rows} rows, neither {from} nor {} (a bug)",
                    from + count
                ))
                .await;
        }
        let new = self.writer.create_committed_stream(&self.table).await?;
        store::rotate(
            &self.pool,
            name,
            stream,
            next_offset,
            &new,
            self.clock.now(),
        )
        .await?;
        tracing::warn!(table = name, old = stream, %new, reason = %status.message(), "write stream replaced");
        Ok(Round::Exported(if next_offset > from {
            u64::try_from(count).unwrap_or(0)
        } else {
            0
        }))
    }

    async fn stop(&self, error: String) -> Result<Round, ExportError> {
        tracing::error!(table = self.table.name, %error, "export of the table stopped");
        metrics::table_stopped(self.table.name);
        store::record_error(&self.pool, self.table.name, &error, true, self.clock.now()).await?;
        Ok(Round::Stopped)
    }

    /// Rounds until `shutdown`: at once while rows wait, every `poll` when
    /// idle or stopped, backing off (up to 30 s) while rounds fail.
    pub async fn run(self, poll: Duration, shutdown: Shutdown) {
        let name = self.table.name;
        tracing::info!(table = name, "exporter started");
        let mut backoff = poll;
        let mut lag_recorded: Option<std::time::Instant> = None;
        loop {
            if lag_recorded.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
                lag_recorded = Some(std::time::Instant::now());
                match store::lag_seconds(&self.pool, name, self.clock.now()).await {
                    Ok(seconds) => metrics::export_lag(name, seconds.max(0.0)),
                    Err(error) => tracing::debug!(table = name, %error, "export lag not measured"),
                }
            }
            let pause = match self.round().await {
                Ok(Round::Exported(_)) => {
                    backoff = poll;
                    Duration::ZERO
                }
                Ok(Round::Idle | Round::Stopped) => {
                    backoff = poll;
                    poll
                }
                Err(error) => {
                    tracing::warn!(table = name, %error, "export round failed; retrying");
                    metrics::round_failed(name);
                    if let Err(db) = store::record_error(
                        &self.pool,
                        name,
                        &error.to_string(),
                        false,
                        self.clock.now(),
                    )
                    .await
                    {
                        tracing::warn!(table = name, error = %db, "the error could not be recorded");
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            if shutdown.is_triggered() {
                break;
            }
            if !pause.is_zero() {
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::info!(table = name, "exporter stopped");
    }
}
