//! A running ingest for tests: its own database, a manual clock, a bus, and a
//! gRPC client talking to a real server on a free port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tally_bus::{InProcessBus, Message, SharedBus, SubscriptionConfig, topics};
use tally_ingest::{Ingest, IngestDeps};
use tally_proto::events::{UsageAccepted, UsageEvent};
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, EventResult, IngestBatchRequest, IngestBatchResponse};
use tally_runtime::auth::AuthLayer;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::config::IngestConfig;
use tally_runtime::{ManualClock, Shutdown};
use tally_testkit::SequentialIds;
use tally_testkit::postgres::{TestDatabase, database};
use tonic::transport::Channel;

/// The instant every test starts at.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

/// A running ingest.
pub struct Harness {
    pub db: TestDatabase,
    pub bus: SharedBus,
    pub ingest: Ingest,
    pub client: IngestServiceClient<Channel>,
    pub shutdown: Shutdown,
    /// Where the gRPC server listens.
    pub address: std::net::SocketAddr,
}

/// Ingest on the in-process bus with default config.
pub async fn harness() -> Harness {
    harness_with(Arc::new(InProcessBus::new()), IngestConfig::default()).await
}

/// Ingest on `bus` with `config`; background loops are not started (tests drive them).
pub async fn harness_with(bus: SharedBus, config: IngestConfig) -> Harness {
    let db = database().await;
    harness_on(db, bus, config).await
}

/// Ingest over an existing database (a "restart").
pub async fn harness_on(db: TestDatabase, bus: SharedBus, config: IngestConfig) -> Harness {
    let clock = ManualClock::new(start_time());
    let ingest = Ingest::start(IngestDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(&bus),
        clock: Arc::new(clock.clone()),
        ids: Arc::new(SequentialIds::default()),
        config,
        max_delivery_attempts: 5,
    })
    .await
    .expect("ingest starts");
    let shutdown = Shutdown::new();
    let address = ingest
        .grpc_server(16 * 1024 * 1024)
        .spawn_on_loopback(AuthLayer::disabled(), &shutdown)
        .await
        .expect("server runs");
    let client = IngestServiceClient::connect(format!("http://{address}"))
        .await
        .expect("client connects")
        .max_decoding_message_size(64 * 1024 * 1024);
    Harness {
        db,
        bus,
        ingest,
        client,
        shutdown,
        address,
    }
}

/// A valid event of `customer` with id `id`, one minute before the start time.
pub fn event(customer: &str, id: &str) -> UsageEvent {
    event_at(customer, id, start_time() - chrono::Duration::minutes(1))
}

/// A valid event at `at`.
pub fn event_at(customer: &str, id: &str, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        id: id.to_owned(),
        customer_id: customer.to_owned(),
        event_type: "api_calls".to_owned(),
        timestamp: Some(chrono_to_timestamp(at)),
        properties: HashMap::from([
            ("tokens".to_owned(), "1200".to_owned()),
            ("model".to_owned(), "large".to_owned()),
        ]),
        source: "test".to_owned(),
    }
}

impl Harness {
    /// Stops this ingest and starts a new one on the same database (fresh caches and counters).
    pub async fn restart(self) -> Harness {
        self.shutdown.trigger();
        harness_on(self.db, self.bus, IngestConfig::default()).await
    }

    /// `IngestBatch`.
    pub async fn send(&mut self, events: Vec<UsageEvent>) -> IngestBatchResponse {
        self.client
            .ingest_batch(IngestBatchRequest { events })
            .await
            .expect("the batch call succeeds")
            .into_inner()
    }

    /// Runs `sql` returning one number.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// Outcomes of a batch, in order.
pub fn outcomes(results: &[EventResult]) -> Vec<EventOutcome> {
    results
        .iter()
        .map(|result| EventOutcome::try_from(result.outcome).unwrap())
        .collect()
}

/// Subscribes a watcher to `usage-accepted` (before anything is published).
pub async fn watch_accepted(bus: &SharedBus, name: &str) -> Box<dyn tally_bus::MessageStream> {
    bus.ensure_subscription(&SubscriptionConfig::ordered(name, topics::USAGE_ACCEPTED))
        .await
        .unwrap();
    bus.subscribe(name).await.unwrap()
}

/// Decodes a `usage-accepted` message.
pub fn accepted(message: &Message) -> UsageAccepted {
    prost::Message::decode(message.payload.as_slice()).unwrap()
}

/// Reads deliveries (acking them) until `count` arrived or 10 s passed without one.
pub async fn drain(
    stream: &mut Box<dyn tally_bus::MessageStream>,
    count: usize,
) -> Vec<UsageAccepted> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(delivery))) => {
                seen.push(accepted(&delivery.message));
                delivery.ack();
            }
            _ => break,
        }
    }
    seen
}

/// Keeps the in-process bus type reachable for tests that need its admin calls.
pub fn in_process() -> SharedBus {
    Arc::new(InProcessBus::new())
}

/// Lets a `Bus` trait object be used in tests.
pub async fn ensure(bus: &SharedBus, subscription: SubscriptionConfig) {
    bus.ensure_topic(&subscription.topic).await.unwrap();
    bus.ensure_subscription(&subscription).await.unwrap();
}
