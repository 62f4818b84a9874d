//! The service as `tally serve connectors` runs it: `usage-accepted` on the
//! in-process bus and on the Pub/Sub emulator, the forwarding consumer, a fake Orb.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tally_bus::{InProcessBus, Message, SharedBus, topics};
use tally_connectors::forwarding::consumer::USAGE_ACCEPTED_TYPE;
use tally_connectors::{Connectors, ConnectorsDeps, OrbApiKey};
use tally_proto::events::{UsageAccepted, UsageEvent};
use tally_runtime::{ManualClock, SharedClock, Shutdown};

use crate::support::*;

fn accepted(sequence: u64, customer: &str, event: &str) -> Message {
    let payload = UsageAccepted {
        event: Some(UsageEvent {
            id: event.into(),
            customer_id: customer.into(),
            event_type: "api_calls".into(),
            timestamp: Some(tally_proto::convert::timestamp(at("2026-12-07T11:00:00Z"))),
            properties: [("tokens".to_owned(), "3".to_owned())].into(),
            source: String::new(),
        }),
        sequence_number: sequence,
        ..Default::default()
    }
    .encode_to_vec();
    Message::new(USAGE_ACCEPTED_TYPE, 1, payload)
        .with_id(format!("uacc_{sequence}"))
        .with_ordering_key(customer)
}

fn in_process() -> SharedBus {
    Arc::new(InProcessBus::new())
}

/// The emulator, with topic and subscription names of this test's own.
async fn emulator() -> SharedBus {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    Arc::new(
        tally_bus::PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(Duration::from_secs(10)),
    )
}

async fn start(
    database: &tally_testkit::postgres::TestDatabase,
    orb_url: &str,
    key: Option<OrbApiKey>,
) -> (Connectors, SharedBus) {
    start_with(in_process(), database, config(orb_url), key).await
}

async fn start_with(
    bus: SharedBus,
    database: &tally_testkit::postgres::TestDatabase,
    config: tally_runtime::config::ConnectorsConfig,
    key: Option<OrbApiKey>,
) -> (Connectors, SharedBus) {
    let clock: SharedClock = Arc::new(ManualClock::new(at("2026-12-07T12:00:00Z")));
    let connectors = Connectors::start(ConnectorsDeps {
        pool: database.pool.clone(),
        bus: Arc::clone(&bus),
        clock,
        config,
        orb_api_key: key,
        max_delivery_attempts: 5,
        invoicing: None,
    })
    .await
    .unwrap();
    (connectors, bus)
}

/// Waits (a generous bound) until `expected` events have a state.
async fn until_settled(pool: &sqlx::PgPool, expected: i64) {
    let mut seen = 0;
    for _ in 0..600 {
        seen = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM connectors.forwarded_events")
            .fetch_one(pool)
            .await
            .unwrap();
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{expected} events were not settled within 30 s; {seen} were");
}

#[tokio::test]
async fn usage_on_the_in_process_bus_reaches_orb_once_even_when_redelivered() {
    reaches_orb_once(in_process()).await;
}

#[tokio::test]
async fn usage_on_the_pubsub_emulator_reaches_orb_once_even_when_redelivered() {
    reaches_orb_once(emulator().await).await;
}

async fn reaches_orb_once(bus: SharedBus) {
    let database = tally_testkit::postgres::database().await;
    let (orb, fake) = fake_orb().await;
    let (connectors, bus) = start_with(
        bus,
        &database,
        config(&orb.uri()),
        Some(OrbApiKey::new(API_KEY)),
    )
    .await;
    let api = tally_connectors::ConnectorApi::new(
        database.pool.clone(),
        Arc::new(ManualClock::new(at("2026-12-07T12:00:00Z"))),
    );
    use tally_proto::connectors::connector_service_server::ConnectorService as _;
    api.map_orb_customer(tonic::Request::new(
        tally_proto::connectors::MapOrbCustomerRequest {
            customer_id: "cus_acme".into(),
            external_customer_id: "acme-orb".into(),
        },
    ))
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    let tasks = connectors.spawn_background(&shutdown);
    assert_eq!(tasks.len(), 3, "forwarding and the two mirroring consumers");

    let messages = [
        accepted(1, "cus_acme", "evt_1"),
        accepted(2, "cus_acme", "evt_2"),
        accepted(3, "cus_initech", "evt_1"),
    ];
    for message in &messages {
        bus.publish(topics::USAGE_ACCEPTED, message.clone())
            .await
            .unwrap();
    }
    until_settled(&database.pool, 3).await;
    // Redelivered (published again with the same ids), then one new event.
    for message in &messages {
        bus.publish(topics::USAGE_ACCEPTED, message.clone())
            .await
            .unwrap();
    }
    bus.publish(topics::USAGE_ACCEPTED, accepted(4, "cus_acme", "evt_3"))
        .await
        .unwrap();
    until_settled(&database.pool, 4).await;

    let keys: Vec<String> = fake.0.lock().unwrap().ingested.clone();
    assert_eq!(keys, ["cus_acme:evt_1", "cus_acme:evt_2", "cus_acme:evt_3"]);
    let sent: usize = orb
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            serde_json::from_slice::<serde_json::Value>(&request.body).unwrap()["events"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(sent, 3, "Orb saw each key once");
    shutdown.trigger();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn without_an_orb_key_nothing_is_consumed_but_the_api_serves() {
    let database = tally_testkit::postgres::database().await;
    let (connectors, _bus) = start(&database, "http://127.0.0.1:9", None).await;
    assert!(connectors.orb().is_none());
    assert!(connectors.spawn_background(&Shutdown::new()).is_empty());
    let _server = connectors.grpc_server(4 * 1024 * 1024);
}

#[tokio::test]
async fn an_orb_outage_leaves_usage_on_the_in_process_bus_until_orb_is_back() {
    outage(in_process()).await;
}

#[tokio::test]
async fn an_orb_outage_leaves_usage_on_the_pubsub_emulator_until_orb_is_back() {
    outage(emulator().await).await;
}

async fn outage(bus: SharedBus) {
    let database = tally_testkit::postgres::database().await;
    let (orb, fake) = fake_orb().await;
    // One try per delivery and a short cool-down: each 503 is one delivery.
    let config = tally_runtime::config::ConnectorsConfig {
        orb_max_attempts: 1,
        orb_retry_base_delay_ms: 1,
        orb_retry_max_delay_ms: 50,
        ..config(&orb.uri())
    };
    let (connectors, bus) = start_with(bus, &database, config, Some(OrbApiKey::new(API_KEY))).await;
    sqlx::query(
        "INSERT INTO connectors.orb_customers VALUES ('cus_acme', 'acme-orb', now(), now())",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    fake.0
        .lock()
        .unwrap()
        .script
        .extend((0..3).map(|_| wiremock::ResponseTemplate::new(503)));
    let shutdown = Shutdown::new();
    let tasks = connectors.spawn_background(&shutdown);
    bus.publish(topics::USAGE_ACCEPTED, accepted(1, "cus_acme", "evt_1"))
        .await
        .unwrap();
    until_settled(&database.pool, 1).await;

    assert_eq!(
        orb.received_requests().await.unwrap().len(),
        4,
        "three 503s, then ingested"
    );
    assert_eq!(fake.0.lock().unwrap().ingested, ["cus_acme:evt_1"]);
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM connectors.forwarded_events")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("forwarded", 1));
    shutdown.trigger();
    for task in tasks {
        task.await.unwrap();
    }
}
