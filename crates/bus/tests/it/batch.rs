//! The batch consumer (`tally_bus::batch`) on the in-process bus and on the
//! Pub/Sub emulator (unary Pull and StreamingPull): a batch is handled in one
//! call and acked after it; poison is dead-lettered while the rest commits; a
//! failed batch is retried message by message; a crashed consumer's batch
//! comes back to the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tally_bus::batch::{BatchConsumer, BatchHandler, BatchSettings, Lanes};
use tally_bus::consumer::{HandlerError, Verdict};
use tally_bus::message::{
    ATTRIBUTE_DEAD_LETTER_ATTEMPTS, ATTRIBUTE_DEAD_LETTER_REASON,
    ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION,
};
use tally_bus::{Delivery, Message, MessageStream, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;

use crate::conformance::Backend;
use crate::support::{WAIT, next, numbered};

/// Records what it commits. A payload `poison:*` does not decode; an item in
/// `unlucky` makes every batch holding it fail; with `hold`, every batch
/// waits forever (a consumer about to crash).
#[derive(Default)]
struct Recorder {
    unlucky: BTreeSet<String>,
    hold: bool,
    /// Each call's items, committed or not.
    calls: Mutex<Vec<Vec<String>>>,
    /// Items committed, in commit order.
    committed: Mutex<Vec<String>>,
    dead_lettered: Mutex<Vec<String>>,
}

#[async_trait]
impl BatchHandler for Recorder {
    type Item = String;

    fn decode(&self, message: &Message) -> Result<String, String> {
        let text = String::from_utf8(message.payload.clone()).map_err(|e| e.to_string())?;
        if text.starts_with("poison:") {
            return Err(format!("{text} is not a Numbered"));
        }
        Ok(text)
    }

    async fn handle(&self, items: Vec<String>) -> Result<(), HandlerError> {
        self.calls.lock().unwrap().push(items.clone());
        if self.hold {
            std::future::pending::<()>().await;
        }
        if let Some(item) = items.iter().find(|item| self.unlucky.contains(*item)) {
            return Err(HandlerError::Retry(format!("{item} cannot be stored")));
        }
        self.committed.lock().unwrap().extend(items);
        Ok(())
    }

    fn dead_lettered(&self, message: &Message) {
        self.dead_lettered.lock().unwrap().push(message.id.clone());
    }
}

/// An unordered subscription on `batch-orders` (5 attempts) and one on its
/// dead-letter topic.
async fn setup(bus: &SharedBus) -> (SubscriptionConfig, SubscriptionConfig) {
    bus.ensure_topic("batch-orders").await.unwrap();
    let config = SubscriptionConfig::unordered("batch-sub", "batch-orders")
        .with_max_delivery_attempts(5)
        .with_ack_deadline(Duration::from_secs(10));
    bus.ensure_subscription(&config).await.unwrap();
    let dead_letters =
        SubscriptionConfig::unordered("batch-dead-letter-sub", config.dead_letter_topic.clone());
    bus.ensure_subscription(&dead_letters).await.unwrap();
    (config, dead_letters)
}

/// Publishes `messages` (each key its own, so the in-process bus hands them all out at once).
async fn publish(bus: &SharedBus, messages: &[Message]) {
    for message in messages {
        bus.publish("batch-orders", message.clone()).await.unwrap();
    }
}

/// Receives `count` deliveries.
async fn receive(stream: &mut Box<dyn MessageStream>, count: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(count);
    while deliveries.len() < count {
        deliveries.push(next(stream).await);
    }
    deliveries
}

fn consumer(
    bus: &SharedBus,
    config: &SubscriptionConfig,
    handler: &Arc<Recorder>,
    lanes: Lanes,
) -> BatchConsumer<Arc<Recorder>> {
    BatchConsumer::new(
        Arc::clone(bus),
        config.clone(),
        BatchSettings::new(100, 2, lanes),
        Arc::clone(handler),
    )
}

fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|delivery| String::from_utf8(delivery.message.payload.clone()).unwrap())
        .collect()
}

/// `Acked` for every payload of `order` but `other`, which gets `verdict`.
fn acked_but(order: &[String], other: &str, verdict: Verdict) -> Vec<Verdict> {
    order
        .iter()
        .map(|payload| {
            if payload == other {
                verdict
            } else {
                Verdict::Acked
            }
        })
        .collect()
}

pub async fn a_batch_is_handled_in_one_call_and_acked_after_it(backend: Backend) {
    let bus = backend.bus;
    let (config, _) = setup(&bus).await;
    let sent: Vec<Message> = (0..12).map(|n| numbered(&format!("cus_{n}"), n)).collect();
    publish(&bus, &sent).await;
    let handler = Arc::new(Recorder::default());
    let consumer = consumer(&bus, &config, &handler, Lanes::Shared);
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let deliveries = receive(&mut stream, sent.len()).await;
    let order = payloads(&deliveries);

    let verdicts = consumer.process(deliveries).await;
    assert_eq!(verdicts, vec![Verdict::Acked; sent.len()]);
    assert_eq!(
        *handler.calls.lock().unwrap(),
        std::slice::from_ref(&order),
        "one call with the whole batch, in delivery order"
    );
    assert_eq!(*handler.committed.lock().unwrap(), order);
    assert!(handler.dead_lettered.lock().unwrap().is_empty());
}

pub async fn a_poison_message_is_dead_lettered_while_the_others_commit(backend: Backend) {
    let bus = backend.bus;
    let (config, dead_letters) = setup(&bus).await;
    let mut sent: Vec<Message> = (0..4).map(|n| numbered(&format!("cus_{n}"), n)).collect();
    let poison = Message::new("tally.test.v1.Numbered", 1, b"poison:7".to_vec())
        .with_ordering_key("cus_poison");
    sent.insert(2, poison.clone());
    publish(&bus, &sent).await;
    let handler = Arc::new(Recorder::default());
    let consumer = consumer(&bus, &config, &handler, Lanes::Shared);
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let deliveries = receive(&mut stream, sent.len()).await;
    let order = payloads(&deliveries);

    let verdicts = consumer.process(deliveries).await;
    assert_eq!(
        verdicts,
        acked_but(&order, "poison:7", Verdict::DeadLettered)
    );
    let healthy: Vec<String> = order.into_iter().filter(|p| p != "poison:7").collect();
    assert_eq!(
        *handler.calls.lock().unwrap(),
        std::slice::from_ref(&healthy),
        "one call"
    );
    assert_eq!(*handler.committed.lock().unwrap(), healthy);
    assert_eq!(
        *handler.dead_lettered.lock().unwrap(),
        std::slice::from_ref(&poison.id)
    );

    let mut dead = bus.subscribe(&dead_letters.name).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.message.id, poison.id);
    assert_eq!(letter.message.payload, poison.payload);
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON],
        "poison:7 is not a Numbered"
    );
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION],
        config.name
    );
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_ATTEMPTS],
        "1"
    );
    letter.ack();
}

pub async fn a_failed_batch_is_retried_one_by_one_and_the_unlucky_one_dead_lettered(
    backend: Backend,
) {
    let bus = backend.bus;
    let (config, dead_letters) = setup(&bus).await;
    let sent: Vec<Message> = (0..5).map(|n| numbered(&format!("cus_{n}"), n)).collect();
    publish(&bus, &sent).await;
    let handler = Arc::new(Recorder {
        unlucky: BTreeSet::from(["cus_3:3".to_owned()]),
        ..Recorder::default()
    });
    let consumer = consumer(&bus, &config, &handler, Lanes::Shared);
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let deliveries = receive(&mut stream, sent.len()).await;
    let order = payloads(&deliveries);

    let verdicts = consumer.process(deliveries).await;
    assert_eq!(verdicts, acked_but(&order, "cus_3:3", Verdict::Retried));
    let mut calls = vec![order.clone()];
    calls.extend(order.iter().map(|payload| vec![payload.clone()]));
    assert_eq!(
        *handler.calls.lock().unwrap(),
        calls,
        "the batch, then each message alone"
    );
    let healthy: Vec<String> = order.into_iter().filter(|p| p != "cus_3:3").collect();
    assert_eq!(*handler.committed.lock().unwrap(), healthy);

    // The unlucky one comes back alone until its fifth delivery, then is dead-lettered.
    let mut verdicts = vec![Verdict::Retried];
    while verdicts.last() == Some(&Verdict::Retried) {
        let delivery = next(&mut stream).await;
        assert_eq!(
            delivery.message.id, sent[3].id,
            "only the unlucky one is redelivered"
        );
        let attempt = delivery.delivery_attempt;
        verdicts.extend(consumer.process(vec![delivery]).await);
        assert!(attempt <= 5, "dead-lettered at attempt 5: {verdicts:?}");
    }
    assert_eq!(verdicts.last(), Some(&Verdict::DeadLettered));
    assert_eq!(
        *handler.dead_lettered.lock().unwrap(),
        std::slice::from_ref(&sent[3].id)
    );
    let mut dead = bus.subscribe(&dead_letters.name).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.message.id, sent[3].id);
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON],
        "cus_3:3 cannot be stored"
    );
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_ATTEMPTS],
        "5"
    );
    letter.ack();
}

/// A consumer (another process) takes a batch and dies before its commit;
/// the next consumer — running, in lanes by ordering key — gets everything,
/// and each message is committed once.
pub async fn a_crashed_consumers_batch_is_redelivered(backend: Backend) {
    let bus = backend.bus;
    let (config, _) = setup(&bus).await;
    let sent: Vec<Message> = (0..10)
        .map(|n| numbered(&format!("cus_{}", n % 4), n))
        .collect();
    publish(&bus, &sent).await;
    let doomed = Arc::new(Recorder {
        hold: true,
        ..Recorder::default()
    });
    {
        let crashed_process = backend.other_connection;
        let crashed = consumer(&crashed_process, &config, &doomed, Lanes::Shared);
        let running = tokio::spawn(async move { crashed.run(Shutdown::new()).await });
        let deadline = tokio::time::Instant::now() + WAIT;
        while doomed.calls.lock().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the doomed consumer got no batch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Killed mid-batch: its tasks, its deliveries and its connection go.
        running.abort();
        let _ = running.await;
        drop(crashed_process);
    }
    let held: Vec<String> = doomed.calls.lock().unwrap().concat();
    assert!(!held.is_empty());

    let survivor = Arc::new(Recorder::default());
    let stop = Shutdown::new();
    let running = {
        let consumer = consumer(&bus, &config, &survivor, Lanes::ByOrderingKey);
        let stop = stop.clone();
        tokio::spawn(async move { consumer.run(stop).await })
    };
    // Generous: Pub/Sub gives a crashed consumer's messages back after their lease.
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    let all: BTreeSet<String> = sent
        .iter()
        .map(|message| String::from_utf8(message.payload.clone()).unwrap())
        .collect();
    loop {
        let committed: BTreeSet<String> =
            survivor.committed.lock().unwrap().iter().cloned().collect();
        if committed == all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {committed:?} of {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.trigger();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the consumer stops")
        .unwrap()
        .unwrap();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for item in survivor.committed.lock().unwrap().iter() {
        *times.entry(item.clone()).or_default() += 1;
    }
    assert!(
        times.values().all(|count| *count == 1),
        "each committed once: {times:?}"
    );
    assert!(doomed.committed.lock().unwrap().is_empty());
}

macro_rules! batch_suite {
    ($backend:ident $(, $extra:ident)*) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::$name(crate::conformance::$backend().await).await;
                    }
                };
            }
            case!(a_batch_is_handled_in_one_call_and_acked_after_it);
            case!(a_poison_message_is_dead_lettered_while_the_others_commit);
            case!(a_failed_batch_is_retried_one_by_one_and_the_unlucky_one_dead_lettered);
            $(case!($extra);)*
        }
    };
}

batch_suite!(in_process, a_crashed_consumers_batch_is_redelivered);
batch_suite!(pubsub, a_crashed_consumers_batch_is_redelivered);
// StreamingPull: no crash case, for the reason given in conformance.rs.
batch_suite!(pubsub_streaming);
