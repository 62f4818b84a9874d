//! StreamingPull through the official client: the path for Google Cloud
//! Pub/Sub itself. The client keeps one stream open and extends the leases
//! of the messages this process holds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::subscriber::handler::Handler;

use super::delivery_state::{Attempts, HeldKeys};
use super::{backend, status_code};
use crate::message::Acknowledger;
use crate::{BusError, Delivery, Message, MessageStream};

pub(super) struct StreamingPull {
    pub(super) subscription: String,
    pub(super) stream: google_cloud_pubsub::subscriber::MessageStream,
    /// Whether the subscription is ordered: only then are a nacked key's later
    /// messages held back.
    pub(super) ordered: bool,
    pub(super) attempts: Attempts,
    pub(super) held_keys: HeldKeys,
}

impl std::fmt::Debug for StreamingPull {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StreamingPull")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MessageStream for StreamingPull {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let (incoming, handler) = match self.stream.next().await? {
                Ok(received) => received,
                Err(error) => {
                    if status_code(&error) == Some(Code::NotFound) {
                        return Some(Err(BusError::SubscriptionNotFound(
                            self.subscription.clone(),
                        )));
                    }
                    return Some(Err(backend(error)));
                }
            };
            let ordering_key = if self.ordered {
                incoming.ordering_key.clone()
            } else {
                String::new()
            };
            if !self.held_keys.admit(&ordering_key, &incoming.message_id) {
                handler.nack();
                continue;
            }
            let attempt = self
                .attempts
                .count(handler.delivery_attempt(), &incoming.message_id);
            let message = Message::from_wire(
                incoming.attributes.clone(),
                Some(incoming.ordering_key.clone()),
                incoming.data.to_vec(),
                &incoming.message_id,
            );
            let acknowledger = StreamingAcknowledger {
                handler: Some(handler),
                ordering_key,
                pubsub_message_id: incoming.message_id.clone(),
                held_keys: self.held_keys.clone(),
            };
            let mut delivery = Delivery::new(message, attempt, Box::new(acknowledger));
            if let Some(published_at) = incoming.publish_time.as_ref().and_then(|time| {
                DateTime::<Utc>::from_timestamp(
                    time.seconds(),
                    time.nanos().try_into().unwrap_or(0),
                )
            }) {
                delivery = delivery.with_published_at(published_at);
            }
            return Some(Ok(delivery));
        }
    }
}

#[derive(Debug)]
struct StreamingAcknowledger {
    /// `None` once settled.
    handler: Option<Handler>,
    /// The key to hold back after a nack (empty on an unordered subscription).
    ordering_key: String,
    pubsub_message_id: String,
    held_keys: HeldKeys,
}

impl StreamingAcknowledger {
    fn settle(&mut self, ack: bool) {
        let Some(handler) = self.handler.take() else {
            return;
        };
        if ack {
            handler.ack();
            return;
        }
        self.held_keys
            .hold(&self.ordering_key, &self.pubsub_message_id);
        handler.nack();
    }
}

impl Acknowledger for StreamingAcknowledger {
    fn ack(mut self: Box<Self>) {
        self.settle(true);
    }

    fn nack(mut self: Box<Self>) {
        self.settle(false);
    }
}

impl Drop for StreamingAcknowledger {
    fn drop(&mut self) {
        // Dropped without a verdict (a crashed handler): redeliver, keeping key order.
        self.settle(false);
    }
}
