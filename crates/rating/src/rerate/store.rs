//! SQL of re-rating: the `rating.rerate_jobs` table (creating, leasing,
//! locking and finishing jobs) and the subscription a job names.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_domain::ids::RerateJobId;

use super::model::{JobState, NewJob, RerateJob};
use crate::error::RatingError;

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
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

/// Stores a new pending job `job_id` created at `now`; `None` when its
/// idempotency key has a job already.
pub async fn insert_job(
    connection: &mut PgConnection,
    job_id: &RerateJobId,
    job: &NewJob<'_>,
    now: DateTime<Utc>,
) -> Result<Option<RerateJob>, RatingError> {
    let inserted: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO rating.rerate_jobs \
           (job_id, subscription_id, from_at, reason, idempotency_key, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
    )))
    .bind(job_id.as_str())
    .bind(job.subscription_id)
    .bind(job.from_at)
    .bind(job.reason)
    .bind(job.idempotency_key)
    .bind(now)
    .fetch_optional(connection)
    .await?;
    inserted.map(RerateJob::try_from).transpose()
}

/// The job created under idempotency key `key` (which must exist).
pub async fn job_by_idempotency_key(
    connection: &mut PgConnection,
    key: &str,
) -> Result<RerateJob, RatingError> {
    let existing: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM rating.rerate_jobs WHERE idempotency_key = $1"
    )))
    .bind(key)
    .fetch_one(connection)
    .await?;
    existing.try_into()
}

/// Whether rating has subscription `subscription_id`.
pub async fn subscription_exists(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<bool, RatingError> {
    let known: Option<(String,)> = sqlx::query_as(
        "SELECT subscription_id FROM rating.subscriptions WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .fetch_optional(connection)
    .await?;
    Ok(known.is_some())
}

/// The customer of subscription `subscription_id`, if rating has it.
pub async fn subscription_customer(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let customer: Option<(String,)> =
        sqlx::query_as("SELECT customer_id FROM rating.subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_optional(connection)
            .await?;
    Ok(customer.map(|(customer,)| customer))
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
