//! The consumer loop every service uses ([`Consumer`]): deliver, handle, ack — or retry, or
//! dead-letter.
//!
//! A handler returns `Ok` (ack), [`HandlerError::Retry`] (nack; redelivered
//! until `max_delivery_attempts`, then dead-lettered) or
//! [`HandlerError::Poison`] (can never succeed: dead-lettered at once). A dead
//! letter is the original message, published to the subscription's dead-letter
//! topic with the reason, subscription and attempt count in its attributes, and
//! only then acked — so a message is never lost and never loops forever.
//!
//! One stream handles one message at a time, which keeps per-key order; run
//! several consumers on the same subscription to scale out. A consumer that
//! applies many messages in one transaction uses [`crate::batch::BatchConsumer`].

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tally_runtime::Shutdown;
use tracing::Instrument;

use crate::message::{
    ATTRIBUTE_DEAD_LETTER_ATTEMPTS, ATTRIBUTE_DEAD_LETTER_REASON,
    ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION,
};
use crate::{BusError, Delivery, Message, SharedBus, SubscriptionConfig};

/// Why a handler did not finish a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Transient (database down, dependency timeout): try again later.
    #[error("retryable: {0}")]
    Retry(String),
    /// Permanent (undecodable payload, unknown type): retrying cannot help.
    #[error("poison: {0}")]
    Poison(String),
}

/// Refuses (`Poison`) a message whose protobuf type is not `expected` at
/// version 1: a handler decodes only what it knows, and such a message will
/// never decode, however often it is redelivered.
pub fn check_type(message: &Message, expected: &str) -> Result<(), HandlerError> {
    if message.message_type != expected || message.type_version != 1 {
        return Err(HandlerError::Poison(format!(
            "expected {expected} version 1, got {:?} version {}",
            message.message_type, message.type_version
        )));
    }
    Ok(())
}

/// Applies one message. Must be idempotent: the bus delivers at least once
/// (use [`crate::inbox`] in the same transaction as the effect).
#[async_trait]
pub trait MessageHandler: Send + Sync {
    /// Handles `message`, delivered for the `delivery_attempt`-th time.
    async fn handle(&self, message: &Message, delivery_attempt: u32) -> Result<(), HandlerError>;
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handled and acked.
    Acked,
    /// Nacked for redelivery.
    Retried,
    /// Moved to the dead-letter topic and acked.
    DeadLettered,
}

impl Verdict {
    /// The `outcome` attribute of `tally.bus.messages_processed`.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// One consumer of one subscription.
pub struct Consumer {
    bus: SharedBus,
    config: SubscriptionConfig,
    handler: Arc<dyn MessageHandler>,
    /// `tally.bus.messages_processed`, built once (not per message).
    processed: Counter<u64>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Consumer")
            .field("subscription", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `config.name` that applies messages with `handler`.
    pub fn new(
        bus: SharedBus,
        config: SubscriptionConfig,
        handler: Arc<dyn MessageHandler>,
    ) -> Self {
        let processed = tally_runtime::telemetry::meter()
            .u64_counter("tally.bus.messages_processed")
            .with_description("Messages handled by consumers, by subscription and outcome")
            .build();
        Self {
            bus,
            config,
            handler,
            processed,
        }
    }

    /// Consumes until `shutdown`, finishing the message in hand first.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        let mut stream = self.bus.subscribe(&self.config.name).await?;
        tracing::info!(subscription = %self.config.name, "consumer started");
        while let Some(delivery) = next_delivery(stream.as_mut(), &shutdown).await {
            self.process(delivery).await;
        }
        tracing::info!(subscription = %self.config.name, "consumer stopped");
        Ok(())
    }

    /// Handles one delivery and settles it; returns what was done.
    pub async fn process(&self, delivery: Delivery) -> Verdict {
        let span = tracing::info_span!(
            "bus.consume",
            otel.name = %format!("{} process", self.config.name),
            messaging.message.id = %delivery.message.id,
            messaging.message.type = %delivery.message.message_type,
            messaging.destination.name = %self.config.topic,
            delivery_attempt = delivery.delivery_attempt,
        );
        tally_runtime::telemetry::set_parent_from(&span, &delivery.message.attributes);
        let verdict = async {
            let outcome = self
                .handler
                .handle(&delivery.message, delivery.delivery_attempt)
                .await;
            let reason = match outcome {
                Ok(()) => {
                    delivery.ack();
                    return Verdict::Acked;
                }
                Err(HandlerError::Retry(reason))
                    if delivery.delivery_attempt < self.config.max_delivery_attempts =>
                {
                    tracing::warn!(%reason, "message failed; it will be redelivered");
                    delivery.nack();
                    return Verdict::Retried;
                }
                Err(HandlerError::Retry(reason) | HandlerError::Poison(reason)) => reason,
            };
            self.dead_letter(delivery, &reason).await
        }
        .instrument(span)
        .await;
        self.processed.add(
            1,
            &[
                KeyValue::new("subscription", self.config.name.clone()),
                KeyValue::new("outcome", verdict.outcome()),
            ],
        );
        verdict
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Verdict {
        dead_letter(&self.bus, &self.config, delivery, reason).await
    }
}

/// Publishes `delivery` to the subscription's dead-letter topic with the
/// reason, subscription and attempt count, then acks it. If the dead letter
/// cannot be published, the delivery is nacked instead (never lost).
/// For consumers with their own loop ([`crate::batch`], connectors' forwarder).
pub async fn dead_letter(
    bus: &SharedBus,
    config: &SubscriptionConfig,
    delivery: Delivery,
    reason: &str,
) -> Verdict {
    let attempts = delivery.delivery_attempt;
    let letter = delivery
        .message
        .clone()
        .with_attribute(ATTRIBUTE_DEAD_LETTER_REASON, reason)
        .with_attribute(ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION, config.name.clone())
        .with_attribute(ATTRIBUTE_DEAD_LETTER_ATTEMPTS, attempts.to_string());
    match bus.publish(&config.dead_letter_topic, letter).await {
        Ok(()) => {
            tracing::error!(%reason, attempts, topic = %config.dead_letter_topic, "message dead-lettered");
            delivery.ack();
            Verdict::DeadLettered
        }
        Err(error) => {
            tracing::error!(%error, "cannot publish the dead letter; leaving the message for redelivery");
            delivery.nack();
            Verdict::Retried
        }
    }
}

/// Receives the next batch for consumers that handle many messages at once
/// ([`crate::batch::BatchConsumer`], connectors' forwarder): waits for
/// one delivery, then gathers what arrives within `gather_window`, up to
/// `max_messages`. A receive error before the first delivery is logged and
/// retried after a pause; after it, the batch is cut short. `None` once
/// `shutdown` fires or the stream ends.
pub async fn next_batch(
    stream: &mut dyn crate::MessageStream,
    shutdown: &Shutdown,
    max_messages: usize,
    gather_window: std::time::Duration,
) -> Option<Vec<Delivery>> {
    let first = next_delivery(stream, shutdown).await?;
    let mut batch = vec![first];
    while batch.len() < max_messages.max(1) {
        match tokio::time::timeout(gather_window, stream.next()).await {
            Ok(Some(Ok(delivery))) => batch.push(delivery),
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "receiving a batch failed; writing what arrived");
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

/// The next delivery of `stream`; a receive error is logged and retried
/// after a pause. `None` once `shutdown` fires or the stream ends.
pub async fn next_delivery(
    stream: &mut dyn crate::MessageStream,
    shutdown: &Shutdown,
) -> Option<Delivery> {
    loop {
        let next = tokio::select! {
            () = shutdown.wait() => return None,
            next = stream.next() => next,
        };
        match next? {
            Ok(delivery) => return Some(delivery),
            Err(error) => {
                tracing::warn!(%error, "receive failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}
