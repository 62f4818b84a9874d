//! The subscription replica: consumes `subscription-events` (subscription
//! `rating-subscription-events`) so rating knows which plan version covers
//! which customer at which instant.
//!
//! Every message carries the full snapshot with its `version`; a snapshot is
//! applied only when its version is higher than the stored one (one upsert
//! with a `WHERE version <` guard), so redelivery and out-of-order delivery
//! are harmless without an inbox. Applying rewrites the phases and, in the
//! same transaction, re-runs the customer's unrated events through the one
//! rating path ([`UsageRater::rate`]): a backdated subscription rates usage
//! that arrived before it.
//!
//! When the new snapshot rates already-rated usage differently (a backdated
//! plan change, start, cancellation or pause: [`earliest_change`] against the
//! stored snapshot), the same transaction queues a re-rate job from that
//! instant ([`crate::rerate`]); the worker rebuilds the affected periods from
//! ingest's event log.

mod store;

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_proto::events::SubscriptionEvent;
use tally_runtime::SharedClock;

use crate::error::RatingError;
use crate::rerate::changes::{Shape, ShapePhase, earliest_change};
use crate::rerate::{NewJob, RerateQueue};
use crate::usage::store::PauseWindow;
use crate::usage::{RateSummary, UsageRater, decode_accepted, store as usage_store};
use crate::wire::instant;

/// Unrated events re-rated per statement when a snapshot arrives.
const RETRY_PAGE: i64 = 1000;

/// The protobuf type name invoicing puts in `tally-type`.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";

/// What applying a snapshot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The snapshot is now the stored one; unrated usage was retried.
    Applied {
        /// What the retry of the customer's unrated events did.
        retried: RateSummary,
        /// The re-rate job queued because the snapshot changed how rated
        /// usage is rated (`rrj_…`), if any.
        rerate_job_id: Option<String>,
    },
    /// A snapshot of the same or a higher version is already stored.
    Stale {
        /// The stored version.
        stored_version: i64,
    },
}

/// A validated snapshot.
#[derive(Clone, Debug)]
struct Snapshot {
    subscription_id: String,
    customer_id: String,
    version: i64,
    billing_anchor_at: DateTime<Utc>,
    phases: Vec<Phase>,
    /// The pause windows: from, and until (`None`: indefinite).
    pauses: Vec<PauseWindow>,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Phase {
    plan_version_id: String,
    start_at: DateTime<Utc>,
    end_at: Option<DateTime<Utc>>,
}

impl Phase {
    /// The phase cut at the subscription's end, `None` if it starts after it.
    fn ended_by(self, ends_at: Option<DateTime<Utc>>) -> Option<Phase> {
        let Some(ends_at) = ends_at else {
            return Some(self);
        };
        if self.start_at >= ends_at {
            return None;
        }
        Some(Phase {
            end_at: Some(self.end_at.map_or(ends_at, |end| end.min(ends_at))),
            ..self
        })
    }
}

fn invalid(message: String) -> RatingError {
    RatingError::InvalidArgument(message)
}

impl Snapshot {
    fn shape(&self) -> Shape {
        Shape {
            billing_anchor_at: self.billing_anchor_at,
            phases: self
                .phases
                .iter()
                .map(|phase| ShapePhase {
                    plan_version_id: phase.plan_version_id.clone(),
                    start_at: phase.start_at,
                    end_at: phase.end_at,
                })
                .collect(),
            pauses: self.pauses.clone(),
        }
    }

    fn from_event(event: &SubscriptionEvent) -> Result<Snapshot, RatingError> {
        let subscription = event
            .subscription
            .as_ref()
            .ok_or_else(|| invalid("subscription event without a subscription snapshot".into()))?;
        let subscription_id = if event.subscription_id.is_empty() {
            subscription.id.clone()
        } else {
            event.subscription_id.clone()
        };
        if !subscription_id.starts_with("sub_") || subscription.id != subscription_id {
            return Err(invalid(format!(
                "subscription_id {subscription_id:?} does not match the snapshot's id {:?}",
                subscription.id
            )));
        }
        if subscription.customer_id.is_empty() {
            return Err(invalid(format!(
                "{subscription_id}: customer_id is required"
            )));
        }
        let version = if event.version == 0 {
            subscription.version
        } else {
            event.version
        };
        if version == 0 || (subscription.version != 0 && subscription.version != version) {
            return Err(invalid(format!(
                "{subscription_id}: version {} does not match the snapshot's {}",
                event.version, subscription.version
            )));
        }
        let version = i64::try_from(version)
            .map_err(|_| invalid(format!("{subscription_id}: version out of range")))?;
        let billing_anchor_at = instant(subscription.billing_anchor_at.as_ref())
            .or_else(|| instant(subscription.start_at.as_ref()))
            .ok_or_else(|| invalid(format!("{subscription_id}: billing_anchor_at is required")))?;
        let phases = subscription
            .phases
            .iter()
            .enumerate()
            .map(|(index, phase)| {
                let start_at = instant(phase.start_at.as_ref()).ok_or_else(|| {
                    invalid(format!("{subscription_id}: phases[{index}].start_at is required"))
                })?;
                let end_at = instant(phase.end_at.as_ref());
                if phase.plan_version_id.is_empty() || end_at.is_some_and(|end| end <= start_at) {
                    return Err(invalid(format!(
                        "{subscription_id}: phases[{index}] needs a plan version and an end after its start"
                    )));
                }
                Ok(Phase {
                    plan_version_id: phase.plan_version_id.clone(),
                    start_at,
                    end_at,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The phases should end with the subscription; clip them anyway, so a
        // snapshot that ends (or is scheduled to end) the subscription without
        // closing its last phase never rates usage after the end.
        let ends_at = instant(subscription.ended_at.as_ref())
            .or_else(|| instant(subscription.cancel_at.as_ref()));
        let phases = phases
            .into_iter()
            .filter_map(|phase| phase.ended_by(ends_at))
            .collect();
        // Every window (`pauses`); a producer that only sends the latest
        // (`pause`) is read as having that one.
        let windows: Vec<&tally_proto::invoicing::PauseWindow> = if subscription.pauses.is_empty() {
            subscription.pause.iter().collect()
        } else {
            subscription.pauses.iter().collect()
        };
        let mut pauses = Vec::with_capacity(windows.len());
        for (index, window) in windows.into_iter().enumerate() {
            let Some(pause_at) = instant(window.pause_at.as_ref()) else {
                continue;
            };
            let resume_at = instant(window.resume_at.as_ref());
            if resume_at.is_some_and(|resume_at| resume_at <= pause_at) {
                return Err(invalid(format!(
                    "{subscription_id}: pauses[{index}].resume_at must be after its pause_at"
                )));
            }
            pauses.push((pause_at, resume_at));
        }
        Ok(Snapshot {
            subscription_id,
            customer_id: subscription.customer_id.clone(),
            version,
            billing_anchor_at,
            phases,
            pauses,
            bytes: subscription.encode_to_vec(),
        })
    }
}

/// Applies subscription snapshots.
#[derive(Debug, Clone)]
pub struct SubscriptionReplica {
    pool: PgPool,
    rater: UsageRater,
    clock: SharedClock,
    rerates: RerateQueue,
}

impl SubscriptionReplica {
    /// A replica writing to `pool`, rating with `rater` and queueing re-rates on `rerates`.
    pub fn new(pool: PgPool, rater: UsageRater, clock: SharedClock, rerates: RerateQueue) -> Self {
        Self {
            pool,
            rater,
            clock,
            rerates,
        }
    }

    /// Applies `event` if it is newer than the stored snapshot.
    pub async fn apply(&self, event: &SubscriptionEvent) -> Result<Applied, RatingError> {
        let snapshot = Snapshot::from_event(event)?;
        let mut transaction = self.pool.begin().await?;
        let customer = BTreeSet::from([snapshot.customer_id.as_str()]);
        usage_store::lock_customers(&mut transaction, &customer).await?;
        let previous = stored_shape(&mut transaction, &snapshot.subscription_id).await?;
        let applied = self.store(&mut transaction, &snapshot).await?;
        if let Some(stored_version) = applied {
            transaction.commit().await?;
            return Ok(Applied::Stale { stored_version });
        }
        let retried = self
            .retry_unrated(&mut transaction, &snapshot.customer_id)
            .await?;
        let rerate_job_id = match previous {
            Some(previous) => {
                self.queue_rerate(&mut transaction, &previous, &snapshot)
                    .await?
            }
            None => None,
        };
        transaction.commit().await?;
        self.rater.record(&retried);
        if rerate_job_id.is_some() {
            self.rerates.wake_worker();
        }
        tracing::info!(
            subscription_id = %snapshot.subscription_id,
            version = snapshot.version,
            ?retried,
            ?rerate_job_id,
            "subscription snapshot applied"
        );
        Ok(Applied::Applied {
            retried,
            rerate_job_id,
        })
    }

    /// Queues a re-rate from the first instant `snapshot` rates differently
    /// than `previous`, when the subscription has aggregates of periods
    /// ending after it.
    async fn queue_rerate(
        &self,
        connection: &mut PgConnection,
        previous: &Shape,
        snapshot: &Snapshot,
    ) -> Result<Option<String>, RatingError> {
        let Some(changed_from) = earliest_change(previous, &snapshot.shape()) else {
            return Ok(None);
        };
        let affected =
            store::rated_usage_after(&mut *connection, &snapshot.subscription_id, changed_from)
                .await?;
        if !affected {
            return Ok(None);
        }
        let reason = format!(
            "subscription snapshot version {} changes rating from {}",
            snapshot.version,
            changed_from.to_rfc3339()
        );
        let job = self
            .rerates
            .enqueue(
                connection,
                &NewJob {
                    subscription_id: &snapshot.subscription_id,
                    from_at: changed_from,
                    reason: &reason,
                    idempotency_key: None,
                },
            )
            .await?;
        Ok(Some(job.job_id))
    }

    /// Stores the snapshot and its phases; `Some(stored version)` when a
    /// snapshot at least as new was there (nothing written).
    async fn store(
        &self,
        connection: &mut PgConnection,
        snapshot: &Snapshot,
    ) -> Result<Option<i64>, RatingError> {
        let written =
            store::upsert_snapshot_if_newer(&mut *connection, snapshot, self.clock.now()).await?;
        if !written {
            let stored = store::stored_version(&mut *connection, &snapshot.subscription_id).await?;
            return Ok(Some(stored));
        }
        store::replace_phases(&mut *connection, snapshot).await?;
        Ok(None)
    }

    /// Re-rates the customer's unrated events, a page at a time (a customer
    /// may have accumulated many before its subscription arrived). The
    /// customer's advisory lock, held by the caller, keeps new unrated rows
    /// of this customer from appearing meanwhile.
    async fn retry_unrated(
        &self,
        connection: &mut PgConnection,
        customer: &str,
    ) -> Result<RateSummary, RatingError> {
        let mut total = RateSummary::default();
        let mut after = None;
        loop {
            let page =
                usage_store::unrated_page(&mut *connection, customer, after.as_ref(), RETRY_PAGE)
                    .await?;
            let Some((seq, event_id, _)) = page.last() else {
                return Ok(total);
            };
            after = Some((*seq, event_id.clone()));
            let events: Vec<_> = page
                .iter()
                .filter_map(|(_, _, bytes)| match decode_accepted(bytes) {
                    Ok(event) => Some(event),
                    Err(error) => {
                        tracing::error!(%error, customer, "a stored unrated event cannot be decoded");
                        None
                    }
                })
                .collect();
            let summary = self.rater.rate(&mut *connection, &events).await?;
            total.rated += summary.rated;
            total.duplicates += summary.duplicates;
            total.unrated += summary.unrated;
        }
    }
}

/// The stored snapshot's shape, if the subscription is known.
async fn stored_shape(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<Option<Shape>, RatingError> {
    let Some(pauses) = store::stored_pauses(&mut *connection, subscription_id).await? else {
        return Ok(None);
    };
    let phases = store::stored_phases(&mut *connection, subscription_id).await?;
    let Some(billing_anchor_at) = phases.first().map(|phase| phase.billing_anchor_at) else {
        // No phase: nothing was ever rated under it.
        return Ok(None);
    };
    Ok(Some(Shape {
        billing_anchor_at,
        phases: phases
            .into_iter()
            .map(|phase| ShapePhase {
                plan_version_id: phase.plan_version_id,
                start_at: phase.start_at,
                end_at: phase.end_at,
            })
            .collect(),
        pauses,
    }))
}

#[async_trait]
impl MessageHandler for SubscriptionReplica {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        if message.message_type != SUBSCRIPTION_EVENT_TYPE || message.type_version != 1 {
            return Err(HandlerError::Poison(format!(
                "unexpected message {:?} version {} on subscription-events (expected {SUBSCRIPTION_EVENT_TYPE} version 1)",
                message.message_type, message.type_version
            )));
        }
        let event = SubscriptionEvent::decode(message.payload.as_slice()).map_err(|error| {
            HandlerError::Poison(format!("undecodable SubscriptionEvent: {error}"))
        })?;
        match self.apply(&event).await {
            Ok(_) => Ok(()),
            Err(RatingError::InvalidArgument(reason)) => Err(HandlerError::Poison(reason)),
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}
