//! The in-process bus: queues in memory, for `tally dev` and unit tests.
//!
//! It mirrors Pub/Sub's semantics closely enough that the same conformance
//! suite passes on both: publishing to a missing topic fails; a subscription
//! only sees messages published after it exists; on an ordered subscription a
//! key's next message waits until the previous one is acked; a nacked or
//! dropped delivery goes back in publish order with its attempt count raised.
//! Unlike Pub/Sub there is no ack deadline: a delivery is outstanding until it
//! is acked, nacked or dropped. Nothing survives a restart of the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::message::Acknowledger;
use crate::{Bus, BusError, Delivery, Message, MessageStream, SubscriptionConfig};

/// An in-memory bus. Clones share the same topics and queues.
#[derive(Debug, Clone, Default)]
pub struct InProcessBus {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Topic name → subscriptions attached to it.
    topics: HashMap<String, Vec<Arc<Queue>>>,
    subscriptions: HashMap<String, Arc<Queue>>,
}

#[derive(Debug)]
struct Queue {
    config: SubscriptionConfig,
    state: Mutex<QueueState>,
    changed: Notify,
    /// Numbers the streams (key affinity).
    next_stream: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    next_sequence: u64,
    /// Waiting messages, kept in publish (sequence) order.
    pending: VecDeque<Entry>,
    in_flight: HashMap<u64, Entry>,
    /// Ordering keys with deliveries outstanding, the stream holding them
    /// and how many (ordered subscriptions only).
    key_owners: HashMap<String, KeyOwner>,
}

#[derive(Debug, Clone, Copy)]
struct KeyOwner {
    stream: u64,
    outstanding: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    attempts: u32,
    /// When it was published (kept on redelivery, like Pub/Sub's publish time).
    published_at: chrono::DateTime<chrono::Utc>,
    message: Message,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Queue {
    fn enqueue(&self, message: Message) {
        let mut state = lock(&self.state);
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.pending.push_back(Entry {
            sequence,
            attempts: 0,
            published_at: chrono::Utc::now(),
            message,
        });
        drop(state);
        self.changed.notify_waiters();
    }

    /// Takes the first message `stream` may have, if any: unordered, or of
    /// a key no other stream holds (pending is in publish order, so this is
    /// the key's earliest waiting message).
    fn take(self: &Arc<Self>, stream: u64) -> Option<Delivery> {
        let mut state = lock(&self.state);
        let ordered = self.config.ordered;
        let position =
            state
                .pending
                .iter()
                .position(|entry| match &entry.message.ordering_key {
                    Some(key) if ordered => state
                        .key_owners
                        .get(key)
                        .is_none_or(|owner| owner.stream == stream),
                    _ => true,
                })?;
        let mut entry = state.pending.remove(position)?;
        entry.attempts += 1;
        if ordered && let Some(key) = &entry.message.ordering_key {
            state
                .key_owners
                .entry(key.clone())
                .or_insert(KeyOwner {
                    stream,
                    outstanding: 0,
                })
                .outstanding += 1;
        }
        let delivery = Delivery::new(
            entry.message.clone(),
            entry.attempts,
            Box::new(InProcessAcknowledger {
                queue: Arc::clone(self),
                delivery: Some((entry.sequence, entry.attempts)),
            }),
        )
        .with_published_at(entry.published_at);
        state.in_flight.insert(entry.sequence, entry);
        Some(delivery)
    }

    /// Settles delivery `attempt` of message `sequence`. A delivery that was
    /// requeued with an earlier message of its key (and maybe delivered
    /// again since) is no longer this one: its verdict is ignored.
    fn settle(&self, (sequence, attempt): (u64, u32), redeliver: bool) {
        let mut state = lock(&self.state);
        if state
            .in_flight
            .get(&sequence)
            .is_none_or(|entry| entry.attempts != attempt)
        {
            return;
        }
        let Some(entry) = state.in_flight.remove(&sequence) else {
            return;
        };
        let mut requeued = Vec::new();
        if redeliver {
            // The key's later messages still outstanding go back too, so
            // nothing of the key overtakes the redelivered one.
            if self.config.ordered
                && let Some(key) = &entry.message.ordering_key
            {
                let later: Vec<u64> = state
                    .in_flight
                    .values()
                    .filter(|other| {
                        other.sequence > sequence
                            && other.message.ordering_key.as_ref() == Some(key)
                    })
                    .map(|other| other.sequence)
                    .collect();
                for later in later {
                    if let Some(other) = state.in_flight.remove(&later) {
                        requeued.push(other);
                    }
                }
            }
            requeued.push(entry.clone());
        }
        if self.config.ordered
            && let Some(key) = &entry.message.ordering_key
        {
            // Requeued deliveries are settled too (the nacked one is among them).
            let settled = if redeliver { requeued.len() } else { 1 };
            if let Some(owner) = state.key_owners.get_mut(key) {
                owner.outstanding = owner.outstanding.saturating_sub(settled);
                if owner.outstanding == 0 {
                    state.key_owners.remove(key);
                }
            }
        }
        for entry in requeued {
            // Back in publish order, so the key's later messages still wait behind it.
            let position = state
                .pending
                .partition_point(|waiting| waiting.sequence < entry.sequence);
            state.pending.insert(position, entry);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

#[derive(Debug)]
struct InProcessAcknowledger {
    queue: Arc<Queue>,
    /// The message's sequence and the delivery's attempt; `None` once settled.
    delivery: Option<(u64, u32)>,
}

impl Acknowledger for InProcessAcknowledger {
    fn ack(mut self: Box<Self>) {
        if let Some(delivery) = self.delivery.take() {
            self.queue.settle(delivery, false);
        }
    }

    fn nack(mut self: Box<Self>) {
        if let Some(delivery) = self.delivery.take() {
            self.queue.settle(delivery, true);
        }
    }
}

impl Drop for InProcessAcknowledger {
    fn drop(&mut self) {
        // A delivery dropped without a verdict (a crashed handler) is redelivered.
        if let Some(delivery) = self.delivery.take() {
            self.queue.settle(delivery, true);
        }
    }
}

#[derive(Debug)]
struct InProcessStream {
    queue: Arc<Queue>,
    /// This stream's number (key affinity).
    id: u64,
}

#[async_trait]
impl MessageStream for InProcessStream {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(delivery) = self.queue.take(self.id) {
                return Some(Ok(delivery));
            }
            changed.await;
        }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        lock(&self.registry)
            .topics
            .entry(topic.to_owned())
            .or_default();
        Ok(())
    }

    async fn ensure_subscription(&self, config: &SubscriptionConfig) -> Result<(), BusError> {
        let mut registry = lock(&self.registry);
        registry
            .topics
            .entry(config.dead_letter_topic.clone())
            .or_default();
        if registry.subscriptions.contains_key(&config.name) {
            return Ok(());
        }
        let queue = Arc::new(Queue {
            config: config.clone(),
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            next_stream: std::sync::atomic::AtomicU64::new(0),
        });
        registry
            .topics
            .get_mut(&config.topic)
            .ok_or_else(|| BusError::TopicNotFound(config.topic.clone()))?
            .push(Arc::clone(&queue));
        registry.subscriptions.insert(config.name.clone(), queue);
        Ok(())
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let queues = lock(&self.registry)
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| BusError::TopicNotFound(topic.to_owned()))?;
        for queue in queues {
            queue.enqueue(message.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError> {
        let queue = lock(&self.registry)
            .subscriptions
            .get(subscription)
            .cloned()
            .ok_or_else(|| BusError::SubscriptionNotFound(subscription.to_owned()))?;
        let id = queue
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(crate::age::track(
            subscription,
            Box::new(InProcessStream { queue, id }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, number: u32) -> Message {
        Message::new("test", 1, number.to_le_bytes().to_vec()).with_ordering_key(key)
    }

    fn number(delivery: &Delivery) -> u32 {
        u32::from_le_bytes(delivery.message.payload.as_slice().try_into().unwrap())
    }

    async fn ordered_bus() -> InProcessBus {
        let bus = InProcessBus::new();
        bus.ensure_topic("t").await.unwrap();
        bus.ensure_subscription(&SubscriptionConfig::ordered("s", "t"))
            .await
            .unwrap();
        for n in 0..4 {
            bus.publish("t", message("k", n)).await.unwrap();
        }
        bus.publish("t", message("other", 9)).await.unwrap();
        bus
    }

    #[tokio::test]
    async fn a_stream_holds_several_messages_of_a_key_and_no_other_stream_gets_it() {
        let bus = ordered_bus().await;
        let mut first = bus.subscribe("s").await.unwrap();
        let mut second = bus.subscribe("s").await.unwrap();
        let a = first.next().await.unwrap().unwrap();
        let b = first.next().await.unwrap().unwrap();
        assert_eq!((number(&a), number(&b)), (0, 1));
        // The second stream skips the key the first holds.
        let other = second.next().await.unwrap().unwrap();
        assert_eq!(number(&other), 9);
        other.ack();
        // A nack of the first sends the key's later outstanding message back
        // too; the stale delivery's ack is ignored.
        a.nack();
        b.ack();
        let again: Vec<u32> = [
            second.next().await.unwrap().unwrap(),
            second.next().await.unwrap().unwrap(),
            second.next().await.unwrap().unwrap(),
            second.next().await.unwrap().unwrap(),
        ]
        .iter()
        .map(number)
        .collect();
        assert_eq!(again, vec![0, 1, 2, 3]);
    }
}
