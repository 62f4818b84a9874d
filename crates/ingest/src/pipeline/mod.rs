//! The one path every event takes, whatever its intake (gRPC, Pub/Sub,
//! replay): validate, lift the backfill-window rule where a backfill is open,
//! de-duplicate within the batch, then one transaction that claims the keys,
//! appends the new events, stores rejections and conflicts, and writes the
//! outboxes. The call returns once that transaction is committed: a result of
//! ACCEPTED means durable.
//!
//! `verdicts` judges each item before the database (validation, open
//! backfills, repeats within the batch); `commit` is the batch transaction;
//! `rejections` builds what a rejection keeps and publishes.

mod commit;
mod rejections;
mod verdicts;

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tally_proto::common::FieldViolation;
use tally_proto::events::{Intake, UsageEvent as WireEvent};
use tally_proto::ingest::{EventOutcome, EventResult, OutcomeCounts};
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;

use crate::log::Partitions;
use crate::metrics::IngestMetrics;
use crate::validation::Validator;

use self::verdicts::{Verdict, mark_repeats};

/// One item of a batch as received.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A decoded event.
    Event(WireEvent),
    /// A decoded event that already broke intake rules while decoding (for
    /// example a JSON property that is an object); it is rejected with these
    /// and any other violated rules.
    Flawed {
        /// The event as far as it decoded.
        event: WireEvent,
        /// The decoding violations.
        violations: Vec<FieldViolation>,
    },
    /// A bus message that is not a `UsageEvent` (kept as a rejection).
    Undecodable {
        /// The bytes as received.
        payload: Vec<u8>,
        /// Its `content-type`.
        content_type: String,
        /// Why decoding failed.
        reason: String,
    },
}

/// Whether rejections are stored (normal intake) or only reported (replay of
/// rejections already stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionStorage {
    /// Store each rejection and publish it on `usage-rejected`.
    Store,
    /// Report only.
    ReportOnly,
}

/// The results of one batch, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// One per input item.
    pub results: Vec<EventResult>,
    /// Totals.
    pub counts: OutcomeCounts,
}

/// Why a batch could not be ingested (nothing of it was committed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event log could not be written; the caller may retry the batch.
    #[error("the event log is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// More items than one batch may hold.
    #[error("{0} events in one batch, at most 100000")]
    TooLarge(usize),
}

/// Validates and commits batches of usage events.
#[derive(Debug)]
pub struct Ingestor {
    pool: PgPool,
    clock: SharedClock,
    ids: SharedIdGenerator,
    validator: Validator,
    partitions: Partitions,
    metrics: Arc<IngestMetrics>,
}

/// Most attempts of a batch transaction that hit a deadlock or serialization failure.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

/// Sequence numbers are handed out in blocks, one per batch (see the migration).
pub const SEQUENCE_BLOCK: i64 = 100_000;

impl Ingestor {
    /// An ingestor writing to `pool`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        ids: SharedIdGenerator,
        validator: Validator,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        Self {
            pool,
            clock,
            ids,
            validator,
            partitions: Partitions::default(),
            metrics,
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Ingests `items` (at most [`SEQUENCE_BLOCK`]); returns one result per item
    /// once the batch is durable.
    pub async fn ingest(
        &self,
        items: Vec<Incoming>,
        intake: Intake,
        storage: RejectionStorage,
    ) -> Result<BatchOutcome, IngestError> {
        let started = Instant::now();
        let now = self.clock.now();
        if items.len() as i64 > SEQUENCE_BLOCK {
            return Err(IngestError::TooLarge(items.len()));
        }
        let mut verdicts: Vec<Verdict> = items
            .into_iter()
            .map(|item| self.judge(item, now))
            .collect();
        self.apply_backfills(&mut verdicts, now).await?;
        mark_repeats(&mut verdicts);
        self.partitions
            .ensure(
                &self.pool,
                verdicts.iter().filter_map(|verdict| match verdict {
                    Verdict::Valid(event) => Some(event.timestamp),
                    _ => None,
                }),
            )
            .await?;

        let mut attempt = 1;
        let outcome = loop {
            match self.commit(&verdicts, intake, storage, now).await {
                Err(sqlx::Error::Database(error))
                    if attempt < MAX_TRANSACTION_ATTEMPTS
                        && matches!(error.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    tracing::debug!(attempt, %error, "batch transaction conflicted; retrying");
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let rules: Vec<&str> = outcome
            .results
            .iter()
            .filter(|result| result.outcome == EventOutcome::Rejected as i32)
            .flat_map(|result| result.violations.iter().map(|v| v.rule.as_str()))
            .collect();
        let counts = &outcome.counts;
        self.metrics.record_batch(
            intake,
            [
                u64::from(counts.accepted),
                u64::from(counts.duplicate),
                u64::from(counts.conflict),
                u64::from(counts.rejected),
            ],
            &rules,
            started.elapsed(),
        );
        Ok(outcome)
    }
}
