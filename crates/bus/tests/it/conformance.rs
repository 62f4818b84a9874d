//! One suite, two backends: every test below runs against the in-process bus
//! and against the real Pub/Sub emulator (see `conformance_suite!`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::support::{WAIT, next, numbered};
use tally_bus::consumer::{Consumer, HandlerError, MessageHandler, Verdict};
use tally_bus::message::{
    ATTRIBUTE_DEAD_LETTER_ATTEMPTS, ATTRIBUTE_DEAD_LETTER_REASON,
    ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION,
};
use tally_bus::{InProcessBus, Message, PubSubBus, PullMode, SharedBus, SubscriptionConfig};

/// A backend under test: the bus, and a second, independent connection to
/// the same topics (another process, as far as the backend can tell).
pub struct Backend {
    pub bus: SharedBus,
    pub other_connection: SharedBus,
    /// Whether dropping a delivery and its stream in-process is a faithful
    /// crash. It is not for Pub/Sub: the client's lease task outlives the
    /// dropped stream inside a test process and may keep the message leased.
    pub drop_simulates_crash: bool,
}

pub async fn in_process() -> Backend {
    let bus = Arc::new(InProcessBus::new());
    Backend {
        other_connection: bus.clone(),
        bus,
        drop_simulates_crash: true,
    }
}

/// The emulator as Tally consumes it: unary Pull.
pub async fn pubsub() -> Backend {
    pubsub_with(PullMode::Unary).await
}

/// The emulator through StreamingPull, the path Google Cloud takes.
pub async fn pubsub_streaming() -> Backend {
    pubsub_with(PullMode::Streaming).await
}

async fn pubsub_with(mode: PullMode) -> Backend {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    let connect = || async {
        let mut bus = PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(Duration::from_secs(10));
        if mode == PullMode::Streaming {
            bus = bus.with_streaming_pull();
        }
        assert_eq!(bus.pull_mode(), mode);
        Arc::new(bus) as SharedBus
    };
    Backend {
        bus: connect().await,
        other_connection: connect().await,
        // A unary pull holds nothing once its stream is dropped; the official
        // client's lease task outlives a dropped stream in a test process.
        drop_simulates_crash: mode == PullMode::Unary,
    }
}

async fn setup(bus: &SharedBus, max_attempts: u32) -> SubscriptionConfig {
    bus.ensure_topic("orders").await.unwrap();
    let config = SubscriptionConfig::ordered("orders-sub", "orders")
        .with_max_delivery_attempts(max_attempts)
        .with_ack_deadline(Duration::from_secs(10));
    bus.ensure_subscription(&config).await.unwrap();
    // Creating twice is fine (dev and tests call it on every start).
    bus.ensure_subscription(&config).await.unwrap();
    config
}

fn parse(message: &Message) -> (String, usize) {
    let text = String::from_utf8(message.payload.clone()).unwrap();
    let (key, number) = text.split_once(':').unwrap();
    (key.to_owned(), number.parse().unwrap())
}

pub async fn attributes_and_trace_context_round_trip(backend: Backend) {
    let bus = backend.bus;
    tally_runtime::telemetry::install_propagator();
    let config = setup(&bus, 5).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let sent = Message::new(
        "tally.events.v1.UsageAccepted",
        3,
        vec![0, 159, 146, 150, 255],
    )
    .with_ordering_key("cus_42")
    .with_attribute("content-type", "application/x-protobuf")
    .with_attribute("traceparent", traceparent);
    bus.publish("orders", sent.clone()).await.unwrap();

    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let delivery = next(&mut stream).await;
    assert_eq!(
        delivery.message, sent,
        "id, type, version, key, attributes and bytes survive"
    );
    assert_eq!(delivery.delivery_attempt, 1);
    let context = tally_runtime::telemetry::extract_context(&delivery.message.attributes);
    use opentelemetry::trace::TraceContextExt;
    assert_eq!(
        context.span().span_context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    delivery.ack();
}

pub async fn publishing_to_a_missing_topic_fails(backend: Backend) {
    let bus = backend.bus;
    let error = bus
        .publish("no-such-topic", numbered("k", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(error, tally_bus::BusError::TopicNotFound(_)),
        "{error}"
    );
}

pub async fn per_key_order_survives_a_nack(backend: Backend) {
    let bus = backend.bus;
    let config = setup(&bus, 10).await;
    let keys = ["cus_a", "cus_b", "cus_c"];
    for number in 0..15 {
        for key in keys {
            bus.publish("orders", numbered(key, number)).await.unwrap();
        }
    }
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let mut acked: HashMap<String, Vec<usize>> = HashMap::new();
    let mut nacked_once = false;
    while acked.values().map(Vec::len).sum::<usize>() < 45 {
        let delivery = next(&mut stream).await;
        let (key, number) = parse(&delivery.message);
        if key == "cus_b" && number == 5 && !nacked_once {
            nacked_once = true;
            delivery.nack();
            continue;
        }
        let seen = acked.entry(key.clone()).or_default();
        if seen.last().is_some_and(|last| *last >= number) {
            // A redelivery of something already acked (allowed: at-least-once).
            delivery.ack();
            continue;
        }
        assert_eq!(
            seen.len(),
            number,
            "key {key} got {number} out of order after {seen:?}"
        );
        seen.push(number);
        delivery.ack();
    }
    assert!(nacked_once);
    for key in keys {
        assert_eq!(acked[key], (0..15).collect::<Vec<_>>());
    }
}

pub async fn a_crashed_consumer_means_redelivery(backend: Backend) {
    let bus = backend.bus;
    bus.ensure_topic("orders").await.unwrap();
    // Unordered: the Pub/Sub emulator redelivers a crashed consumer's message of
    // an *ordered* subscription only after an unpredictable delay (seen: 0.1 s to
    // over 30 s). Order across redelivery is covered by per_key_order_survives_a_nack.
    let mut config = SubscriptionConfig::ordered("orders-unordered-sub", "orders");
    config.ordered = false;
    bus.ensure_subscription(&config).await.unwrap();
    let sent = numbered("cus_1", 1);
    bus.publish("orders", sent.clone()).await.unwrap();
    {
        // The crashed consumer is another process: its own client and connection.
        let crashed_process = backend.other_connection;
        let mut crashed = crashed_process.subscribe(&config.name).await.unwrap();
        let delivery = next(&mut crashed).await;
        assert_eq!(delivery.message.id, sent.id);
        if backend.drop_simulates_crash {
            // Dropped without ack or nack, with its stream: a crash mid-message.
            drop(delivery);
        } else {
            // A consumer that gives up on the message as it stops.
            delivery.nack();
        }
        drop(crashed);
        drop(crashed_process);
    }
    let mut survivor = bus.subscribe(&config.name).await.unwrap();
    let delivery = next(&mut survivor).await;
    assert_eq!(delivery.message.id, sent.id, "the same message comes back");
    assert!(
        delivery.delivery_attempt >= 2,
        "attempt {}",
        delivery.delivery_attempt
    );
    delivery.ack();
}

struct AlwaysFails {
    poison: bool,
    attempts_seen: Mutex<Vec<u32>>,
}

#[async_trait]
impl MessageHandler for AlwaysFails {
    async fn handle(&self, _message: &Message, delivery_attempt: u32) -> Result<(), HandlerError> {
        self.attempts_seen.lock().unwrap().push(delivery_attempt);
        if self.poison {
            Err(HandlerError::Poison("payload is not a UsageEvent".into()))
        } else {
            Err(HandlerError::Retry("database unavailable".into()))
        }
    }
}

pub async fn a_failing_message_is_dead_lettered_after_the_limit(backend: Backend) {
    let bus = backend.bus;
    let config = setup(&bus, 5).await;
    let dead_letters =
        SubscriptionConfig::ordered("orders-dead-letter-sub", config.dead_letter_topic.clone());
    bus.ensure_subscription(&dead_letters).await.unwrap();
    let sent = numbered("cus_9", 1);
    bus.publish("orders", sent.clone()).await.unwrap();

    let handler = Arc::new(AlwaysFails {
        poison: false,
        attempts_seen: Mutex::new(Vec::new()),
    });
    let consumer = Consumer::new(Arc::clone(&bus), config.clone(), handler.clone());
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let mut verdicts = Vec::new();
    while verdicts.last() != Some(&Verdict::DeadLettered) {
        let delivery = next(&mut stream).await;
        verdicts.push(consumer.process(delivery).await);
        assert!(
            verdicts.len() <= 5,
            "dead-lettered after at most 5 deliveries: {verdicts:?}"
        );
    }
    assert_eq!(verdicts.len(), 5);
    assert_eq!(*handler.attempts_seen.lock().unwrap(), vec![1, 2, 3, 4, 5]);

    let mut dead = bus.subscribe(&dead_letters.name).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.message.id, sent.id);
    assert_eq!(letter.message.payload, sent.payload);
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON],
        "database unavailable"
    );
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION],
        config.name
    );
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_ATTEMPTS],
        "5"
    );
    letter.ack();
}

pub async fn a_poison_message_is_dead_lettered_at_once(backend: Backend) {
    let bus = backend.bus;
    let config = setup(&bus, 5).await;
    let dead_letters =
        SubscriptionConfig::ordered("orders-dead-letter-sub", config.dead_letter_topic.clone());
    bus.ensure_subscription(&dead_letters).await.unwrap();
    bus.publish("orders", numbered("cus_p", 1)).await.unwrap();
    bus.publish("orders", numbered("cus_p", 2)).await.unwrap();

    let handler = Arc::new(AlwaysFails {
        poison: true,
        attempts_seen: Mutex::new(Vec::new()),
    });
    let consumer = Consumer::new(Arc::clone(&bus), config.clone(), handler);
    let mut stream = bus.subscribe(&config.name).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(parse(&first.message).1, 1);
    assert_eq!(consumer.process(first).await, Verdict::DeadLettered);
    let second = next(&mut stream).await;
    assert_eq!(
        parse(&second.message).1,
        2,
        "the key moves on after a dead letter"
    );
    second.ack();
    let mut dead = bus.subscribe(&dead_letters.name).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON],
        "payload is not a UsageEvent"
    );
    letter.ack();
}

pub async fn many_publishers_and_subscribers(backend: Backend) {
    let bus = backend.bus;
    let config = setup(&bus, 10).await;
    let publishers = 4;
    let per_publisher = 40;
    let total = publishers * per_publisher;

    let log: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let mut stream = bus.subscribe(&config.name).await.unwrap();
        let log = Arc::clone(&log);
        consumers.push(tokio::spawn(async move {
            loop {
                let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(Duration::from_secs(3), stream.next()).await
                else {
                    return;
                };
                log.lock().unwrap().push(parse(&delivery.message));
                delivery.ack();
            }
        }));
    }
    let mut producers = Vec::new();
    for publisher in 0..publishers {
        let bus = Arc::clone(&bus);
        producers.push(tokio::spawn(async move {
            let key = format!("cus_{publisher}");
            for number in 0..per_publisher {
                bus.publish("orders", numbered(&key, number)).await.unwrap();
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let distinct: HashSet<(String, usize)> = log.lock().unwrap().iter().cloned().collect();
        if distinct.len() == total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {total} arrived",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for consumer in consumers {
        consumer.abort();
    }
    // Per key, the first time each message was handled follows publish order.
    let log = log.lock().unwrap().clone();
    let mut first_seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut seen = HashSet::new();
    for (key, number) in log {
        if seen.insert((key.clone(), number)) {
            first_seen.entry(key).or_default().push(number);
        }
    }
    for (key, numbers) in first_seen {
        assert_eq!(
            numbers,
            (0..per_publisher).collect::<Vec<_>>(),
            "order of {key}"
        );
    }
}

/// `publish_all` keeps each key's order, and a stream opened with
/// `subscribe_with_flow` delivers everything (pulls sized to the bound).
pub async fn publish_all_keeps_each_keys_order(backend: Backend) {
    let bus = backend.bus;
    let config = setup(&bus, 5).await;
    let keys = ["cus_a", "cus_b", "cus_c"];
    let messages: Vec<Message> = (0..200)
        .flat_map(|number| keys.map(|key| numbered(key, number)))
        .collect();
    let results = bus.publish_all("orders", messages).await;
    assert_eq!(results.len(), 600);
    assert!(results.iter().all(Result::is_ok));
    let mut stream = bus.subscribe_with_flow(&config.name, 250).await.unwrap();
    let mut acked: HashMap<String, Vec<usize>> = HashMap::new();
    while acked.values().map(Vec::len).sum::<usize>() < 600 {
        let delivery = next(&mut stream).await;
        let (key, number) = parse(&delivery.message);
        let seen = acked.entry(key.clone()).or_default();
        if seen.last().is_some_and(|last| *last >= number) {
            delivery.ack();
            continue;
        }
        assert_eq!(seen.len(), number, "key {key} got {number} after {seen:?}");
        seen.push(number);
        delivery.ack();
    }
}

macro_rules! conformance_suite {
    ($backend:ident $(, $extra:ident)*) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::$name(super::$backend().await).await;
                    }
                };
            }
            case!(attributes_and_trace_context_round_trip);
            case!(publishing_to_a_missing_topic_fails);
            case!(per_key_order_survives_a_nack);
            case!(publish_all_keeps_each_keys_order);
            $(case!($extra);)*
            case!(a_failing_message_is_dead_lettered_after_the_limit);
            case!(a_poison_message_is_dead_lettered_at_once);
            case!(many_publishers_and_subscribers);
        }
    };
}

conformance_suite!(in_process, a_crashed_consumer_means_redelivery);
conformance_suite!(pubsub, a_crashed_consumer_means_redelivery);
// Through StreamingPull a message left by a consumer on a second connection
// comes back to a new stream anywhere between 0.1 s and never within 30 s on
// the emulator (the client's lease task outlives the dropped stream in a test
// process, and the emulator keeps feeding dead streams), so the crash case is
// left out; redelivery after a nack is covered by the ordering and
// dead-letter cases. The SIGKILL crash tests (crates/cli/tests/e2e/crash.rs)
// use unary Pull, as Tally does on the emulator.
conformance_suite!(pubsub_streaming);
