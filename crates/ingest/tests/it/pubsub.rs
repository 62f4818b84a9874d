//! The Pub/Sub intake against the real emulator (and, for redelivery limits,
//! the in-process bus): protobuf and JSON, rejections kept and acked, poison
//! dead-lettered, duplicates across both intake paths.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tally_bus::message::ATTRIBUTE_DEAD_LETTER_REASON;
use tally_bus::{Message, PubSubBus, SharedBus, SubscriptionConfig, topics};
use tally_proto::ingest::{EventOutcome, GetIngestStatusRequest, IngestState};
use tally_runtime::Shutdown;
use tally_runtime::config::IngestConfig;

use crate::support::*;

async fn emulator_bus() -> SharedBus {
    let host = tally_testkit::pubsub::emulator_host().await;
    let prefix = format!("t{}-", tally_testkit::unique_suffix());
    Arc::new(
        PubSubBus::connect(tally_testkit::pubsub::TEST_PROJECT, Some(&host), &prefix)
            .await
            .unwrap()
            .with_lease_extension(Duration::from_secs(10)),
    )
}

fn protobuf(event: &tally_proto::events::UsageEvent) -> Message {
    // A foreign producer: no tally-* attributes, only the content type.
    let mut message = Message::new("", 1, event.encode_to_vec())
        .with_attribute("content-type", "application/x-protobuf")
        .with_ordering_key(event.customer_id.clone());
    message.message_type = String::new();
    message
}

fn json(body: &str, customer: &str) -> Message {
    let mut message = Message::new("", 1, body.as_bytes().to_vec())
        .with_attribute("content-type", "application/json")
        .with_ordering_key(customer);
    message.message_type = String::new();
    message
}

async fn state_of(h: &mut Harness, customer: &str, id: &str) -> IngestState {
    let status = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: customer.into(),
            event_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    IngestState::try_from(status.state).unwrap()
}

async fn wait_for(h: &mut Harness, sql: &str, expected: i64) {
    for _ in 0..300 {
        if h.count(sql).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {sql} = {expected} (is {})",
        h.count(sql).await
    );
}

#[tokio::test]
async fn the_pubsub_intake_takes_protobuf_and_json_and_keeps_what_it_rejects() {
    let bus = emulator_bus().await;
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let watcher = SubscriptionConfig::ordered("watch-dead-letters", "usage-events-dead-letter");
    ensure(&bus, watcher).await;
    let mut dead_letters = bus.subscribe("watch-dead-letters").await.unwrap();

    // Sent over gRPC first; the same event on Pub/Sub is a duplicate.
    let grpc = h.send(vec![event("cus_a", "both-paths")]).await;
    assert_eq!(outcomes(&grpc.results), [EventOutcome::Accepted]);

    let minute_ago = (start_time() - chrono::Duration::minutes(1)).to_rfc3339();
    let messages = vec![
        protobuf(&event("cus_a", "pb-1")),
        protobuf(&event("cus_a", "both-paths")),
        json(
            &format!(
                r#"{{"id":"js-1","customerId":"cus_b","eventType":"api_calls","timestamp":"{minute_ago}","properties":{{"tokens":1200.50,"model":"large"}}}}"#
            ),
            "cus_b",
        ),
        json(
            &format!(
                r#"{{"id":"js-2","customer_id":"cus_b","event_type":"api_calls","timestamp":"{minute_ago}","properties":{{"nested":{{"a":1}}}}}}"#
            ),
            "cus_b",
        ),
        json("this is not json", "cus_c"),
        Message::new(
            "tally.events.v1.UsageEvent",
            2,
            event("cus_d", "v2").encode_to_vec(),
        )
        .with_ordering_key("cus_d"),
    ];
    for message in messages {
        bus.publish(topics::USAGE_EVENTS, message).await.unwrap();
    }
    let shutdown = Shutdown::new();
    let intake = h.ingest.intake();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { intake.run(shutdown).await })
    };

    wait_for(&mut h, "SELECT count(*) FROM ingest.events", 3).await;
    wait_for(&mut h, "SELECT count(*) FROM ingest.rejected_events", 2).await;
    assert_eq!(
        state_of(&mut h, "cus_a", "pb-1").await,
        IngestState::Accepted
    );
    assert_eq!(
        state_of(&mut h, "cus_b", "js-1").await,
        IngestState::Accepted
    );
    assert_eq!(
        state_of(&mut h, "cus_b", "js-2").await,
        IngestState::Rejected
    );
    let stored = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: "cus_b".into(),
            event_id: "js-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .accepted
        .unwrap();
    let tokens = stored.event.unwrap().properties["tokens"].clone();
    assert_eq!(tokens, "1200.50", "JSON numbers keep every digit");
    let intake: i16 =
        sqlx::query_scalar("SELECT intake FROM ingest.events WHERE event_id = 'pb-1'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(intake, 2);
    wait_for(
        &mut h,
        "SELECT duplicate_count FROM ingest.event_keys WHERE event_id = 'both-paths'",
        1,
    )
    .await;
    let undecodable: (Option<Vec<u8>>, Option<String>) = sqlx::query_as(
        "SELECT raw_payload, raw_content_type FROM ingest.rejected_events WHERE kind = 3",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(undecodable.0.as_deref(), Some(&b"this is not json"[..]));
    assert_eq!(undecodable.1.as_deref(), Some("application/json"));

    // The unknown schema version is poison: dead-lettered at once, with the reason.
    let letter = tokio::time::timeout(Duration::from_secs(30), dead_letters.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    assert!(
        letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON].contains("schema version 2"),
        "{:?}",
        letter.message.attributes
    );
    letter.ack();
    assert_eq!(h.ingest.ingestor().metrics().snapshot().dead_lettered, 1);
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

/// A JSON event published without `content-type` is read as protobuf (the
/// default) and rejected; the reason says which attribute to set.
#[tokio::test]
async fn json_without_a_content_type_is_rejected_with_the_attribute_to_set() {
    let bus = in_process();
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let body = r#"{"id":"js-1","customerId":"cus_a","eventType":"api_calls","properties":{"tokens":"12"}}"#;
    let mut message = Message::new("", 1, body.as_bytes().to_vec()).with_ordering_key("cus_a");
    message.message_type = String::new();
    assert!(!message.attributes.contains_key("content-type"));
    bus.publish(topics::USAGE_EVENTS, message).await.unwrap();

    let shutdown = Shutdown::new();
    let intake = h.ingest.intake();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { intake.run(shutdown).await })
    };
    wait_for(&mut h, "SELECT count(*) FROM ingest.rejected_events", 1).await;
    let listed = h
        .client
        .list_rejected_events(tally_proto::ingest::ListRejectedEventsRequest {
            rule: "undecodable".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rejection = listed.rejected_events[0].rejection.clone().unwrap();
    let reason = &rejection.violations[0].description;
    assert!(
        reason.starts_with("not a protobuf tally.events.v1.UsageEvent")
            && reason.contains("the payload looks like JSON")
            && reason.ends_with("set the content-type attribute to application/json"),
        "{reason}"
    );
    assert_eq!(rejection.raw_payload, body.as_bytes());
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_message_that_cannot_be_stored_is_dead_lettered_after_the_attempt_limit() {
    let bus = in_process();
    let mut h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    ensure(
        &bus,
        SubscriptionConfig::ordered("watch-dead-letters", "usage-events-dead-letter"),
    )
    .await;
    let mut dead_letters = bus.subscribe("watch-dead-letters").await.unwrap();
    // Every write for this customer fails inside the database.
    sqlx::query(
        "CREATE FUNCTION ingest.refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.customer_id = 'cus_broken' THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON ingest.event_keys FOR EACH ROW EXECUTE FUNCTION ingest.refuse()")
        .execute(&h.db.pool)
        .await
        .unwrap();
    bus.publish(topics::USAGE_EVENTS, protobuf(&event("cus_broken", "e1")))
        .await
        .unwrap();
    bus.publish(topics::USAGE_EVENTS, protobuf(&event("cus_fine", "e1")))
        .await
        .unwrap();

    let shutdown = Shutdown::new();
    let intake = h.ingest.intake();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { intake.run(shutdown).await })
    };
    let letter = tokio::time::timeout(Duration::from_secs(30), dead_letters.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    assert_eq!(letter.message.attributes["tally-dead-letter-attempts"], "5");
    assert!(letter.message.attributes[ATTRIBUTE_DEAD_LETTER_REASON].contains("unavailable"));
    letter.ack();
    // The healthy message was not held back by the broken one (its batch may
    // still be committing: batches are written concurrently).
    wait_for(
        &mut h,
        "SELECT count(*) FROM ingest.events WHERE customer_id = 'cus_fine'",
        1,
    )
    .await;
    assert_eq!(
        state_of(&mut h, "cus_fine", "e1").await,
        IngestState::Accepted
    );
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 1);
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

/// `usage-events` is unordered and the intake writes several batches at once:
/// acceptance does not depend on order (docs/architecture.md, "Ordering per
/// topic"), so what counts is that every event is in the log exactly once.
#[tokio::test]
async fn the_pubsub_intake_logs_every_event_once_in_any_order() {
    let bus = emulator_bus().await;
    let h = harness_with(Arc::clone(&bus), IngestConfig::default()).await;
    let customers = ["cus_o1", "cus_o2", "cus_o3"];
    for n in 0..30 {
        let customer = customers[n % 3];
        let message = protobuf(&event(customer, &format!("n{n:02}")));
        bus.publish(topics::USAGE_EVENTS, message).await.unwrap();
    }
    let shutdown = Shutdown::new();
    let intake = h.ingest.intake();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { intake.run(shutdown).await })
    };
    let mut h = h;
    wait_for(&mut h, "SELECT count(*) FROM ingest.events", 30).await;
    for (index, customer) in customers.into_iter().enumerate() {
        let mut ids: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM ingest.events WHERE customer_id = $1")
                .bind(customer)
                .fetch_all(&h.db.pool)
                .await
                .unwrap();
        ids.sort();
        let published: Vec<String> = (0..30)
            .filter(|n| n % 3 == index)
            .map(|n| format!("n{n:02}"))
            .collect();
        assert_eq!(ids, published, "{customer}: each event once");
    }
    shutdown.trigger();
    running.await.unwrap().unwrap();
}
