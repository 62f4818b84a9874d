//! The queue that creates re-rate jobs (their model is [`super::model`]; the
//! `rating.rerate_jobs` table is read and written by [`super::store`]).

use std::sync::Arc;

use sqlx::PgConnection;
use tally_domain::ids::RerateJobId;
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;
use tokio::sync::Notify;

use super::model::{NewJob, RerateJob};
use super::store;
use crate::error::RatingError;

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
        let job_id = self.ids.mint::<RerateJobId>();
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
