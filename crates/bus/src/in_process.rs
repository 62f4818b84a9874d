//! The in-process bus: queues in memory, for `tally dev` and unit tests.
//!
//! It mirrors Pub/Sub's semantics closely enough that the same conformance
//! suite passes on both: publishing to a missing topic fails; a subscription
//! only sees messages published after it exists; on an ordered subscription a
//! key's next message waits until the previous one is acked; a nacked or
//! dropped delivery goes back in publish order with its attempt count raised.
//! Unlike Pub/Sub there is no ack deadline: a delivery is outstanding until it
//! is acked, nacked or dropped. Nothing survives a restart of the process.

use std::collections::{HashMap, HashSet, VecDeque};
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
}

#[derive(Debug, Default)]
struct QueueState {
    next_sequence: u64,
    /// Waiting messages, kept in publish (sequence) order.
    pending: VecDeque<Entry>,
    in_flight: HashMap<u64, Entry>,
    /// Ordering keys with a delivery outstanding (ordered subscriptions only).
    busy_keys: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    attempts: u32,
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
            message,
        });
        drop(state);
        self.changed.notify_waiters();
    }

    /// Takes the first deliverable message, if any.
    fn take(self: &Arc<Self>) -> Option<Delivery> {
        let mut state = lock(&self.state);
        let ordered = self.config.ordered;
        let position =
            state
                .pending
                .iter()
                .position(|entry| match &entry.message.ordering_key {
                    Some(key) if ordered => !state.busy_keys.contains(key),
                    _ => true,
                })?;
        let mut entry = state.pending.remove(position)?;
        entry.attempts += 1;
        if ordered && let Some(key) = &entry.message.ordering_key {
            state.busy_keys.insert(key.clone());
        }
        let delivery = Delivery::new(
            entry.message.clone(),
            entry.attempts,
            Box::new(InProcessAcknowledger {
                queue: Arc::clone(self),
                sequence: Some(entry.sequence),
            }),
        );
        state.in_flight.insert(entry.sequence, entry);
        Some(delivery)
    }

    fn settle(&self, sequence: u64, redeliver: bool) {
        let mut state = lock(&self.state);
        let Some(entry) = state.in_flight.remove(&sequence) else {
            return;
        };
        if let Some(key) = &entry.message.ordering_key {
            state.busy_keys.remove(key);
        }
        if redeliver {
            // Back in publish order, so the key's later messages still wait behind it.
            let position = state
                .pending
                .partition_point(|waiting| waiting.sequence < sequence);
            state.pending.insert(position, entry);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

#[derive(Debug)]
struct InProcessAcknowledger {
    queue: Arc<Queue>,
    /// `None` once settled.
    sequence: Option<u64>,
}

impl Acknowledger for InProcessAcknowledger {
    fn ack(mut self: Box<Self>) {
        if let Some(sequence) = self.sequence.take() {
            self.queue.settle(sequence, false);
        }
    }

    fn nack(mut self: Box<Self>) {
        if let Some(sequence) = self.sequence.take() {
            self.queue.settle(sequence, true);
        }
    }
}

impl Drop for InProcessAcknowledger {
    fn drop(&mut self) {
        // A delivery dropped without a verdict (a crashed handler) is redelivered.
        if let Some(sequence) = self.sequence.take() {
            self.queue.settle(sequence, true);
        }
    }
}

#[derive(Debug)]
struct InProcessStream {
    queue: Arc<Queue>,
}

#[async_trait]
impl MessageStream for InProcessStream {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(delivery) = self.queue.take() {
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
        Ok(Box::new(InProcessStream { queue }))
    }
}
