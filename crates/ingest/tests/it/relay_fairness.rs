//! Fairness of the hand-off to rating: one customer's big batch does not hold
//! back the usage of the others on its way to `usage-accepted`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tally_bus::{Bus, BusError, Message, MessageStream, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;
use tally_runtime::config::IngestConfig;
use tokio::sync::watch;

use crate::support::*;

/// A bus on which every publish of one customer's events waits until the
/// gate opens: a publish to a slow Pub/Sub, held for as long as the test likes.
#[derive(Debug)]
struct Gated {
    inner: SharedBus,
    held_customer: String,
    open: watch::Receiver<bool>,
    /// Publishes waiting at the gate now.
    waiting: Arc<AtomicUsize>,
}

#[async_trait]
impl Bus for Gated {
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        self.inner.ensure_topic(topic).await
    }
    async fn ensure_subscription(&self, config: &SubscriptionConfig) -> Result<(), BusError> {
        self.inner.ensure_subscription(config).await
    }
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        if message.ordering_key.as_deref() == Some(self.held_customer.as_str()) {
            let mut open = self.open.clone();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let opened = open.wait_for(|open| *open).await.map(|_| ());
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            opened.map_err(|_| BusError::Backend("the gate was dropped".into()))?;
        }
        self.inner.publish(topic, message).await
    }
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn MessageStream>, BusError> {
        self.inner.subscribe(subscription).await
    }
}

/// Reads `usage-accepted` (acking) until `done` holds for the distinct
/// (customer, event id) pairs seen (collected in `seen`) or two minutes
/// pass; returns whether it held.
async fn read_until(
    stream: &mut Box<dyn MessageStream>,
    seen: &mut HashSet<(String, String)>,
    done: impl Fn(&HashSet<(String, String)>) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done(seen) {
        let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, stream.next()).await else {
            return false;
        };
        let event = accepted(&delivery.message).event.unwrap();
        seen.insert((event.customer_id, event.id));
        delivery.ack();
    }
    true
}

/// Polls the relay's outbox until `expected` rows are left (or a minute
/// passes); returns the last count.
async fn batches_left_once(h: &Harness, expected: i64) -> i64 {
    let mut left = -1;
    for _ in 0..600 {
        left = h
            .count("SELECT count(*) FROM ingest.accepted_batches")
            .await;
        if left == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    left
}

#[tokio::test]
async fn a_small_customers_usage_is_published_while_a_big_batch_is_held() {
    let bus = in_process();
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let mut rating = watch_accepted(&bus, "rating-usage-accepted").await;

    let (gate, open) = watch::channel(false);
    let waiting = Arc::new(AtomicUsize::new(0));
    let relay = tally_ingest::relay::AcceptedRelay::new(
        h.db.pool.clone(),
        Arc::new(Gated {
            inner: Arc::clone(&bus),
            held_customer: "cus_big".into(),
            open,
            waiting: Arc::clone(&waiting),
        }),
        Arc::new(tally_ingest::metrics::IngestMetrics::new(start_time())),
    );
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // The big customer's 10,000-event batch is committed, and its publishing
    // is under way (held at the gate) before the small customer sends anything.
    let big = (0..10_000)
        .map(|n| event("cus_big", &format!("big-{n}")))
        .collect();
    assert_eq!(h.send(big).await.counts.unwrap().accepted, 10_000);
    let mut held = false;
    for _ in 0..600 {
        held = waiting.load(Ordering::SeqCst) > 0;
        if held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the relay never started publishing cus_big's batch");
    assert_eq!(
        h.send(vec![event("cus_small", "small-1")])
            .await
            .counts
            .unwrap()
            .accepted,
        1
    );

    let mut seen = HashSet::new();
    let small = ("cus_small".to_owned(), "small-1".to_owned());
    let published = read_until(&mut rating, &mut seen, |seen| seen.contains(&small)).await;
    assert!(
        published,
        "cus_small's event was not published while cus_big's batch was held; seen: {} events",
        seen.len()
    );
    assert!(
        !seen.iter().any(|(customer, _)| customer == "cus_big"),
        "the gate holds every cus_big event"
    );
    assert_eq!(
        batches_left_once(&h, 1).await,
        1,
        "the small batch's round is recorded while the big one is held"
    );

    gate.send(true).unwrap();
    let all = read_until(&mut rating, &mut seen, |seen| seen.len() == 10_001).await;
    assert!(
        all,
        "after the gate opened, {} of 10,001 events",
        seen.len()
    );
    assert_eq!(
        batches_left_once(&h, 0).await,
        0,
        "the big batch's round is recorded"
    );
    shutdown.trigger();
    running.await.unwrap();
}

/// The figure behind docs/benchmarks.md ("Relay fairness"), on the Pub/Sub
/// emulator: how long after its commit a small customer's event reaches
/// `usage-accepted` when another customer's 10,000-event batch was committed
/// just before it, and how long that batch takes. Run by `bench/relay.sh`.
#[tokio::test]
#[ignore = "a benchmark: bench/relay.sh"]
async fn relay_fairness_on_the_emulator() {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    let bus: SharedBus = Arc::new(
        tally_bus::PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap(),
    );
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let watcher =
        SubscriptionConfig::unordered("bench-usage-accepted", tally_bus::topics::USAGE_ACCEPTED);
    ensure(&bus, watcher).await;
    let mut stream = bus.subscribe("bench-usage-accepted").await.unwrap();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(h.ingest.relay().clone().run(shutdown.clone()));
    let mut seen = HashSet::new();
    for round in 0..3 {
        let big = (0..10_000)
            .map(|n| event(&format!("cus_big{round}"), &format!("big-{n}")))
            .collect();
        assert_eq!(h.send(big).await.counts.unwrap().accepted, 10_000);
        let big_committed = tokio::time::Instant::now();
        let small = (format!("cus_small{round}"), "small-1".to_owned());
        assert_eq!(
            h.send(vec![event(&small.0, &small.1)])
                .await
                .counts
                .unwrap()
                .accepted,
            1
        );
        let small_committed = tokio::time::Instant::now();
        assert!(read_until(&mut stream, &mut seen, |seen| seen.contains(&small)).await);
        let small_latency = small_committed.elapsed();
        let big_seen = seen
            .iter()
            .filter(|(customer, _)| *customer == format!("cus_big{round}"))
            .count();
        let expected = (round + 1) * 10_001;
        assert!(read_until(&mut stream, &mut seen, |seen| seen.len() == expected).await);
        println!(
            "relay fairness, round {round}: small customer's event on usage-accepted {:.0} ms after its commit \
             ({big_seen} of the big batch's 10,000 events arrived before it); the big batch fully in {:.0} ms",
            small_latency.as_secs_f64() * 1000.0,
            big_committed.elapsed().as_secs_f64() * 1000.0
        );
    }
    shutdown.trigger();
    running.await.unwrap();
}
