//! Hostile input never fails a batch: over-long ids and oversized events are
//! rejected with a field violation and stored (however large), over gRPC and
//! on Pub/Sub; numbers out of range are refused at the edge.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use tally_bus::consumer::Verdict;
use tally_bus::{Message, topics};
use tally_ingest::USAGE_EVENTS_SUBSCRIPTION;
use tally_proto::events::UsageEvent;
use tally_proto::ingest::{
    EventOutcome, EventResult, GetIngestStatusRequest, IngestState, ListRejectedEventsRequest,
    ReplayRejectedEventsRequest,
};
use tally_runtime::config::IngestConfig;

use crate::support::*;

/// `length` letters and digits that do not compress (a fixed xorshift
/// sequence): PostgreSQL compresses long index entries, so `"x".repeat(9000)`
/// would fit under the btree limit where a real 9,000-character id does not.
fn incompressible(prefix: &str, length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut text = prefix.to_owned();
    while text.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(char::from(
            ALPHABET[(state % ALPHABET.len() as u64) as usize],
        ));
    }
    text
}

fn fields_and_rules(result: &EventResult) -> Vec<(&str, &str)> {
    result
        .violations
        .iter()
        .map(|violation| (violation.field.as_str(), violation.rule.as_str()))
        .collect()
}

#[tokio::test]
async fn ids_of_9000_characters_are_field_violations_stored_without_failing_the_batch() {
    let mut h = harness().await;
    let long_id = incompressible("", 9000);
    let long_customer = incompressible("cus_", 9000);
    let response = h
        .send(vec![
            event("cus_a", "fine-1"),
            event("cus_a", &long_id),
            event(&long_customer, "e-1"),
            event(&long_customer, &long_id),
            event("cus_a", "fine-2"),
        ])
        .await;
    assert_eq!(
        outcomes(&response.results),
        [
            EventOutcome::Accepted,
            EventOutcome::Rejected,
            EventOutcome::Rejected,
            EventOutcome::Rejected,
            EventOutcome::Accepted,
        ],
        "the valid events of the batch are accepted"
    );
    assert_eq!(
        fields_and_rules(&response.results[1]),
        [("id", "max_length")]
    );
    assert_eq!(
        fields_and_rules(&response.results[2]),
        [("customer_id", "max_length")]
    );
    assert_eq!(
        fields_and_rules(&response.results[3]),
        [
            ("event", "max_event_size"),
            ("id", "max_length"),
            ("customer_id", "max_length")
        ]
    );

    // Stored: the lookup columns hold a readable prefix, the event is whole.
    let stored: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT customer_id, event_id, event FROM ingest.rejected_events ORDER BY id",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 3);
    for (customer, id, bytes) in &stored {
        assert!(customer.chars().count() <= 256 && id.chars().count() <= 256);
        let kept = UsageEvent::decode(bytes.as_slice()).unwrap();
        assert!(kept.customer_id.starts_with(customer.as_str()));
        assert!(kept.id.starts_with(id.as_str()));
    }

    // Status and listing find them by the full ids.
    let status = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: long_customer.clone(),
            event_id: long_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, IngestState::Rejected as i32);
    assert_eq!(status.rejections.len(), 1, "only the exact pair");
    let kept = status.rejections[0]
        .rejection
        .as_ref()
        .and_then(|rejection| rejection.event.as_ref())
        .unwrap();
    assert_eq!((&kept.customer_id, &kept.id), (&long_customer, &long_id));
    let listed = h
        .client
        .list_rejected_events(ListRejectedEventsRequest {
            customer_id: long_customer.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rejected_events.len(), 2);

    // Sending the batch again changes nothing for the valid events.
    let again = h
        .send(vec![event("cus_a", "fine-1"), event("cus_a", &long_id)])
        .await;
    assert_eq!(
        outcomes(&again.results),
        [EventOutcome::Duplicate, EventOutcome::Rejected]
    );
}

#[tokio::test]
async fn a_huge_rejected_event_is_kept_as_a_summary_that_is_never_replayed() {
    let mut h = harness().await;
    let mut huge = event("cus_a", "huge-1");
    // 100 KiB: over the event size limit and over what a rejection keeps.
    huge.properties
        .insert("blob".into(), "b".repeat(100 * 1024));
    let response = h.send(vec![huge, event("cus_a", "fine-1")]).await;
    assert_eq!(
        outcomes(&response.results),
        [EventOutcome::Rejected, EventOutcome::Accepted]
    );
    assert!(
        fields_and_rules(&response.results[0]).contains(&("event", "max_event_size")),
        "{:?}",
        response.results[0].violations
    );
    let (summarized, event_bytes): (bool, i32) =
        sqlx::query_as("SELECT event_summarized, octet_length(event) FROM ingest.rejected_events")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert!(summarized);
    assert!(
        event_bytes < 1024,
        "the summary is small: {event_bytes} bytes"
    );
    let status = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: "cus_a".into(),
            event_id: "huge-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let summary = status.rejections[0]
        .rejection
        .as_ref()
        .and_then(|rejection| rejection.event.clone())
        .unwrap();
    assert_eq!(summary.id, "huge-1");
    assert!(summary.properties.is_empty());

    let replayed = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec![response.results[0].rejection_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&replayed.results), [EventOutcome::Rejected]);
    assert!(
        fields_and_rules(&replayed.results[0]).contains(&("event", "not_replayable")),
        "{:?}",
        replayed.results[0].violations
    );
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 1);
}

/// The issue's two events: a negative reading is accepted (whether it may
/// count is the meter's rule, applied by rating); `Decimal::MAX` is refused.
#[tokio::test]
async fn numbers_beyond_the_bound_are_refused_and_negative_readings_are_accepted() {
    let mut h = harness().await;
    let with = |id: &str, properties: &[(&str, &str)]| UsageEvent {
        event_type: "gpu_seconds".into(),
        properties: properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect::<HashMap<_, _>>(),
        ..event("cus_a", id)
    };
    let response = h
        .send(vec![
            with("negative", &[("seconds", "-1"), ("gpu_type", "h100")]),
            with("max", &[("tokens", "79228162514264337593543950335")]),
            with("precise", &[("tokens", "0.1000000000001")]),
            with("big-but-fine", &[("tokens", "1000000000000000")]),
        ])
        .await;
    assert_eq!(
        outcomes(&response.results),
        [
            EventOutcome::Accepted,
            EventOutcome::Rejected,
            EventOutcome::Rejected,
            EventOutcome::Accepted,
        ]
    );
    assert_eq!(
        fields_and_rules(&response.results[1]),
        [("properties.tokens", "number_out_of_range")]
    );
    assert_eq!(
        fields_and_rules(&response.results[2]),
        [("properties.tokens", "max_fraction_digits")]
    );
}

#[tokio::test]
async fn on_pubsub_over_long_ids_and_numbers_become_stored_rejections_not_dead_letters() {
    let bus = in_process();
    let mut h = harness_with(bus.clone(), IngestConfig::default()).await;
    let long_id = incompressible("", 9000);
    let long_customer = incompressible("cus_", 9000);
    let minute_ago = (start_time() - chrono::Duration::minutes(1)).to_rfc3339();
    let messages = vec![
        event("cus_a", "fine-1").encode_to_vec(),
        event("cus_a", &long_id).encode_to_vec(),
        event(&long_customer, &long_id).encode_to_vec(),
        format!(
            r#"{{"id":"json-max","customerId":"cus_b","eventType":"api_calls","timestamp":"{minute_ago}","properties":{{"tokens":79228162514264337593543950335}}}}"#
        )
        .into_bytes(),
    ];
    let count = messages.len();
    for (index, payload) in messages.into_iter().enumerate() {
        let content_type = if payload.first() == Some(&b'{') {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        let mut message = Message::new("", 1, payload)
            .with_attribute("content-type", content_type)
            // Distinct keys: the in-process bus hands out one message per key at a time.
            .with_ordering_key(format!("key-{index}"));
        message.message_type = String::new();
        bus.publish(topics::USAGE_EVENTS, message).await.unwrap();
    }
    let mut stream = bus.subscribe(USAGE_EVENTS_SUBSCRIPTION).await.unwrap();
    let mut deliveries = Vec::new();
    while deliveries.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        deliveries.push(delivery);
    }

    let verdicts = h.ingest.intake().process(deliveries).await;
    assert_eq!(
        verdicts,
        vec![Verdict::Acked; count],
        "every message is acked"
    );
    assert_eq!(h.ingest.ingestor().metrics().snapshot().dead_lettered, 0);
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 1);
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.rejected_events WHERE kind = 1")
            .await,
        3
    );
    let status = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: "cus_b".into(),
            event_id: "json-max".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let violations = &status.rejections[0].rejection.as_ref().unwrap().violations;
    assert_eq!(violations[0].field, "properties.tokens");
    assert_eq!(violations[0].rule, "number_out_of_range");
}

/// The migration that added `key_hash` computed it in SQL for the rows it
/// found; lookups compute it in Rust. Both must agree.
#[tokio::test]
async fn the_key_hash_of_the_migration_is_the_one_lookups_compute() {
    let h = harness().await;
    for (customer, id) in [("cus_a", "e-1"), ("cus_ü", "é\u{1F600}"), ("", "")] {
        let in_sql: Vec<u8> = sqlx::query_scalar(
            "SELECT sha256(\
                 int8send(octet_length(convert_to($1::text, 'UTF8'))::int8) || convert_to($1::text, 'UTF8') \
                 || int8send(octet_length(convert_to($2::text, 'UTF8'))::int8) || convert_to($2::text, 'UTF8'))",
        )
        .bind(customer)
        .bind(id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert_eq!(
            in_sql,
            tally_ingest::log::rejection_key_hash(customer, id),
            "{customer:?} {id:?}"
        );
    }
}

/// PostgreSQL text cannot hold NUL: a lookup with one is the caller's bad
/// input (INVALID_ARGUMENT), and a rejected event whose id has one is found.
#[tokio::test]
async fn nul_characters_in_lookups_are_bad_input_not_internal_errors() {
    let mut h = harness().await;
    let response = h.send(vec![event("cus_a", "nul\0id")]).await;
    assert_eq!(outcomes(&response.results), [EventOutcome::Rejected]);
    let status = h
        .client
        .get_ingest_status(GetIngestStatusRequest {
            customer_id: "cus_a".into(),
            event_id: "nul\0id".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, IngestState::Rejected as i32);

    let read = h
        .client
        .read_events(tally_proto::ingest::ReadEventsRequest {
            customer_id: "cus_\0".into(),
            time_range: Some(tally_proto::common::TimeRange {
                start_time: Some(tally_runtime::clock_service::chrono_to_timestamp(
                    start_time() - chrono::Duration::days(1),
                )),
                end_time: Some(tally_runtime::clock_service::chrono_to_timestamp(
                    start_time(),
                )),
            }),
            ..Default::default()
        })
        .await;
    let error = match read {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            stream.message().await.unwrap_err()
        }
    };
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
}
