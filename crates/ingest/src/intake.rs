//! The Pub/Sub intake: consumes `usage-events` and sends what it reads down
//! the same pipeline as gRPC batches.
//!
//! Messages are gathered into batches (up to `ingest.pubsub_batch_messages`,
//! or whatever arrived within a few milliseconds) and written in one
//! transaction, a few batches at once; each message is acked only after its
//! batch's commit, so an ack always means durable. Invalid and undecodable events are stored as
//! rejections and acked (kept, not retried). A message of another type or
//! schema version is poison and goes straight to the dead-letter topic. When
//! the database write fails, each message of the batch is retried on its own
//! and, after `bus.max_delivery_attempts`, dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use tally_bus::consumer::{Verdict, dead_letter, next_batch};
use tally_bus::message::ATTRIBUTE_CONTENT_TYPE;
use tally_bus::{BusError, Delivery, SharedBus, SubscriptionConfig};
use tally_proto::events::Intake;
use tally_runtime::Shutdown;
use tokio::task::JoinSet;

use crate::decode::decode;
use crate::pipeline::{Incoming, Ingestor, RejectionStorage};

/// The protobuf type name producers may put in `tally-type`.
pub const USAGE_EVENT_TYPE: &str = "tally.events.v1.UsageEvent";

/// How long to wait for more messages before writing a partial batch.
const GATHER_WINDOW: Duration = Duration::from_millis(5);

/// Batches written at once (each its own transaction): while one commits,
/// the next is gathered and written, as `IngestStream`'s window does for gRPC.
const BATCHES_IN_FLIGHT: usize = 4;

/// Consumes the `usage-events` subscription.
#[derive(Clone)]
pub struct PubSubIntake {
    bus: SharedBus,
    subscription: SubscriptionConfig,
    ingestor: Arc<Ingestor>,
    batch_messages: usize,
}

impl std::fmt::Debug for PubSubIntake {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PubSubIntake")
            .field("subscription", &self.subscription.name)
            .finish_non_exhaustive()
    }
}

impl PubSubIntake {
    /// An intake for `subscription`, writing batches of at most `batch_messages`.
    pub fn new(
        bus: SharedBus,
        subscription: SubscriptionConfig,
        ingestor: Arc<Ingestor>,
        batch_messages: usize,
    ) -> Self {
        Self {
            bus,
            subscription,
            ingestor,
            batch_messages: batch_messages.max(1),
        }
    }

    /// Consumes until `shutdown`, finishing the batches in hand first.
    ///
    /// Up to [`BATCHES_IN_FLIGHT`] batches are written at once, each in its
    /// own transaction and acked after its own commit, while the next one is
    /// gathered: the stream's flow control (what it pulls ahead and holds) is
    /// sized to that many batches. Order does not matter here (acceptance is
    /// keyed by event id), so batches may commit in any order.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        let mut stream = self
            .bus
            .subscribe_with_flow(
                &self.subscription.name,
                self.batch_messages * BATCHES_IN_FLIGHT,
            )
            .await?;
        tracing::info!(subscription = %self.subscription.name, "Pub/Sub intake started");
        let mut writing = JoinSet::new();
        loop {
            while writing.try_join_next().is_some() {}
            if writing.len() >= BATCHES_IN_FLIGHT {
                writing.join_next().await;
                continue;
            }
            // Awaited to the end, never raced: a half-gathered batch dropped
            // would send its deliveries back for redelivery.
            let Some(batch) = next_batch(
                stream.as_mut(),
                &shutdown,
                self.batch_messages,
                GATHER_WINDOW,
            )
            .await
            else {
                break;
            };
            let intake = self.clone();
            writing.spawn(async move {
                intake.process(batch).await;
            });
        }
        while writing.join_next().await.is_some() {}
        tracing::info!(subscription = %self.subscription.name, "Pub/Sub intake stopped");
        Ok(())
    }

    /// Handles one batch of deliveries; returns each one's verdict, in order.
    pub async fn process(&self, deliveries: Vec<Delivery>) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(deliveries.len());
        let mut accepted = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match poison_reason(&delivery) {
                Some(reason) => {
                    verdicts.push(self.dead_letter(delivery, &reason).await);
                }
                None => accepted.push(delivery),
            }
        }
        if accepted.is_empty() {
            return verdicts;
        }
        let items: Vec<Incoming> = accepted.iter().map(to_incoming).collect();
        match self
            .ingestor
            .ingest(items, Intake::Pubsub, RejectionStorage::Store)
            .await
        {
            Ok(_) => {
                for delivery in accepted {
                    delivery.ack();
                    verdicts.push(Verdict::Acked);
                }
            }
            Err(error) if accepted.len() == 1 => {
                let delivery = accepted.into_iter().next();
                if let Some(delivery) = delivery {
                    verdicts.push(
                        self.retry_or_dead_letter(delivery, &error.to_string())
                            .await,
                    );
                }
            }
            Err(error) => {
                // Isolate the failure: one bad message must not hold back the others.
                tracing::warn!(%error, count = accepted.len(), "batch write failed; retrying message by message");
                for delivery in accepted {
                    let item = vec![to_incoming(&delivery)];
                    match self
                        .ingestor
                        .ingest(item, Intake::Pubsub, RejectionStorage::Store)
                        .await
                    {
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

    async fn retry_or_dead_letter(&self, delivery: Delivery, reason: &str) -> Verdict {
        if delivery.delivery_attempt < self.subscription.max_delivery_attempts {
            tracing::warn!(%reason, attempt = delivery.delivery_attempt, "usage event not stored; it will be redelivered");
            delivery.nack();
            Verdict::Retried
        } else {
            self.dead_letter(delivery, reason).await
        }
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Verdict {
        let verdict = dead_letter(&self.bus, &self.subscription, delivery, reason).await;
        if verdict == Verdict::DeadLettered {
            self.ingestor.metrics().record_dead_letter();
        }
        verdict
    }
}

fn to_incoming(delivery: &Delivery) -> Incoming {
    decode(
        &delivery.message.payload,
        delivery
            .message
            .attributes
            .get(ATTRIBUTE_CONTENT_TYPE)
            .map(String::as_str),
    )
}

/// A message that can never be an event of this schema: another type, or a
/// schema version this service does not understand.
fn poison_reason(delivery: &Delivery) -> Option<String> {
    let message = &delivery.message;
    if !message.message_type.is_empty() && message.message_type != USAGE_EVENT_TYPE {
        return Some(format!(
            "unexpected message type {:?} on usage-events (expected {USAGE_EVENT_TYPE})",
            message.message_type
        ));
    }
    if message.type_version != 1 {
        return Some(format!(
            "unsupported schema version {} of {USAGE_EVENT_TYPE} (this service reads version 1)",
            message.type_version
        ));
    }
    None
}
