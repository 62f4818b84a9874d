//! The Pub/Sub intake: consumes `usage-events` and sends what it reads down
//! the same pipeline as gRPC batches.
//!
//! A `tally_bus::batch::BatchConsumer`: messages are gathered into batches
//! (up to `ingest.pubsub_batch_messages`, or whatever arrived within a few
//! milliseconds) and written in one transaction, a few batches at once; each
//! message is acked only after its batch's commit, so an ack always means
//! durable. Invalid and undecodable events are stored as rejections and acked
//! (kept, not retried). A message of another type or
//! schema version is poison and goes straight to the dead-letter topic. When
//! the database write fails, each message of the batch is retried on its own
//! and, after `bus.max_delivery_attempts`, dead-lettered.

use std::sync::Arc;

use async_trait::async_trait;
use tally_bus::batch::{BatchConsumer, BatchHandler, BatchSettings, Lanes};
use tally_bus::consumer::{HandlerError, Verdict};
use tally_bus::message::ATTRIBUTE_CONTENT_TYPE;
use tally_bus::{BusError, Delivery, Message, SharedBus, SubscriptionConfig};
use tally_proto::events::Intake;
use tally_runtime::Shutdown;

use crate::decode::decode;
use crate::pipeline::{Incoming, Ingestor, RejectionStorage};

/// The protobuf type name producers may put in `tally-type`.
pub const USAGE_EVENT_TYPE: &str = "tally.events.v1.UsageEvent";

/// Batches written at once (each its own transaction): while one commits,
/// the next is gathered and written, as `IngestStream`'s window does for gRPC.
const BATCHES_IN_FLIGHT: usize = 4;

/// Consumes the `usage-events` subscription: a [`BatchConsumer`] whose
/// batches go through the [`Ingestor`] like gRPC batches.
#[derive(Debug, Clone)]
pub struct PubSubIntake {
    consumer: BatchConsumer<IntakeHandler>,
}

impl PubSubIntake {
    /// An intake for `subscription`, writing batches of at most `batch_messages`.
    ///
    /// Up to [`BATCHES_IN_FLIGHT`] batches are written at once, each in its
    /// own transaction and acked after its own commit, while the next one is
    /// gathered from one stream ([`Lanes::Shared`]) whose flow control holds
    /// that many batches. Order does not matter here (acceptance is keyed by
    /// event id), so batches may commit in any order.
    pub fn new(
        bus: SharedBus,
        subscription: SubscriptionConfig,
        ingestor: Arc<Ingestor>,
        batch_messages: usize,
    ) -> Self {
        let settings = BatchSettings::new(batch_messages, BATCHES_IN_FLIGHT, Lanes::Shared);
        Self {
            consumer: BatchConsumer::new(bus, subscription, settings, IntakeHandler { ingestor }),
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
}

/// Decodes `usage-events` messages and writes a batch in one transaction.
#[derive(Debug)]
struct IntakeHandler {
    ingestor: Arc<Ingestor>,
}

#[async_trait]
impl BatchHandler for IntakeHandler {
    type Item = Incoming;

    fn decode(&self, message: &Message) -> Result<Incoming, String> {
        match poison_reason(message) {
            Some(reason) => Err(reason),
            None => Ok(to_incoming(message)),
        }
    }

    async fn handle(&self, items: Vec<Incoming>) -> Result<(), HandlerError> {
        self.ingestor
            .ingest(items, Intake::Pubsub, RejectionStorage::Store)
            .await
            .map(drop)
            .map_err(|error| HandlerError::Retry(error.to_string()))
    }

    fn dead_lettered(&self, _message: &Message) {
        self.ingestor.metrics().record_dead_letter();
    }
}

fn to_incoming(message: &Message) -> Incoming {
    decode(
        &message.payload,
        message
            .attributes
            .get(ATTRIBUTE_CONTENT_TYPE)
            .map(String::as_str),
    )
}

/// A message that can never be an event of this schema: another type, or a
/// schema version this service does not understand.
fn poison_reason(message: &Message) -> Option<String> {
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
