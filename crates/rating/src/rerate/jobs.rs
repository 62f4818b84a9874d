//! The `rating.rerate_jobs` table: creating, reading and finishing jobs.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;
use tokio::sync::Notify;

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
    fn from_number(number: i16) -> Result<Self, RatingError> {
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

#[derive(sqlx::FromRow)]
struct JobRow {
    job_id: String,
    subscription_id: String,
    from_at: DateTime<Utc>,
    reason: String,
    state: i16,
    periods: Json<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
    events_replayed: i64,
    attempts: i32,
    error: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str = "job_id, subscription_id, from_at, reason, state, periods, \
                           events_replayed, attempts, error, created_at, finished_at";

impl TryFrom<JobRow> for RerateJob {
    type Error = RatingError;

    fn try_from(row: JobRow) -> Result<Self, RatingError> {
        Ok(RerateJob {
            job_id: row.job_id,
            subscription_id: row.subscription_id,
            from_at: row.from_at,
            reason: row.reason,
            state: JobState::from_number(row.state)?,
            periods: row.periods.0,
            events_replayed: row.events_replayed,
            attempts: row.attempts,
            error: row.error,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
    }
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
        let inserted: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rating.rerate_jobs \
               (job_id, subscription_id, from_at, reason, idempotency_key, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
        )))
        .bind(&job_id)
        .bind(job.subscription_id)
        .bind(job.from_at)
        .bind(job.reason)
        .bind(job.idempotency_key)
        .bind(self.clock.now())
        .fetch_optional(&mut *connection)
        .await?;
        if let Some(row) = inserted {
            return row.try_into();
        }
        let key = job.idempotency_key.unwrap_or_default();
        let existing: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM rating.rerate_jobs WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_one(&mut *connection)
        .await?;
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
        existing.try_into()
    }
}

/// The job `job_id`, if it exists.
pub async fn get(
    connection: &mut PgConnection,
    job_id: &str,
) -> Result<Option<RerateJob>, RatingError> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM rating.rerate_jobs WHERE job_id = $1"
    )))
    .bind(job_id)
    .fetch_optional(connection)
    .await?;
    row.map(RerateJob::try_from).transpose()
}

/// Leases the oldest unfinished job that is due: marks it running, counts
/// the attempt and pushes its `retry_at` out by `lease_seconds`, committed at
/// once (so `GetRerateJob` shows it running, and a worker that dies holding
/// it only delays it by the lease).
pub async fn lease_next(
    connection: &mut PgConnection,
    lease_seconds: i64,
) -> Result<Option<RerateJob>, RatingError> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE rating.rerate_jobs SET state = 2, attempts = attempts + 1, \
           retry_at = now() + $1::bigint * interval '1 second' \
         WHERE job_id = (SELECT job_id FROM rating.rerate_jobs \
           WHERE state IN (1, 2) AND retry_at <= now() \
           ORDER BY created_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(lease_seconds)
    .fetch_optional(connection)
    .await?;
    row.map(RerateJob::try_from).transpose()
}

/// Locks `job` and every other unfinished job of its subscription for the
/// caller's transaction (one rebuild from the earliest instant serves them
/// all); empty when another worker holds `job`.
pub async fn lock_with_siblings(
    connection: &mut PgConnection,
    job: &RerateJob,
) -> Result<Vec<RerateJob>, RatingError> {
    let held: Option<(String,)> = sqlx::query_as(
        "SELECT job_id FROM rating.rerate_jobs WHERE job_id = $1 AND state IN (1, 2) \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(&job.job_id)
    .fetch_optional(&mut *connection)
    .await?;
    if held.is_none() {
        return Ok(Vec::new());
    }
    let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM rating.rerate_jobs \
         WHERE subscription_id = $1 AND state IN (1, 2) \
         ORDER BY job_id FOR UPDATE SKIP LOCKED"
    )))
    .bind(&job.subscription_id)
    .fetch_all(connection)
    .await?;
    rows.into_iter().map(RerateJob::try_from).collect()
}

/// Marks `job_ids` succeeded with what the rebuild did.
pub async fn succeed(
    connection: &mut PgConnection,
    job_ids: &[String],
    periods: &[(DateTime<Utc>, DateTime<Utc>)],
    events_replayed: i64,
    finished_at: DateTime<Utc>,
) -> Result<(), RatingError> {
    sqlx::query(
        "UPDATE rating.rerate_jobs SET state = 3, periods = $2, events_replayed = $3, \
           error = '', finished_at = $4 WHERE job_id = ANY($1)",
    )
    .bind(job_ids)
    .bind(Json(periods))
    .bind(events_replayed)
    .bind(finished_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Records an error: the job is retried after `retry_after_seconds` unless
/// `finished_at` is given (failed for good).
pub async fn record_error(
    connection: &mut PgConnection,
    job_id: &str,
    error: &str,
    retry_after_seconds: i64,
    finished_at: Option<DateTime<Utc>>,
) -> Result<(), RatingError> {
    sqlx::query(
        "UPDATE rating.rerate_jobs SET error = $2, \
           state = CASE WHEN $4::timestamptz IS NULL THEN 1 ELSE 4 END, finished_at = $4, \
           retry_at = now() + $3::bigint * interval '1 second' \
         WHERE job_id = $1 AND state IN (1, 2)",
    )
    .bind(job_id)
    .bind(error)
    .bind(retry_after_seconds)
    .bind(finished_at)
    .execute(connection)
    .await?;
    Ok(())
}
