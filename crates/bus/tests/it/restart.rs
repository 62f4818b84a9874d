//! Consumers stop and start while messages flow, on both backends: every
//! message is applied exactly once, whatever the stopped consumers held.
//!
//! Each generation of consumer is a process of its own as far as the backend
//! can tell (on Pub/Sub: its own client and connection). It applies messages
//! the way the services do — the effect and the inbox record in one
//! PostgreSQL transaction — and is stopped through its `Shutdown` while it
//! holds messages it has received but not handled (the Pub/Sub client had
//! pulled them). The next generation must get them.
//!
//! On Pub/Sub this runs on an **unordered** subscription, as Tally's usage
//! and subscription topics now are, with one restart: the emulator keeps
//! dispatching to a disconnected streaming-pull consumer, so what it sends
//! there comes back only when the stream's ack deadline (10 s here) runs out,
//! and every stopped consumer adds such a dead end (on an *ordered*
//! subscription it is worse: the keys it had are never delivered again; see
//! docs/operations.md, "The Pub/Sub emulator"). The delivery limit is high so
//! that those lost deliveries cannot dead-letter a message here; the bound is
//! generous for the same reason. The in-process bus runs three generations,
//! ordered and unordered.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tally_bus::consumer::{Consumer, HandlerError, MessageHandler};
use tally_bus::inbox::{self, ServiceSchema};
use tally_bus::{InProcessBus, Message, PubSubBus, SharedBus, SubscriptionConfig};
use tally_runtime::Shutdown;

use crate::support::numbered;

/// How long a generation may take to apply its share, and the last one everything.
const BOUND: Duration = Duration::from_secs(300);

const KEYS: usize = 10;
const PER_KEY: usize = 6;

/// Opens "another process's" connection to the same backend.
#[async_trait]
trait Connect: Send + Sync {
    async fn connect(&self) -> SharedBus;
}

struct SameInProcessBus(SharedBus);

#[async_trait]
impl Connect for SameInProcessBus {
    async fn connect(&self) -> SharedBus {
        Arc::clone(&self.0)
    }
}

struct PubSubConnections {
    host: String,
    prefix: String,
}

#[async_trait]
impl Connect for PubSubConnections {
    async fn connect(&self) -> SharedBus {
        let bus = PubSubBus::connect(
            tally_testkit::pubsub::TEST_PROJECT,
            Some(&self.host),
            &self.prefix,
        )
        .await
        .unwrap()
        .with_lease_extension(Duration::from_secs(10));
        Arc::new(bus)
    }
}

/// Applies a message once: the effect row and the inbox record commit together.
struct Applier {
    pool: PgPool,
    subscription: String,
    /// Deliveries handled by this generation (redeliveries included).
    handled: AtomicUsize,
    /// After this many deliveries, the next one waits for the stop signal
    /// before it is applied: the consumer is stopped mid-stream.
    pause_after: Option<(usize, Shutdown)>,
}

#[async_trait]
impl MessageHandler for Applier {
    async fn handle(&self, message: &Message, _attempt: u32) -> Result<(), HandlerError> {
        let handled = self.handled.fetch_add(1, Ordering::SeqCst);
        if let Some((after, stop)) = &self.pause_after
            && handled >= *after
        {
            stop.wait().await;
        }
        let retry = |error: sqlx::Error| HandlerError::Retry(error.to_string());
        let mut transaction = self.pool.begin().await.map_err(retry)?;
        if inbox::record_once(
            &mut transaction,
            ServiceSchema::Rating,
            &self.subscription,
            &message.id,
        )
        .await
        .map_err(retry)?
        {
            sqlx::query("INSERT INTO restart_effects (message_id, payload) VALUES ($1, $2)")
                .bind(&message.id)
                .bind(&message.payload)
                .execute(&mut *transaction)
                .await
                .map_err(retry)?;
        }
        transaction.commit().await.map_err(retry)?;
        Ok(())
    }
}

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM restart_effects")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until at least `count` effects are stored, failing after [`BOUND`].
async fn wait_for_applied(pool: &PgPool, count: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let now = applied(pool).await;
        if now >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {now} of {count} applied after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_round(bus: &SharedBus, round: usize, sent: &mut Vec<Message>) {
    for number in 0..PER_KEY {
        for key in 0..KEYS {
            let message = numbered(&format!("cus_{key}"), round * PER_KEY + number);
            bus.publish("restart-topic", message.clone()).await.unwrap();
            sent.push(message);
        }
    }
}

/// `generations` consumers one after the other; all but the last are stopped
/// mid-stream, with messages published before, between and after them.
async fn restarted_consumers_apply_every_message_once(
    connections: &dyn Connect,
    ordered: bool,
    generations: usize,
) {
    let database = tally_testkit::postgres::database().await;
    sqlx::query("CREATE TABLE restart_effects (message_id text NOT NULL, payload bytea NOT NULL)")
        .execute(&database.pool)
        .await
        .unwrap();
    // Unique per test: the age registry is per process and per subscription name.
    let name = format!("restart-{}", tally_testkit::unique_suffix());
    let mut config = SubscriptionConfig::unordered(name.clone(), "restart-topic")
        .with_ack_deadline(Duration::from_secs(10))
        .with_max_delivery_attempts(99);
    config.ordered = ordered;
    let publisher = connections.connect().await;
    publisher.ensure_topic("restart-topic").await.unwrap();
    publisher.ensure_subscription(&config).await.unwrap();

    let mut sent = Vec::new();
    publish_round(&publisher, 0, &mut sent).await;
    let round = KEYS * PER_KEY;
    for generation in 0..generations {
        let stop = Shutdown::new();
        let last = generation + 1 == generations;
        let already = usize::try_from(applied(&database.pool).await).unwrap();
        let applier = Arc::new(Applier {
            pool: database.pool.clone(),
            subscription: name.clone(),
            handled: AtomicUsize::new(0),
            // Stop once this generation applied a third of a round.
            pause_after: (!last).then(|| (round / 3, stop.clone())),
        });
        let connection = connections.connect().await;
        let consumer = Consumer::new(Arc::clone(&connection), config.clone(), applier.clone());
        let running = {
            let stop = stop.clone();
            tokio::spawn(async move { consumer.run(stop).await })
        };
        if last {
            wait_for_applied(
                &database.pool,
                i64::try_from(sent.len()).unwrap(),
                "the last consumer",
            )
            .await;
        } else {
            // Wait until it is paused on a message it holds, then publish more
            // and stop it.
            let deadline = tokio::time::Instant::now() + BOUND;
            while applier.handled.load(Ordering::SeqCst) <= round / 3 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "generation {generation} handled {} (of {round} waiting, {already} applied before) in {BOUND:?}",
                    applier.handled.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            publish_round(&publisher, generation + 1, &mut sent).await;
        }
        stop.trigger();
        tokio::time::timeout(BOUND, running)
            .await
            .expect("the consumer stops")
            .unwrap()
            .unwrap();
        drop(connection);
    }

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT message_id, count(*) FROM restart_effects GROUP BY message_id")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    let twice: Vec<&(String, i64)> = rows.iter().filter(|(_, count)| *count != 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    let applied: BTreeSet<String> = rows.into_iter().map(|(id, _)| id).collect();
    let published: BTreeSet<String> = sent.iter().map(|message| message.id.clone()).collect();
    assert_eq!(published.len(), generations * round);
    let missing: Vec<&String> = published.difference(&applied).collect();
    assert!(
        missing.is_empty(),
        "never applied: {} of {}",
        missing.len(),
        published.len()
    );
    assert_eq!(applied, published);
    assert_eq!(
        tally_bus::age::oldest_unacked_age(&name),
        None,
        "stopped consumers hold nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_unordered_restarts_apply_every_message_once() {
    let bus: SharedBus = Arc::new(InProcessBus::new());
    restarted_consumers_apply_every_message_once(&SameInProcessBus(bus), false, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_ordered_restarts_apply_every_message_once() {
    let bus: SharedBus = Arc::new(InProcessBus::new());
    restarted_consumers_apply_every_message_once(&SameInProcessBus(bus), true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_unordered_restarts_apply_every_message_once() {
    let connections = PubSubConnections {
        host: tally_testkit::pubsub::emulator_host().await,
        prefix: format!("t{}-", tally_testkit::unique_suffix()),
    };
    restarted_consumers_apply_every_message_once(&connections, false, 2).await;
}

// Through StreamingPull the emulator never delivers a restarted consumer's
// keys of an ordered subscription again; through unary Pull it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_ordered_restarts_apply_every_message_once() {
    let connections = PubSubConnections {
        host: tally_testkit::pubsub::emulator_host().await,
        prefix: format!("t{}-", tally_testkit::unique_suffix()),
    };
    restarted_consumers_apply_every_message_once(&connections, true, 2).await;
}
