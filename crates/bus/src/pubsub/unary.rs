//! Unary Pull through the emulator's REST interface: the path when
//! `bus.emulator_host` is set.
//!
//! Why not StreamingPull there: the emulator keeps dispatching messages to
//! the stream of a consumer that was killed (its TCP connection is gone),
//! and those come back only one stream ack deadline at a time; an ordered
//! subscription's keys held by a killed consumer never come back at all
//! (docs/operations.md, "The Pub/Sub emulator"). A unary pull hands out one
//! batch per request, so a killed consumer can hold at most what it had
//! pulled, and that returns when its lease lapses. Google Cloud Pub/Sub
//! itself does not have the problem and keeps the official client's
//! StreamingPull ([`super::streaming`]).
//!
//! What the official client does for a stream, this does by hand:
//! - one task pulls ahead (a few batches, sized by [`PullSizing`]) so the consumer never waits on a
//!   round trip between messages;
//! - every pulled message is leased for [`LEASE`] at once when the
//!   subscription's ack deadline is longer (at most [`LEASE`] it is leased
//!   that long by the pull itself), and the lease is renewed while the
//!   consumer holds it (up to the bus's lease extension), so a crashed
//!   consumer's messages go elsewhere after [`LEASE`], whatever the
//!   subscription's ack deadline;
//! - acks and nacks are sent in batches by a task of their own; a nack is a
//!   zero lease, which redelivers at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::delivery_state::{Attempts, HeldKeys};
use crate::message::Acknowledger;
use crate::{BusError, Delivery, Message, MessageStream};

/// Pub/Sub's most messages per pull.
const PULL_LIMIT: usize = 1_000;
/// How long a pulled message stays ours without renewal: how soon a crashed
/// consumer's messages are delivered to another (10 s is Pub/Sub's minimum).
const LEASE: Duration = Duration::from_secs(10);
/// How often held messages' leases are renewed (well inside [`LEASE`]).
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// A pull waits for messages (long polling); this bounds one request.
const PULL_TIMEOUT: Duration = Duration::from_secs(90);
/// Acknowledge, lease and nack requests.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed pull.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Ack ids per acknowledge or lease request.
const IDS_PER_REQUEST: usize = 1_000;

/// How much a stream pulls and holds ahead of its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PullSizing {
    /// Messages asked for per pull.
    max_messages: usize,
    /// Pulled batches waiting for the consumer.
    ahead: usize,
    /// Whether each pulled batch is leased for [`LEASE`] at once: only when
    /// the subscription's own ack deadline is longer (Pub/Sub leases a pulled
    /// message for that deadline already). On the emulator a lease of an
    /// ordered subscription's messages costs time in proportion to its
    /// backlog (docs/benchmarks.md: 0.7 s per 100 ids with 10,000 waiting),
    /// which held its unary drain at 54 msg/s.
    lease_on_pull: bool,
}

impl Default for PullSizing {
    /// For consumers that settle one message at a time: small pulls.
    fn default() -> Self {
        Self {
            max_messages: 100,
            ahead: 4,
            lease_on_pull: true,
        }
    }
}

impl PullSizing {
    /// For a consumer that holds up to `outstanding` messages at once (its
    /// batches in flight): pulls of that size, up to Pub/Sub's limit, and
    /// two of them waiting, so the next batch is gathered without a round
    /// trip while the last one commits.
    pub(super) fn for_outstanding(outstanding: usize) -> Self {
        Self {
            max_messages: outstanding.clamp(1, PULL_LIMIT),
            ahead: 2,
            lease_on_pull: true,
        }
    }

    /// Leases on pull only when the subscription's ack deadline is unknown
    /// or longer than [`LEASE`]: within it a crashed consumer's messages come
    /// back after the deadline anyway.
    pub(super) fn lease_on_pull(self, ack_deadline: Option<Duration>) -> Self {
        Self {
            lease_on_pull: ack_deadline.is_none_or(|deadline| deadline > LEASE),
            ..self
        }
    }
}

/// The emulator's REST endpoint for one subscription.
#[derive(Debug, Clone)]
pub(super) struct RestSubscription {
    client: reqwest::Client,
    /// `http://<host>/v1/projects/<project>/subscriptions/<name>`.
    url: String,
    name: String,
}

impl RestSubscription {
    pub(super) fn new(
        emulator_host: &str,
        subscription_path: &str,
        name: &str,
    ) -> Result<Self, BusError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|error| BusError::Backend(format!("HTTP client: {error}")))?;
        Ok(Self {
            client,
            url: format!("http://{emulator_host}/v1/{subscription_path}"),
            name: name.to_owned(),
        })
    }

    async fn call<R: for<'de> Deserialize<'de>>(
        &self,
        verb: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<R, BusError> {
        let body =
            serde_json::to_vec(body).map_err(|error| BusError::Backend(error.to_string()))?;
        let response = self
            .client
            .post(format!("{}:{verb}", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| BusError::Backend(format!("{verb} on {}: {error}", self.name)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| BusError::Backend(format!("{verb} on {}: {error}", self.name)))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(BusError::SubscriptionNotFound(self.name.clone()));
        }
        if !status.is_success() {
            return Err(BusError::Backend(format!(
                "{verb} on {}: HTTP {status}: {}",
                self.name,
                String::from_utf8_lossy(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|error| {
            BusError::Backend(format!(
                "{verb} on {}: unreadable answer: {error}",
                self.name
            ))
        })
    }

    async fn pull(&self, max_messages: usize) -> Result<Vec<ReceivedMessage>, BusError> {
        let request = PullRequest { max_messages };
        let response: PullResponse = self.call("pull", &request, PULL_TIMEOUT).await?;
        Ok(response.received_messages)
    }

    async fn acknowledge(&self, ack_ids: &[String]) -> Result<(), BusError> {
        for chunk in ack_ids.chunks(IDS_PER_REQUEST) {
            let _: serde_json::Value = self
                .call(
                    "acknowledge",
                    &AcknowledgeRequest { ack_ids: chunk },
                    SETTLE_TIMEOUT,
                )
                .await?;
        }
        Ok(())
    }

    /// Sets the lease of `ack_ids` to `lease` from now (zero: redeliver now).
    async fn lease(&self, ack_ids: &[String], lease: Duration) -> Result<(), BusError> {
        for chunk in ack_ids.chunks(IDS_PER_REQUEST) {
            let request = ModifyAckDeadlineRequest {
                ack_ids: chunk,
                ack_deadline_seconds: lease.as_secs(),
            };
            let _: serde_json::Value = self
                .call("modifyAckDeadline", &request, SETTLE_TIMEOUT)
                .await?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PullRequest {
    max_messages: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<ReceivedMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceivedMessage {
    ack_id: String,
    message: WireMessage,
    #[serde(default)]
    delivery_attempt: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMessage {
    /// Base64.
    #[serde(default)]
    data: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
    message_id: String,
    #[serde(default)]
    publish_time: Option<DateTime<Utc>>,
    #[serde(default)]
    ordering_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcknowledgeRequest<'a> {
    ack_ids: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModifyAckDeadlineRequest<'a> {
    ack_ids: &'a [String],
    ack_deadline_seconds: u64,
}

/// Ack id → when it was pulled, for every message this stream holds.
type Leases = Arc<Mutex<HashMap<String, Instant>>>;

/// A verdict for the settling task: the ack id, and ack (true) or nack.
type Verdict = (String, bool);

pub(super) struct UnaryPull {
    subscription: RestSubscription,
    ordered: bool,
    attempts: Attempts,
    held_keys: HeldKeys,
    pulled: mpsc::Receiver<Result<Vec<ReceivedMessage>, BusError>>,
    buffer: VecDeque<ReceivedMessage>,
    verdicts: mpsc::UnboundedSender<Verdict>,
    puller: JoinHandle<()>,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for UnaryPull {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UnaryPull")
            .field("subscription", &self.subscription.name)
            .finish_non_exhaustive()
    }
}

impl UnaryPull {
    /// Starts pulling `subscription`; leases are renewed for at most
    /// `max_lease` after a pull.
    pub(super) fn start(
        subscription: RestSubscription,
        ordered: bool,
        max_lease: Duration,
        sizing: PullSizing,
    ) -> Self {
        let leases = Leases::default();
        let (pulled_sender, pulled) = mpsc::channel(sizing.ahead.max(1));
        let (verdicts, verdict_receiver) = mpsc::unbounded_channel();
        let puller = tokio::spawn(pull_ahead(
            subscription.clone(),
            sizing,
            pulled_sender,
            Arc::clone(&leases),
        ));
        let renewer = tokio::spawn(renew_leases(
            subscription.clone(),
            Arc::clone(&leases),
            max_lease,
        ));
        // Ends when the stream and every delivery's acknowledger are gone, so
        // verdicts given just before a shutdown are still sent.
        tokio::spawn(settle(subscription.clone(), verdict_receiver, leases));
        Self {
            subscription,
            ordered,
            attempts: Attempts::default(),
            held_keys: HeldKeys::default(),
            pulled,
            buffer: VecDeque::new(),
            verdicts,
            puller,
            renewer,
        }
    }

    /// The delivery for `received`, or `None` when it was nacked unseen (its
    /// key waits for an earlier nacked message).
    fn deliver(&mut self, received: ReceivedMessage) -> Option<Result<Delivery, BusError>> {
        let ReceivedMessage {
            ack_id,
            message,
            delivery_attempt,
        } = received;
        let ordering_key = if self.ordered {
            message.ordering_key.clone()
        } else {
            String::new()
        };
        if !self.held_keys.admit(&ordering_key, &message.message_id) {
            let _ = self.verdicts.send((ack_id, false));
            return None;
        }
        let payload = match base64::engine::general_purpose::STANDARD.decode(&message.data) {
            Ok(payload) => payload,
            Err(error) => {
                // Not from Pub/Sub; redelivery ends in its dead-letter policy.
                let _ = self.verdicts.send((ack_id, false));
                return Some(Err(BusError::Backend(format!(
                    "message {} on {} has data that is not base64: {error}",
                    message.message_id, self.subscription.name
                ))));
            }
        };
        let attempt = self.attempts.count(delivery_attempt, &message.message_id);
        let acknowledger = UnaryAcknowledger {
            ack_id: Some(ack_id),
            ordering_key,
            pubsub_message_id: message.message_id.clone(),
            held_keys: self.held_keys.clone(),
            verdicts: self.verdicts.clone(),
        };
        let wire = Message::from_wire(
            message.attributes,
            Some(message.ordering_key),
            payload,
            &message.message_id,
        );
        let mut delivery = Delivery::new(wire, attempt, Box::new(acknowledger));
        if let Some(published_at) = message.publish_time {
            delivery = delivery.with_published_at(published_at);
        }
        Some(Ok(delivery))
    }
}

#[async_trait]
impl MessageStream for UnaryPull {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if let Some(received) = self.buffer.pop_front() {
                match self.deliver(received) {
                    Some(delivery) => return Some(delivery),
                    None => continue,
                }
            }
            // Cancel-safe: a batch is either still in the channel or in the buffer.
            match self.pulled.recv().await? {
                Ok(batch) => self.buffer.extend(batch),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

impl Drop for UnaryPull {
    fn drop(&mut self) {
        self.puller.abort();
        self.renewer.abort();
        // What was pulled but never handed out goes back at once.
        self.pulled.close();
        while let Ok(batch) = self.pulled.try_recv() {
            self.buffer.extend(batch.unwrap_or_default());
        }
        for received in self.buffer.drain(..) {
            let _ = self.verdicts.send((received.ack_id, false));
        }
    }
}

/// Pulls ahead of the consumer until the stream is dropped.
async fn pull_ahead(
    subscription: RestSubscription,
    sizing: PullSizing,
    sender: mpsc::Sender<Result<Vec<ReceivedMessage>, BusError>>,
    leases: Leases,
) {
    loop {
        let pulled = tokio::select! {
            () = sender.closed() => return,
            pulled = subscription.pull(sizing.max_messages) => pulled,
        };
        match pulled {
            Ok(batch) if batch.is_empty() => {}
            Ok(batch) => {
                let ack_ids: Vec<String> = batch
                    .iter()
                    .map(|received| received.ack_id.clone())
                    .collect();
                let now = Instant::now();
                leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(ack_ids.iter().map(|id| (id.clone(), now)));
                // At once: a crash from here on returns them after LEASE rather
                // than the subscription's (longer) ack deadline.
                if sizing.lease_on_pull
                    && let Err(error) = subscription.lease(&ack_ids, LEASE).await
                {
                    tracing::warn!(subscription = %subscription.name, %error, "cannot lease pulled messages");
                }
                if sender.send(Ok(batch)).await.is_err() {
                    let _ = subscription.lease(&ack_ids, Duration::ZERO).await;
                    return;
                }
            }
            Err(error) => {
                if sender.send(Err(error)).await.is_err() {
                    return;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Renews the lease of every held message, each for at most `max_lease`
/// after it was pulled (then Pub/Sub delivers it again, as the official
/// client's maximum lease extension does).
async fn renew_leases(subscription: RestSubscription, leases: Leases, max_lease: Duration) {
    let mut ticks = tokio::time::interval(RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let held: Vec<String> = {
            let mut leases = leases.lock().unwrap_or_else(PoisonError::into_inner);
            leases.retain(|_, pulled_at| pulled_at.elapsed() < max_lease);
            leases.keys().cloned().collect()
        };
        if held.is_empty() {
            continue;
        }
        if let Err(error) = subscription.lease(&held, LEASE).await {
            tracing::warn!(subscription = %subscription.name, %error, "cannot renew leases");
        }
    }
}

/// Sends verdicts in batches: whatever has arrived while the previous
/// request was in flight goes in the next one.
async fn settle(
    subscription: RestSubscription,
    mut verdicts: mpsc::UnboundedReceiver<Verdict>,
    leases: Leases,
) {
    while let Some(first) = verdicts.recv().await {
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        let mut next = Some(first);
        while let Some((ack_id, ack)) = next {
            if ack {
                acks.push(ack_id);
            } else {
                nacks.push(ack_id);
            }
            next = if acks.len() + nacks.len() < IDS_PER_REQUEST {
                verdicts.try_recv().ok()
            } else {
                None
            };
        }
        {
            let mut leases = leases.lock().unwrap_or_else(PoisonError::into_inner);
            for ack_id in acks.iter().chain(&nacks) {
                leases.remove(ack_id);
            }
        }
        // A lost ack only means a redelivery, which every handler absorbs.
        if !acks.is_empty()
            && let Err(error) = subscription.acknowledge(&acks).await
        {
            tracing::warn!(subscription = %subscription.name, %error, count = acks.len(), "cannot acknowledge; the messages will be redelivered");
        }
        if !nacks.is_empty()
            && let Err(error) = subscription.lease(&nacks, Duration::ZERO).await
        {
            tracing::warn!(subscription = %subscription.name, %error, count = nacks.len(), "cannot nack; the messages come back when their lease lapses");
        }
    }
}

#[derive(Debug)]
struct UnaryAcknowledger {
    /// `None` once settled.
    ack_id: Option<String>,
    /// The key to hold back after a nack (empty on an unordered subscription).
    ordering_key: String,
    pubsub_message_id: String,
    held_keys: HeldKeys,
    verdicts: mpsc::UnboundedSender<Verdict>,
}

impl UnaryAcknowledger {
    fn settle(&mut self, ack: bool) {
        let Some(ack_id) = self.ack_id.take() else {
            return;
        };
        if !ack {
            self.held_keys
                .hold(&self.ordering_key, &self.pubsub_message_id);
        }
        // The settling task outlives every acknowledger; a closed channel means
        // the runtime is going away, and the lease lapses instead.
        let _ = self.verdicts.send((ack_id, ack));
    }
}

impl Acknowledger for UnaryAcknowledger {
    fn ack(mut self: Box<Self>) {
        self.settle(true);
    }

    fn nack(mut self: Box<Self>) {
        self.settle(false);
    }
}

impl Drop for UnaryAcknowledger {
    fn drop(&mut self) {
        // Dropped without a verdict (a crashed handler): redeliver, keeping key order.
        self.settle(false);
    }
}
