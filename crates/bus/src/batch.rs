//! The batch consumer ([`BatchConsumer`]): for consumers that apply many
//! messages in one database transaction (ingest's Pub/Sub intake, rating's
//! usage consumer, and every new consumer that batches).
//!
//! Each delivery is decoded ([`BatchHandler::decode`]); one that cannot be is
//! poison and goes to the dead-letter topic at once, with the decoder's reason.
//! The decoded batch goes to [`BatchHandler::handle`] in **one call**, which
//! commits it in one transaction; every delivery is acked only after that
//! call returned `Ok`, so an ack always means durable, and a process killed
//! before it acks nothing (the bus redelivers after the lease). When the
//! batch fails, its messages are handled again **one by one**, so one message
//! that cannot be applied does not hold the others back; a message that fails
//! alone is nacked for redelivery (`Retry`) and dead-lettered once it has
//! failed `max_delivery_attempts` times, or at once (`Poison`).
//!
//! Like [`crate::consumer::Consumer`], every message gets its own
//! `bus.consume` span (message id, type, topic, attempt; parented on the
//! publisher's trace context), and its outcome is counted in
//! `tally.bus.messages_processed`; each batch gets a `bus.consume_batch` span
//! that follows from its messages' spans (OpenTelemetry links) and is
//! recorded in `tally.bus.batch_size`.
//!
//! Handlers must be idempotent (a redelivery after a crash, or a message
//! retried alone after its batch failed, is applied again): ingest keys
//! acceptance by event id, rating by `rated_events`, others use [`crate::inbox`].

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tally_runtime::Shutdown;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::consumer::{HandlerError, Verdict, dead_letter, next_batch, next_delivery};
use crate::{BusError, Delivery, Message, SharedBus, SubscriptionConfig};

/// Decodes and applies batches of one subscription's messages.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// What one message decodes to.
    type Item: Send + 'static;

    /// Decodes one message, or says why it can never be handled (wrong type
    /// or schema version, undecodable): that reason goes with it to the
    /// dead-letter topic. Must be deterministic: a failed batch's messages
    /// are decoded again to be handled one by one.
    fn decode(&self, message: &Message) -> Result<Self::Item, String>;

    /// Applies `items` (in delivery order) in one transaction. `Ok` means
    /// committed: every message of the batch is then acked.
    async fn handle(&self, items: Vec<Self::Item>) -> Result<(), HandlerError>;

    /// Called after `message` was published to the dead-letter topic (for a
    /// service's own counters).
    fn dead_lettered(&self, message: &Message) {
        let _ = message;
    }
}

/// A shared handler (the caller keeps a handle on its state).
#[async_trait]
impl<H: BatchHandler> BatchHandler for Arc<H> {
    type Item = H::Item;

    fn decode(&self, message: &Message) -> Result<Self::Item, String> {
        H::decode(self, message)
    }

    async fn handle(&self, items: Vec<Self::Item>) -> Result<(), HandlerError> {
        H::handle(self, items).await
    }

    fn dead_lettered(&self, message: &Message) {
        H::dead_lettered(self, message);
    }
}

/// How deliveries are gathered into batches and how many are handled at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most messages in one batch.
    pub max_messages: usize,
    /// How long to wait for more messages before handling a partial batch.
    pub gather_window: Duration,
    /// Batches handled at once (each its own transaction).
    pub in_flight: usize,
    /// How batches are formed; see [`Lanes`].
    pub lanes: Lanes,
}

/// How concurrent batches share the subscription's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    /// One stream, cut into batches as deliveries arrive; up to `in_flight`
    /// batches are handled while the next is gathered. The stream's flow
    /// control holds `max_messages × in_flight` deliveries. For handlers
    /// whose batches never contend (ingest: acceptance keyed by event id).
    Shared,
    /// `in_flight` lanes, each gathering its own batches; a delivery's lane
    /// is its ordering key hashed (keyless: lane 0), so lanes never share a
    /// customer and never wait on each other's per-customer locks (rating).
    ByOrderingKey,
}

impl BatchSettings {
    /// Batches of up to `max_messages` gathered for 5 ms, `in_flight` at once.
    pub fn new(max_messages: usize, in_flight: usize, lanes: Lanes) -> Self {
        Self {
            max_messages: max_messages.max(1),
            gather_window: Duration::from_millis(5),
            in_flight: in_flight.max(1),
            lanes,
        }
    }
}

/// A consumer of one subscription that handles its messages in batches.
pub struct BatchConsumer<H: BatchHandler> {
    inner: Arc<Inner<H>>,
}

struct Inner<H: BatchHandler> {
    bus: SharedBus,
    config: SubscriptionConfig,
    settings: BatchSettings,
    handler: H,
    /// `tally.bus.messages_processed`, as [`crate::consumer::Consumer`] counts it.
    processed: Counter<u64>,
    /// `tally.bus.batch_size`: messages per batch handed to the handler.
    batch_size: Histogram<u64>,
}

impl<H: BatchHandler> Clone for BatchConsumer<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H: BatchHandler> std::fmt::Debug for BatchConsumer<H> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BatchConsumer")
            .field("subscription", &self.inner.config.name)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// A delivery with its span, its decoded item (or poison reason), and its
/// verdict once settled.
struct Received<T> {
    delivery: Delivery,
    span: tracing::Span,
    decoded: Result<T, String>,
}

impl<H: BatchHandler> BatchConsumer<H> {
    /// A consumer of `config.name` handling batches shaped by `settings` with `handler`.
    pub fn new(
        bus: SharedBus,
        config: SubscriptionConfig,
        settings: BatchSettings,
        handler: H,
    ) -> Self {
        let meter = tally_runtime::telemetry::meter();
        let processed = meter
            .u64_counter("tally.bus.messages_processed")
            .with_description("Messages handled by consumers, by subscription and outcome")
            .build();
        let batch_size = meter
            .u64_histogram("tally.bus.batch_size")
            .with_description("Messages per batch handled by batch consumers, by subscription")
            .with_boundaries(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ])
            .build();
        Self {
            inner: Arc::new(Inner {
                bus,
                config,
                settings,
                handler,
                processed,
                batch_size,
            }),
        }
    }

    /// The handler (for callers that reach its state).
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The subscription consumed.
    pub fn subscription(&self) -> &SubscriptionConfig {
        &self.inner.config
    }

    /// Consumes until `shutdown`, finishing the batches in hand first.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), BusError> {
        let name = &self.inner.config.name;
        tracing::info!(subscription = %name, settings = ?self.inner.settings, "batch consumer started");
        match self.inner.settings.lanes {
            Lanes::Shared => self.run_shared(&shutdown).await?,
            Lanes::ByOrderingKey => self.run_lanes(&shutdown).await?,
        }
        tracing::info!(subscription = %name, "batch consumer stopped");
        Ok(())
    }

    /// [`Lanes::Shared`]: batches cut from one flow-controlled stream.
    async fn run_shared(&self, shutdown: &Shutdown) -> Result<(), BusError> {
        let settings = &self.inner.settings;
        let mut stream = self
            .inner
            .bus
            .subscribe_with_flow(
                &self.inner.config.name,
                settings.max_messages * settings.in_flight,
            )
            .await?;
        let mut handling = JoinSet::new();
        loop {
            while handling.try_join_next().is_some() {}
            if handling.len() >= settings.in_flight {
                handling.join_next().await;
                continue;
            }
            // Awaited to the end, never raced: a half-gathered batch dropped
            // would send its deliveries back for redelivery.
            let Some(batch) = next_batch(
                stream.as_mut(),
                shutdown,
                settings.max_messages,
                settings.gather_window,
            )
            .await
            else {
                break;
            };
            let consumer = self.clone();
            handling.spawn(async move {
                consumer.process(batch).await;
            });
        }
        while handling.join_next().await.is_some() {}
        Ok(())
    }

    /// [`Lanes::ByOrderingKey`]: one dispatcher, `in_flight` lanes by key.
    async fn run_lanes(&self, shutdown: &Shutdown) -> Result<(), BusError> {
        let settings = &self.inner.settings;
        let mut stream = self.inner.bus.subscribe(&self.inner.config.name).await?;
        let mut lanes = Vec::with_capacity(settings.in_flight);
        let mut workers = JoinSet::new();
        for _ in 0..settings.in_flight {
            let (sender, receiver) = mpsc::channel(settings.max_messages);
            lanes.push(sender);
            let consumer = self.clone();
            workers.spawn(async move { consumer.lane(receiver).await });
        }
        while let Some(delivery) = next_delivery(stream.as_mut(), shutdown).await {
            let lane = lane_of(delivery.message.ordering_key.as_deref(), lanes.len());
            if lanes[lane].send(delivery).await.is_err() {
                break;
            }
        }
        // Let the lanes handle what they already hold, then stop.
        drop(lanes);
        while workers.join_next().await.is_some() {}
        Ok(())
    }

    /// One lane: gathers up to `max_messages` deliveries (or what arrives
    /// within the gather window) and handles them, until the dispatcher stops.
    async fn lane(&self, mut receiver: mpsc::Receiver<Delivery>) {
        let settings = &self.inner.settings;
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < settings.max_messages {
                match tokio::time::timeout(settings.gather_window, receiver.recv()).await {
                    Ok(Some(delivery)) => batch.push(delivery),
                    Ok(None) | Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Handles one batch of deliveries and settles each; returns each one's
    /// verdict, in the order of `deliveries`.
    pub async fn process(&self, deliveries: Vec<Delivery>) -> Vec<Verdict> {
        let received: Vec<Received<H::Item>> =
            deliveries.into_iter().map(|d| self.receive(d)).collect();
        let batch_span = tracing::info_span!(
            "bus.consume_batch",
            otel.name = %format!("{} process batch", self.inner.config.name),
            messaging.destination.name = %self.inner.config.topic,
            messaging.batch.message_count = received.len(),
        );
        for message in &received {
            batch_span.follows_from(&message.span);
        }
        let mut verdicts = vec![None; received.len()];
        let mut items = Vec::with_capacity(received.len());
        let mut pending = Vec::with_capacity(received.len());
        for (index, message) in received.into_iter().enumerate() {
            match message.decoded {
                Ok(item) => {
                    items.push(item);
                    pending.push((index, message.delivery, message.span));
                }
                Err(reason) => {
                    let verdict = self
                        .dead_letter(message.delivery, &reason)
                        .instrument(message.span)
                        .await;
                    verdicts[index] = Some(verdict);
                }
            }
        }
        if !items.is_empty() {
            self.inner.batch_size.record(
                items.len() as u64,
                &[KeyValue::new(
                    "subscription",
                    self.inner.config.name.clone(),
                )],
            );
            let outcome = self
                .inner
                .handler
                .handle(items)
                .instrument(batch_span.clone())
                .await;
            self.settle(outcome, pending, &mut verdicts)
                .instrument(batch_span)
                .await;
        }
        verdicts
            .into_iter()
            .map(|verdict| verdict.unwrap_or(Verdict::Retried))
            .collect()
    }

    /// Acks a committed batch, or handles its messages one by one.
    async fn settle(
        &self,
        outcome: Result<(), HandlerError>,
        pending: Vec<(usize, Delivery, tracing::Span)>,
        verdicts: &mut [Option<Verdict>],
    ) {
        match outcome {
            Ok(()) => {
                for (index, delivery, span) in pending {
                    let _entered = span.enter();
                    delivery.ack();
                    verdicts[index] = Some(self.count(Verdict::Acked));
                }
            }
            Err(error) if pending.len() == 1 => {
                // Already alone: handling it again would only repeat the failure.
                if let Some((index, delivery, span)) = pending.into_iter().next() {
                    let verdict = self.after_failure(delivery, error).instrument(span).await;
                    verdicts[index] = Some(verdict);
                }
            }
            Err(error) => {
                // Isolate the failure: one bad message must not hold back the others.
                tracing::warn!(%error, count = pending.len(), "batch failed; retrying message by message");
                for (index, delivery, span) in pending {
                    let verdict = self.alone(delivery).instrument(span).await;
                    verdicts[index] = Some(verdict);
                }
            }
        }
    }

    /// Handles one message of a failed batch on its own.
    async fn alone(&self, delivery: Delivery) -> Verdict {
        let item = match self.inner.handler.decode(&delivery.message) {
            Ok(item) => item,
            Err(reason) => return self.dead_letter(delivery, &reason).await,
        };
        match self.inner.handler.handle(vec![item]).await {
            Ok(()) => {
                delivery.ack();
                self.count(Verdict::Acked)
            }
            Err(error) => self.after_failure(delivery, error).await,
        }
    }

    /// Settles a message that failed on its own: redelivered while attempts
    /// remain (`Retry`), dead-lettered otherwise.
    async fn after_failure(&self, delivery: Delivery, error: HandlerError) -> Verdict {
        let reason = match error {
            HandlerError::Retry(reason)
                if delivery.delivery_attempt < self.inner.config.max_delivery_attempts =>
            {
                tracing::warn!(%reason, attempt = delivery.delivery_attempt, "message failed; it will be redelivered");
                delivery.nack();
                return self.count(Verdict::Retried);
            }
            HandlerError::Retry(reason) | HandlerError::Poison(reason) => reason,
        };
        self.dead_letter(delivery, &reason).await
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Verdict {
        let message = delivery.message.clone();
        let verdict = dead_letter(&self.inner.bus, &self.inner.config, delivery, reason).await;
        if verdict == Verdict::DeadLettered {
            self.inner.handler.dead_lettered(&message);
        }
        self.count(verdict)
    }

    /// Opens the message's span (parented on the publisher's trace context)
    /// and decodes it inside.
    fn receive(&self, delivery: Delivery) -> Received<H::Item> {
        let span = tracing::info_span!(
            "bus.consume",
            otel.name = %format!("{} process", self.inner.config.name),
            messaging.message.id = %delivery.message.id,
            messaging.message.type = %delivery.message.message_type,
            messaging.destination.name = %self.inner.config.topic,
            delivery_attempt = delivery.delivery_attempt,
        );
        tally_runtime::telemetry::set_parent_from(&span, &delivery.message.attributes);
        let decoded = span.in_scope(|| self.inner.handler.decode(&delivery.message));
        Received {
            delivery,
            span,
            decoded,
        }
    }

    fn count(&self, verdict: Verdict) -> Verdict {
        self.inner.processed.add(
            1,
            &[
                KeyValue::new("subscription", self.inner.config.name.clone()),
                KeyValue::new("outcome", verdict.outcome()),
            ],
        );
        verdict
    }
}

/// The lane of a delivery: its ordering key hashed, so a key always goes to
/// the same lane; keyless messages go to lane 0.
fn lane_of(ordering_key: Option<&str>, lanes: usize) -> usize {
    let Some(key) = ordering_key else {
        return 0;
    };
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes.max(1) as u64).unwrap_or(0)
}
