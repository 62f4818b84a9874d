//! The `connectors-usage-accepted` consumer: gathers up to
//! `connectors.orb_batch_events` deliveries (or what arrives within a few
//! milliseconds), forwards them as one batch and settles each delivery by
//! its disposition. Poison (not a `UsageAccepted` version 1, undecodable) is
//! dead-lettered at once; a message not settled is nacked, and
//! dead-lettered after `max_delivery_attempts` (kept, never lost).
//!
//! When nothing of a batch could be settled (Orb down or refusing the key,
//! the database down) the consumer pauses `cool_down` before reading on:
//! redeliveries are then spaced out instead of spending every delivery
//! attempt within seconds, so `bus.max_delivery_attempts` × the cool-down is
//! how long Orb may be away before usage waits on the dead-letter topic.

use std::time::Duration;

use tally_bus::consumer::{Verdict, dead_letter, next_batch};
use tally_bus::{BusError, Delivery, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;

use super::{AcceptedUsage, Disposition, Forwarder, Incoming};

/// The protobuf type name ingest's relay puts in `tally-type`.
pub const USAGE_ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

/// How long to wait for more messages before forwarding a partial batch.
const GATHER_WINDOW: Duration = Duration::from_millis(20);

/// Consumes `usage-accepted` for Orb.
#[derive(Debug, Clone)]
pub struct ForwardingConsumer {
    bus: SharedBus,
    subscription: SubscriptionConfig,
    forwarder: Forwarder,
    batch_events: usize,
    cool_down: Duration,
}

impl ForwardingConsumer {
    /// A consumer of `subscription` forwarding batches of at most
    /// `batch_events`, pausing `cool_down` after a batch it could not settle at all.
    pub fn new(
        bus: SharedBus,
        subscription: SubscriptionConfig,
        forwarder: Forwarder,
        batch_events: usize,
        cool_down: Duration,
    ) -> Self {
        Self {
            bus,
            subscription,
            forwarder,
            batch_events: batch_events.max(1),
            cool_down,
        }
    }

    /// Consumes until `shutdown`, finishing the batch in hand first.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        let mut stream = self.bus.subscribe(&self.subscription.name).await?;
        tracing::info!(subscription = %self.subscription.name, "orb forwarding consumer started");
        while let Some(batch) =
            next_batch(stream.as_mut(), &shutdown, self.batch_events, GATHER_WINDOW).await
        {
            let verdicts = self.process(batch).await;
            if verdicts.iter().all(|verdict| *verdict == Verdict::Retried) {
                tracing::warn!(
                    count = verdicts.len(),
                    cool_down_ms = self.cool_down.as_millis(),
                    "no usage could be forwarded to orb; pausing before reading on"
                );
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(self.cool_down) => {}
                }
            }
        }
        tracing::info!(subscription = %self.subscription.name, "orb forwarding consumer stopped");
        Ok(())
    }

    /// Handles one batch of deliveries; returns each one's verdict (poison first).
    pub async fn process(&self, deliveries: Vec<Delivery>) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(deliveries.len());
        let mut decoded = Vec::with_capacity(deliveries.len());
        let mut incoming = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match decode_delivery(&delivery) {
                Ok(usage) => {
                    incoming.push(Incoming {
                        message_id: delivery.message.id.clone(),
                        usage,
                    });
                    decoded.push(delivery);
                }
                Err(reason) => {
                    verdicts
                        .push(dead_letter(&self.bus, &self.subscription, delivery, &reason).await);
                }
            }
        }
        if incoming.is_empty() {
            return verdicts;
        }
        let dispositions = self.forwarder.forward(&incoming).await;
        for (delivery, disposition) in decoded.into_iter().zip(dispositions) {
            let verdict = match disposition {
                Disposition::Done => {
                    delivery.ack();
                    Verdict::Acked
                }
                Disposition::Redeliver(reason)
                    if delivery.delivery_attempt < self.subscription.max_delivery_attempts =>
                {
                    tracing::debug!(%reason, attempt = delivery.delivery_attempt, "usage not forwarded; it will be redelivered");
                    delivery.nack();
                    Verdict::Retried
                }
                Disposition::Redeliver(reason) => {
                    dead_letter(&self.bus, &self.subscription, delivery, &reason).await
                }
            };
            verdicts.push(verdict);
        }
        verdicts
    }
}

/// The event a delivery carries, or why it is poison.
fn decode_delivery(delivery: &Delivery) -> Result<AcceptedUsage, String> {
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
    AcceptedUsage::decode(&message.payload)
}
