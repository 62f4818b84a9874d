//! `RerateSubscription` and `GetRerateJob`.

use sqlx::PgPool;
use tally_domain::ids::SubscriptionId;
use tally_proto::rating::{
    GetRerateJobRequest, GetRerateJobResponse, RerateJob as RerateJobMessage,
    RerateSubscriptionRequest, RerateSubscriptionResponse,
};

use super::model::RerateJob;
use super::store;
use super::{NewJob, RerateQueue};
use crate::error::RatingError;
use crate::wire::{instant, time_range, timestamp};

/// Longest idempotency key (common.proto).
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// Queues a re-rate of the request's subscription from its `from`.
pub async fn rerate_subscription(
    pool: &PgPool,
    queue: &RerateQueue,
    request: RerateSubscriptionRequest,
) -> Result<RerateSubscriptionResponse, RatingError> {
    let invalid = |message: &str| Err(RatingError::InvalidArgument(message.to_owned()));
    if request.idempotency_key.is_empty() {
        return invalid("idempotency_key: is required");
    }
    if request.idempotency_key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return invalid("idempotency_key: is longer than 255 characters");
    }
    let subscription_id: SubscriptionId =
        tally_proto::convert::id(&request.subscription_id, "subscription_id")?;
    let Some(from_at) = instant(request.from.as_ref()) else {
        return invalid("from: is required (periods intersecting [from, now) are recomputed)");
    };
    let mut transaction = pool.begin().await?;
    if !store::subscription_exists(&mut transaction, subscription_id.as_str()).await? {
        return Err(RatingError::NotFound(format!(
            "subscription_id: rating has no subscription {}",
            request.subscription_id
        )));
    }
    let job = queue
        .enqueue(
            &mut transaction,
            &NewJob {
                subscription_id: &request.subscription_id,
                from_at,
                reason: &request.reason,
                idempotency_key: Some(&request.idempotency_key),
            },
        )
        .await?;
    transaction.commit().await?;
    queue.wake_worker();
    Ok(RerateSubscriptionResponse {
        job: Some(to_message(job)),
    })
}

/// The job the request names.
pub async fn get_rerate_job(
    pool: &PgPool,
    request: GetRerateJobRequest,
) -> Result<GetRerateJobResponse, RatingError> {
    if request.job_id.is_empty() {
        return Err(RatingError::InvalidArgument("job_id: is required".into()));
    }
    let mut connection = pool.acquire().await?;
    let job = store::get(&mut connection, &request.job_id)
        .await?
        .ok_or_else(|| {
            RatingError::NotFound(format!("job_id: no re-rate job {}", request.job_id))
        })?;
    Ok(GetRerateJobResponse {
        job: Some(to_message(job)),
    })
}

fn to_message(job: RerateJob) -> RerateJobMessage {
    RerateJobMessage {
        id: job.job_id,
        subscription_id: job.subscription_id,
        from: Some(timestamp(job.from_at)),
        reason: job.reason,
        state: job.state as i32,
        periods: job
            .periods
            .iter()
            .map(|(start, end)| time_range(*start, *end))
            .collect(),
        events_replayed: u64::try_from(job.events_replayed).unwrap_or_default(),
        error: job.error,
        created_at: Some(timestamp(job.created_at)),
        finished_at: job.finished_at.map(timestamp),
    }
}
