//! The `rating-usage-accepted` consumer: a `tally_bus::batch::BatchConsumer`
//! (as ingest's Pub/Sub intake) on `usage-accepted`.
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

use async_trait::async_trait;
use sqlx::PgPool;
use tally_bus::batch::{BatchConsumer, BatchHandler, BatchSettings, Lanes};
use tally_bus::consumer::{HandlerError, Verdict};
use tally_bus::{BusError, Delivery, Message, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;

use super::{AcceptedEvent, RateSummary, UsageRater, decode_accepted};
use crate::error::RatingError;
use crate::thresholds::ThresholdEvaluator;

/// The protobuf type name ingest's relay puts in `tally-type`.
pub const USAGE_ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

/// Consumes `usage-accepted`: a [`BatchConsumer`] in lanes by customer.
#[derive(Debug, Clone)]
pub struct UsageConsumer {
    consumer: BatchConsumer<UsageBatches>,
}

impl UsageConsumer {
    /// A consumer of `subscription` rating batches of at most `batch_messages`
    /// in `batches_in_flight` lanes.
    pub fn new(
        bus: SharedBus,
        subscription: SubscriptionConfig,
        pool: PgPool,
        rater: UsageRater,
        thresholds: ThresholdEvaluator,
        batch_messages: usize,
        batches_in_flight: usize,
    ) -> Self {
        let settings = BatchSettings::new(batch_messages, batches_in_flight, Lanes::ByOrderingKey);
        let handler = UsageBatches {
            pool,
            rater,
            thresholds,
        };
        Self {
            consumer: BatchConsumer::new(bus, subscription, settings, handler),
        }
    }

    /// Consumes until `shutdown`, finishing the batches in hand first.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        self.consumer.run(shutdown).await
    }

    /// Handles one batch of deliveries; returns each one's verdict, in order.
    pub async fn process(&self, deliveries: Vec<Delivery>) -> Vec<Verdict> {
        self.consumer.process(deliveries).await
    }

    /// Rates `events` in one transaction, then evaluates the thresholds of
    /// their customers (a failure there is logged: the next batch of the
    /// subscription detects the crossing).
    pub async fn rate(&self, events: &[AcceptedEvent]) -> Result<RateSummary, RatingError> {
        self.consumer.handler().rate(events).await
    }
}

/// Decodes `usage-accepted` messages and rates a batch in one transaction.
#[derive(Debug)]
struct UsageBatches {
    pool: PgPool,
    rater: UsageRater,
    thresholds: ThresholdEvaluator,
}

impl UsageBatches {
    async fn rate(&self, events: &[AcceptedEvent]) -> Result<RateSummary, RatingError> {
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
}

#[async_trait]
impl BatchHandler for UsageBatches {
    type Item = AcceptedEvent;

    fn decode(&self, message: &Message) -> Result<AcceptedEvent, String> {
        decode_message(message)
    }

    async fn handle(&self, events: Vec<AcceptedEvent>) -> Result<(), HandlerError> {
        let summary = self
            .rate(&events)
            .await
            .map_err(|error| HandlerError::Retry(error.to_string()))?;
        tracing::debug!(?summary, "usage batch rated");
        Ok(())
    }
}

/// The event a message carries, or why it is poison.
fn decode_message(message: &Message) -> Result<AcceptedEvent, String> {
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
