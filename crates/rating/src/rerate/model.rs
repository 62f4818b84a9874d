//! A re-rate job as stored in `rating.rerate_jobs` (read and written by
//! [`super::store`], created by [`super::RerateQueue`]).

use chrono::{DateTime, Utc};

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
