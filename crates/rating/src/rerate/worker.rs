//! The re-rate worker: leases due jobs one at a time and rebuilds each in one
//! transaction. Several workers (replicas) can run: a job is leased by one,
//! and its row stays locked while it runs.

use std::time::Duration;

use sqlx::PgPool;
use tally_runtime::peer::Peer;
use tally_runtime::{SharedClock, Shutdown};

use super::RerateQueue;
use super::model::RerateJob;
use super::rebuild::{RebuildError, Rebuilt, rebuild};
use super::store;
use crate::error::RatingError;
use crate::usage::UsageRater;

/// How long a leased job is left alone before another worker may take it
/// (a worker that died while running it).
const LEASE_SECONDS: i64 = 600;
/// How often the worker looks for due jobs without being woken.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait before retrying a job that failed for a passing reason.
const MAX_RETRY_SECONDS: i64 = 300;

/// Runs re-rate jobs.
#[derive(Debug, Clone)]
pub struct RerateWorker {
    pool: PgPool,
    rater: UsageRater,
    ingest: Peer,
    queue: RerateQueue,
    clock: SharedClock,
}

/// What happened to one leased job.
#[derive(Debug)]
pub enum JobOutcome {
    /// Rebuilt; the jobs it served (itself and the same subscription's others).
    Succeeded(Vec<String>, Rebuilt),
    /// Will be retried.
    Retrying(String),
    /// Failed for good.
    Failed(String),
    /// Another worker holds it.
    Busy,
}

impl RerateWorker {
    /// A worker reading the log through `ingest`.
    pub fn new(
        pool: PgPool,
        rater: UsageRater,
        ingest: Peer,
        queue: RerateQueue,
        clock: SharedClock,
    ) -> Self {
        Self {
            pool,
            rater,
            ingest,
            queue,
            clock,
        }
    }

    /// Runs jobs until `shutdown`; woken at once by [`RerateQueue::wake_worker`].
    pub async fn run(&self, shutdown: Shutdown) {
        let wake = self.queue.wakeup();
        tracing::info!("re-rate worker started");
        loop {
            match self.run_next().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "the re-rate worker could not lease a job"),
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Leases and runs the next due job; `None` when none is due.
    pub async fn run_next(&self) -> Result<Option<JobOutcome>, RatingError> {
        let mut connection = self.pool.acquire().await?;
        let Some(job) = store::lease_next(&mut connection, LEASE_SECONDS).await? else {
            return Ok(None);
        };
        drop(connection);
        let attempt_error = match self.run_job(&job).await {
            Ok(outcome) => return Ok(Some(outcome)),
            Err(error) => error,
        };
        let mut connection = self.pool.acquire().await?;
        let outcome = match &attempt_error {
            RebuildError::Rating(
                RatingError::NotFound(_)
                | RatingError::InvalidArgument(_)
                | RatingError::Invalid(_)
                | RatingError::Corrupt(_),
            ) => {
                let message = attempt_error.to_string();
                store::record_error(
                    &mut connection,
                    &job.job_id,
                    &message,
                    0,
                    Some(self.clock.now()),
                )
                .await?;
                tracing::error!(job_id = %job.job_id, error = %message, "re-rate job failed");
                JobOutcome::Failed(message)
            }
            RebuildError::Ingest(_) | RebuildError::Rating(_) => {
                let message = attempt_error.to_string();
                let retry_after = retry_delay_seconds(job.attempts);
                store::record_error(&mut connection, &job.job_id, &message, retry_after, None)
                    .await?;
                tracing::warn!(job_id = %job.job_id, error = %message, retry_after, "re-rate job will be retried");
                JobOutcome::Retrying(message)
            }
        };
        Ok(Some(outcome))
    }

    async fn run_job(&self, job: &RerateJob) -> Result<JobOutcome, RebuildError> {
        let mut transaction = self.pool.begin().await?;
        let held = store::lock_with_siblings(&mut transaction, job).await?;
        let Some(changed_from) = held.iter().map(|job| job.from_at).min() else {
            return Ok(JobOutcome::Busy);
        };
        let rebuilt = rebuild(
            &mut transaction,
            &self.rater,
            &self.ingest,
            &job.subscription_id,
            changed_from,
        )
        .await?;
        let job_ids: Vec<String> = held.into_iter().map(|job| job.job_id).collect();
        store::succeed(
            &mut transaction,
            &job_ids,
            &rebuilt.periods,
            rebuilt.events_replayed,
            self.clock.now(),
        )
        .await?;
        transaction.commit().await?;
        tracing::info!(
            subscription_id = %job.subscription_id,
            changed_from = %changed_from.to_rfc3339(),
            jobs = ?job_ids,
            periods = rebuilt.periods.len(),
            events_replayed = rebuilt.events_replayed,
            no_longer_ratable = rebuilt.no_longer_ratable,
            "subscription re-rated"
        );
        Ok(JobOutcome::Succeeded(job_ids, rebuilt))
    }
}

/// Exponential backoff: 2, 4, 8 … seconds, at most [`MAX_RETRY_SECONDS`].
fn retry_delay_seconds(attempts: i32) -> i64 {
    let exponent = u32::try_from(attempts.clamp(1, 16)).unwrap_or(16);
    2_i64.pow(exponent).min(MAX_RETRY_SECONDS)
}
