//! Re-rate jobs: their states and the queue that creates them (the
//! `rating.rerate_jobs` table is read and written by [`super::store`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;
use tokio::sync::Notify;

use super::store;
use crate::error::RatingError;

/// A job's state (the `RerateJobState` numbers of rating.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for the worker (or for a retry after an error).
    Pending = 1,
    /// The worker has started it.
    Running = 2,
    /// Every affected period was recomputed.
    Succeeded = 3,
    /// Stopped for good; aggregates are unchanged.
    Failed = 4,
}

impl JobState {
    pub(super) fn from_number(number: i16) -> Result<Self, RatingError> {
        Ok(match number {
            1 => Self::Pending,
            2 => Self::Running,
            3 => Self::Succeeded,
            4 => Self::Failed,
            other => {
                return Err(RatingError::Corrupt(format!(
                    "rerate job state {other} is unknown"
                )));
            }
        })
    }
}

/// A stored job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RerateJob {
    /// `rrj_…`.
    pub job_id: String,
    /// `sub_…`.
    pub subscription_id: String,
    /// Periods ending after this instant are recomputed.
    pub from_at: DateTime<Utc>,
    /// Why (audit).
    pub reason: String,
    /// The state.
    pub state: JobState,
    /// The recomputed periods, `[start, end)`.
    pub periods: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Accepted events read back from ingest.
    pub events_replayed: i64,
    /// How many times a worker started it.
    pub attempts: i32,
    /// The last error (a pending job is retried; a failed one is not).
    pub error: String,
    /// When it was created (service clock).
    pub created_at: DateTime<Utc>,
    /// When it finished (service clock).
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a new job asks for.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    /// `sub_…`.
    pub subscription_id: &'a str,
    /// Periods ending after this instant are recomputed.
    pub from_at: DateTime<Utc>,
    /// Why.
    pub reason: &'a str,
    /// `RerateSubscription`'s idempotency key; `None` for the replica's jobs.
    pub idempotency_key: Option<&'a str>,
}

/// Creates jobs and wakes the worker.
#[derive(Debug, Clone)]
pub struct RerateQueue {
    clock: SharedClock,
    ids: SharedIdGenerator,
    wake: Arc<Notify>,
}

impl RerateQueue {
    /// A queue stamping jobs with `clock` and `ids`.
    pub fn new(clock: SharedClock, ids: SharedIdGenerator) -> Self {
        Self {
            clock,
            ids,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notified after a job is created (call [`RerateQueue::wake_worker`]
    /// after the creating transaction commits).
    pub(crate) fn wakeup(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Tells the worker a job is waiting.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// Creates a job inside the caller's transaction. With an idempotency key
    /// already used, returns the existing job if it asked for the same thing,
    /// and `AlreadyExists` naming the key otherwise.
    pub async fn enqueue(
        &self,
        connection: &mut PgConnection,
        job: &NewJob<'_>,
    ) -> Result<RerateJob, RatingError> {
        let job_id = self.ids.new_id("rrj");
        let inserted = store::insert_job(&mut *connection, &job_id, job, self.clock.now()).await?;
        if let Some(inserted) = inserted {
            return Ok(inserted);
        }
        let key = job.idempotency_key.unwrap_or_default();
        let existing = store::job_by_idempotency_key(&mut *connection, key).await?;
        if existing.subscription_id != job.subscription_id
            || existing.from_at != job.from_at
            || existing.reason != job.reason
        {
            return Err(RatingError::AlreadyExists(format!(
                "idempotency_key: {key:?} was already used for another RerateSubscription request \
                 ({} from {})",
                existing.subscription_id,
                existing.from_at.to_rfc3339()
            )));
        }
        Ok(existing)
    }
}
