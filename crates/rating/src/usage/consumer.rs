//! The `rating-usage-accepted` consumer: the batching pattern of ingest's
//! Pub/Sub intake (`tally_bus::consumer::next_batch`) applied to `usage-accepted`.
//!
//! Deliveries are gathered (up to `batch_messages`, or what arrives within a
//! few milliseconds), rated in **one transaction**, and acked only after the
//! commit. Deliveries are split into `batches_in_flight` **lanes** by their
//! ordering key (the customer), each gathering and rating its own batches:
//! lanes never share a customer, so they never wait on each other's
//! per-customer advisory locks, and one lane's commit overlaps the others'
//! work. (Absorbing is commutative, so the order in which lanes commit never
//! changes a total.) A message that is not a `UsageAccepted` of schema version 1, or
//! cannot be decoded, is poison and is dead-lettered at once. When the batch
//! transaction fails, each message is retried on its own, so one unratable
//! message cannot hold back the others; after `max_delivery_attempts` it is
//! dead-lettered. Redelivery is harmless: `rating.rated_events` de-duplicates.

use std::time::Duration;

use sqlx::PgPool;
use tally_bus::consumer::{Verdict, dead_letter};
use tally_bus::{BusError, Delivery, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;

use super::{AcceptedEvent, RateSummary, UsageRater, decode_accepted};
use crate::error::RatingError;
use crate::thresholds::ThresholdEvaluator;

/// The protobuf type name ingest's relay puts in `tally-type`.
pub const USAGE_ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

/// How long to wait for more messages before rating a partial batch.
const GATHER_WINDOW: Duration = Duration::from_millis(5);

/// Consumes `usage-accepted`.
#[derive(Debug, Clone)]
pub struct UsageConsumer {
    bus: SharedBus,
    subscription: SubscriptionConfig,
    pool: PgPool,
    rater: UsageRater,
    thresholds: ThresholdEvaluator,
    batch_messages: usize,
    batches_in_flight: usize,
}

impl UsageConsumer {
    /// A consumer of `subscription` rating batches of at most `batch_messages`.
    pub fn new(
        bus: SharedBus,
        subscription: SubscriptionConfig,
        pool: PgPool,
        rater: UsageRater,
        thresholds: ThresholdEvaluator,
        batch_messages: usize,
        batches_in_flight: usize,
    ) -> Self {
        Self {
            bus,
            subscription,
            pool,
            rater,
            thresholds,
            batch_messages: batch_messages.max(1),
            batches_in_flight: batches_in_flight.max(1),
        }
    }

    /// Consumes until `shutdown`, finishing the batch in hand first.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        let mut stream = self.bus.subscribe(&self.subscription.name).await?;
        tracing::info!(subscription = %self.subscription.name, "usage consumer started");
        let mut lanes = Vec::with_capacity(self.batches_in_flight);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.batches_in_flight {
            let (sender, receiver) = tokio::sync::mpsc::channel(self.batch_messages);
            lanes.push(sender);
            let consumer = self.clone();
            workers.spawn(async move { consumer.lane(receiver).await });
        }
        loop {
            let next = tokio::select! {
                () = shutdown.wait() => break,
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, "receiving usage failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some(Ok(delivery)) => {
                    let lane = lane_of(delivery.message.ordering_key.as_deref(), lanes.len());
                    if lanes[lane].send(delivery).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Let the lanes rate what they already hold, then stop.
        drop(lanes);
        while workers.join_next().await.is_some() {}
        tracing::info!(subscription = %self.subscription.name, "usage consumer stopped");
        Ok(())
    }

    /// One lane: gathers up to `batch_messages` deliveries (or what arrives
    /// within the gather window) and rates them, until the dispatcher stops.
    async fn lane(&self, mut receiver: tokio::sync::mpsc::Receiver<Delivery>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.batch_messages {
                match tokio::time::timeout(GATHER_WINDOW, receiver.recv()).await {
                    Ok(Some(delivery)) => batch.push(delivery),
                    Ok(None) | Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Handles one batch of deliveries; returns each one's verdict, in order
    /// of settlement (poison first).
    pub async fn process(&self, deliveries: Vec<Delivery>) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(deliveries.len());
        let mut decoded = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match decode_delivery(&delivery) {
                Ok(event) => decoded.push((delivery, event)),
                Err(reason) => {
                    verdicts
                        .push(dead_letter(&self.bus, &self.subscription, delivery, &reason).await);
                }
            }
        }
        if decoded.is_empty() {
            return verdicts;
        }
        let events: Vec<AcceptedEvent> = decoded.iter().map(|(_, event)| event.clone()).collect();
        match self.rate(&events).await {
            Ok(summary) => {
                tracing::debug!(?summary, "usage batch rated");
                for (delivery, _) in decoded {
                    delivery.ack();
                    verdicts.push(Verdict::Acked);
                }
            }
            Err(error) => {
                tracing::warn!(%error, count = decoded.len(), "usage batch failed; retrying message by message");
                for (delivery, event) in decoded {
                    match self.rate(std::slice::from_ref(&event)).await {
                        Ok(_) => {
                            delivery.ack();
                            verdicts.push(Verdict::Acked);
                        }
                        Err(error) => {
                            verdicts.push(
                                self.retry_or_dead_letter(delivery, &error.to_string())
                                    .await,
                            );
                        }
                    }
                }
            }
        }
        verdicts
    }

    /// Rates `events` in one transaction, then evaluates the thresholds of
    /// their customers (a failure there is logged: the next batch of the
    /// subscription detects the crossing).
    pub async fn rate(&self, events: &[AcceptedEvent]) -> Result<RateSummary, RatingError> {
        let mut transaction = self.pool.begin().await?;
        let summary = self.rater.rate(&mut transaction, events).await?;
        transaction.commit().await?;
        self.rater.record(&summary);
        if summary.rated > 0
            && let Err(error) = self.thresholds.evaluate(events).await
        {
            tracing::error!(%error, "thresholds could not be evaluated after a usage batch");
        }
        Ok(summary)
    }

    async fn retry_or_dead_letter(&self, delivery: Delivery, reason: &str) -> Verdict {
        if delivery.delivery_attempt < self.subscription.max_delivery_attempts {
            tracing::warn!(%reason, attempt = delivery.delivery_attempt, "usage not rated; it will be redelivered");
            delivery.nack();
            Verdict::Retried
        } else {
            dead_letter(&self.bus, &self.subscription, delivery, reason).await
        }
    }
}

/// The lane of a delivery: its ordering key (the customer) hashed, so a
/// customer always goes to the same lane; keyless messages go to lane 0.
fn lane_of(ordering_key: Option<&str>, lanes: usize) -> usize {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let Some(key) = ordering_key else {
        return 0;
    };
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes.max(1) as u64).unwrap_or(0)
}

/// The event a delivery carries, or why it is poison.
fn decode_delivery(delivery: &Delivery) -> Result<AcceptedEvent, String> {
    let message = &delivery.message;
    if message.message_type != USAGE_ACCEPTED_TYPE {
        return Err(format!(
            "unexpected message type {:?} on usage-accepted (expected {USAGE_ACCEPTED_TYPE})",
            message.message_type
        ));
    }
    if message.type_version != 1 {
        return Err(format!(
            "unsupported schema version {} of {USAGE_ACCEPTED_TYPE} (this service reads version 1)",
            message.type_version
        ));
    }
    decode_accepted(&message.payload).map_err(|error| error.to_string())
}
