//! One re-rate, in one transaction (so a failure leaves the aggregates as
//! they were, and readers never see a half-rebuilt period):
//!
//! 1. lock the customer (the usage consumer and the replica take the same
//!    lock), so no event of theirs is rated meanwhile;
//! 2. delete the subscription's aggregates of every period ending after the
//!    job's instant;
//! 3. read the customer's accepted events back from ingest, from the start of
//!    the earliest deleted period, and re-classify those already rated
//!    against the current phases, keeping this subscription's contributions
//!    to the deleted periods ([`UsageRater::reabsorb`]);
//! 4. write the fresh aggregates.
//!
//! Ingest commits an event before it is published, so every event rating has
//! rated is in the log when step 3 reads it. An event published but not yet
//! delivered is not rated yet, is skipped here, and is rated under the
//! current phases when it arrives: nothing is counted twice or lost.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_proto::ingest::ReadEventsRequest;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_runtime::peer::Peer;

use crate::error::RatingError;
use crate::usage::store::{self, lock_customers};
use crate::usage::{AcceptedEvent, Reabsorbed, UsageRater, accepted_event};
use crate::wire::time_range;

/// What a rebuild did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// The periods recomputed (deleted or written), `[start, end)`.
    pub periods: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Events read back from the log.
    pub events_replayed: i64,
    /// Rated events nothing covers any more (kept as unrated now).
    pub no_longer_ratable: usize,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Ingest could not be read (retried later; a refused key is named as
    /// configuration, which the retry only heals once the key is fixed).
    #[error("{}", describe_ingest_failure(.0))]
    Ingest(#[from] tonic::Status),
    /// Rating failed.
    #[error(transparent)]
    Rating(#[from] RatingError),
}

fn describe_ingest_failure(status: &tonic::Status) -> String {
    tally_runtime::peer::refused_key("ingest", "reading the event log", status)
        .unwrap_or_else(|| format!("reading ingest's event log: {status}"))
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        RebuildError::Rating(error.into())
    }
}

/// Recomputes `subscription_id`'s periods ending after `changed_from` inside
/// `transaction` (see the module documentation).
pub async fn rebuild(
    transaction: &mut PgConnection,
    rater: &UsageRater,
    ingest: &Peer,
    subscription_id: &str,
    changed_from: DateTime<Utc>,
) -> Result<Rebuilt, RebuildError> {
    let customer = super::store::subscription_customer(&mut *transaction, subscription_id).await?;
    let Some(customer) = customer else {
        return Err(RatingError::NotFound(format!(
            "subscription_id: rating has no subscription {subscription_id}"
        ))
        .into());
    };
    let customers = BTreeSet::from([customer.as_str()]);
    lock_customers(&mut *transaction, &customers).await?;
    let deleted =
        store::delete_periods_after(&mut *transaction, subscription_id, changed_from).await?;
    let read_from = deleted
        .iter()
        .map(|(start, _)| *start)
        .chain([changed_from])
        .min()
        .unwrap_or(changed_from);
    let coverage = store::coverage(&mut *transaction, &customers).await?;

    let mut client = IngestServiceClient::with_interceptor(ingest.channel(), ingest.interceptor())
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client
        .read_events(ReadEventsRequest {
            customer_id: customer.clone(),
            time_range: Some(time_range(read_from, end_of_time())),
            event_type: String::new(),
            resume_token: String::new(),
            max_sequence_number: 0,
        })
        .await?
        .into_inner();
    let mut reabsorbed = Reabsorbed::default();
    let mut events_replayed = 0_i64;
    while let Some(chunk) = stream.message().await? {
        events_replayed += i64::try_from(chunk.events.len()).unwrap_or(i64::MAX);
        let events: Vec<AcceptedEvent> = chunk
            .events
            .into_iter()
            .filter_map(|accepted| {
                // Kept as the stored bytes if the event becomes unrated.
                let bytes = accepted.encode_to_vec();
                match accepted_event(accepted, bytes) {
                Ok(event) => Some(event),
                    Err(error) => {
                        tracing::error!(%error, %customer, "ingest returned an event rating cannot read");
                        None
                    }
                }
            })
            .collect();
        rater
            .reabsorb(
                &mut *transaction,
                &coverage,
                subscription_id,
                changed_from,
                &events,
                &mut reabsorbed,
            )
            .await?;
    }
    rater
        .write_reabsorbed(&mut *transaction, &reabsorbed)
        .await?;
    let mut periods: BTreeSet<_> = deleted.into_iter().collect();
    periods.extend(reabsorbed.periods());
    Ok(Rebuilt {
        periods: periods.into_iter().collect(),
        events_replayed,
        no_longer_ratable: reabsorbed.no_longer_ratable,
    })
}

/// The open end of the range read back (protobuf timestamps end in 9999).
fn end_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
