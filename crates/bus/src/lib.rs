//! Tally's message bus.
//!
//! One abstraction ([`Bus`]) with two backends: [`InProcessBus`] for `tally
//! dev` and unit tests, and [`PubSubBus`] for Google Cloud Pub/Sub (and its
//! emulator). Both give the same guarantees, checked by one conformance suite:
//!
//! - **at-least-once**: a message is redelivered until acked; a nack, a dropped
//!   delivery or a crashed consumer means redelivery;
//! - **per-key order**: on an ordered subscription, messages with the same
//!   ordering key (the customer id) are delivered one at a time, in publish order.
//!   Only consumers whose effects depend on the order use one (see
//!   `docs/architecture.md`, "Ordering per topic"); the others are unordered;
//! - **dead letters**: [`consumer::Consumer`] moves a message that failed
//!   `max_delivery_attempts` times to the subscription's dead-letter topic,
//!   with the failure reason in its attributes, and acks it;
//!   [`batch::BatchConsumer`] does the same for consumers that apply many
//!   messages in one transaction (one by one after a failed batch);
//! - **trace context** travels in the `traceparent`/`tracestate` attributes;
//! - **visible age**: every delivery carries its publish time, and [`age`]
//!   reports how old the messages a process has received but not settled are
//!   (`tally.bus.oldest_unacked_age_seconds`) and how old they were on arrival
//!   (`tally.bus.delivery_age`).
//!
//! Consumers make effects idempotent with the [`inbox`] (record the message id
//! in the same transaction as the effect). Producers publish exactly what they
//! committed through the [`outbox`].

pub mod age;
pub mod batch;
pub mod consumer;
pub mod in_process;
pub mod inbox;
pub mod message;
pub mod outbox;
pub mod pubsub;
pub mod topics;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use in_process::InProcessBus;
pub use message::{Delivery, Message};
pub use pubsub::{PubSubBus, PullMode};

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic does not exist.
    #[error(
        "topic `{0}` does not exist (each service creates its topics at start with ensure_topic: start the service that publishes it, or create it in Pub/Sub yourself)"
    )]
    TopicNotFound(String),
    /// The subscription does not exist.
    #[error("subscription `{0}` does not exist")]
    SubscriptionNotFound(String),
    /// A message is malformed (missing type attribute, …).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The backend failed (network, permissions, emulator down).
    #[error("bus backend error: {0}")]
    Backend(String),
}

/// How a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Subscription name.
    pub name: String,
    /// Topic it reads.
    pub topic: String,
    /// Deliver messages with the same ordering key one at a time, in order.
    pub ordered: bool,
    /// How long a delivery may stay unacked before it is redelivered, unless
    /// the consumer extends its lease (both Pub/Sub pull paths do while a
    /// message is held): the bound on redelivery after a crash in the instant
    /// between receiving and leasing. 10 s (Pub/Sub's minimum) by default.
    pub ack_deadline: Duration,
    /// Deliveries before a failing message is dead-lettered (5–100).
    pub max_delivery_attempts: u32,
    /// Where failing messages go; created with the subscription.
    pub dead_letter_topic: String,
}

impl SubscriptionConfig {
    /// An ordered subscription `name` on `topic`, dead-lettering to `<name>-dead-letter`:
    /// for consumers whose effects depend on the order of a key's messages.
    pub fn ordered(name: impl Into<String>, topic: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            dead_letter_topic: format!("{name}-dead-letter"),
            name,
            topic: topic.into(),
            ordered: true,
            ack_deadline: Duration::from_secs(10),
            max_delivery_attempts: 5,
        }
    }

    /// An unordered subscription `name` on `topic`, dead-lettering to
    /// `<name>-dead-letter`: for consumers whose effects do not depend on the
    /// order of delivery. Messages keep their ordering key (consumers may still
    /// group by it); the backend just does not hold a key's later messages back.
    pub fn unordered(name: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            ordered: false,
            ..Self::ordered(name, topic)
        }
    }

    /// Sets the attempt limit.
    pub fn with_max_delivery_attempts(mut self, attempts: u32) -> Self {
        self.max_delivery_attempts = attempts;
        self
    }

    /// Sets the ack deadline.
    pub fn with_ack_deadline(mut self, deadline: Duration) -> Self {
        self.ack_deadline = deadline;
        self
    }
}

/// A stream of deliveries from one subscription. Several streams may read the
/// same subscription: each message goes to one of them.
#[async_trait]
pub trait MessageStream: Send + Debug {
    /// The next delivery; `None` once the bus is closed.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

/// Publish/subscribe plus the admin calls dev and tests need.
#[async_trait]
pub trait Bus: Send + Sync + Debug {
    /// Creates `topic` if it does not exist.
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError>;

    /// Creates the subscription (and its dead-letter topic) if it does not exist.
    async fn ensure_subscription(&self, config: &SubscriptionConfig) -> Result<(), BusError>;

    /// Publishes `message` to `topic`; returns once the bus has accepted it.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError>;

    /// Publishes `messages` to `topic`, one result per message, in their order.
    /// Messages with the same ordering key are published in the order given;
    /// a backend that can send many at once does (Pub/Sub enqueues them all
    /// and sends them in batches), so a caller with many messages waits for
    /// a few round trips instead of one per message. The default publishes
    /// one after another.
    async fn publish_all(&self, topic: &str, messages: Vec<Message>) -> Vec<Result<(), BusError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.publish(topic, message).await);
        }
        results
    }

    /// Opens a stream of deliveries from `subscription`.
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError>;

    /// Opens a stream for a consumer that settles in batches of up to
    /// `max_outstanding` deliveries in total (flow control: how many messages
    /// the stream pulls ahead and holds unsettled). The default ignores the
    /// bound (the in-process bus hands out what is queued).
    async fn subscribe_with_flow(
        &self,
        subscription: &str,
        max_outstanding: usize,
    ) -> Result<Box<dyn MessageStream>, BusError> {
        let _ = max_outstanding;
        self.subscribe(subscription).await
    }
}

/// The bus handle the composition root passes down.
pub type SharedBus = Arc<dyn Bus>;
