//! The gRPC surface: outcomes, validation rules, limits, backfills and replay,
//! status, replay of the log, the stream, partitions, restarts, concurrency.

use std::collections::HashMap;

use chrono::Duration;
use futures::StreamExt;
use tally_ingest::Incoming;
use tally_proto::common::TimeRange;
use tally_proto::events::UsageEvent;
use tally_proto::ingest::*;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::config::IngestConfig;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn duplicates_and_conflicts_within_and_across_batches() {
    let mut h = harness().await;
    let mut changed = event("cus_a", "e2");
    changed.properties.insert("tokens".into(), "9999".into());
    let mut bad = event("cus_a", "bad id");
    bad.event_type = "Api".into();
    let first = h
        .send(vec![
            event("cus_a", "e1"),
            event("cus_a", "e2"),
            bad,
            event("cus_a", "e1"),
            changed.clone(),
            event("cus_b", "e1"),
        ])
        .await;
    assert_eq!(
        outcomes(&first.results),
        [
            EventOutcome::Accepted,
            EventOutcome::Accepted,
            EventOutcome::Rejected,
            EventOutcome::Duplicate,
            EventOutcome::Conflict,
            EventOutcome::Accepted,
        ]
    );
    let r = &first.results;
    assert_eq!(
        r[3].sequence_number, r[0].sequence_number,
        "a duplicate names the original"
    );
    assert_eq!(r[4].sequence_number, r[1].sequence_number);
    assert_ne!(
        r[0].sequence_number, r[5].sequence_number,
        "ids are per customer"
    );
    let rules: Vec<_> = r[2]
        .violations
        .iter()
        .map(|v| (v.field.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("id", "invalid_characters"),
            ("event_type", "invalid_characters")
        ]
    );
    assert!(r[2].rejection_id.starts_with("rej_"));
    assert_eq!(r[4].violations[0].field, "properties.tokens");
    assert_eq!(r[4].violations[0].rule, "conflict");
    assert_eq!(
        first.counts,
        Some(OutcomeCounts {
            accepted: 3,
            duplicate: 1,
            conflict: 1,
            rejected: 1
        })
    );

    // A later batch: the same ids are duplicates / conflicts forever.
    let mut moved = event("cus_a", "e1");
    moved.timestamp = Some(chrono_to_timestamp(start_time() - Duration::minutes(2)));
    let second = h
        .send(vec![event("cus_a", "e2"), moved, event("cus_a", "e3")])
        .await;
    assert_eq!(
        outcomes(&second.results),
        [
            EventOutcome::Duplicate,
            EventOutcome::Conflict,
            EventOutcome::Accepted
        ]
    );
    assert_eq!(second.results[1].violations[0].field, "timestamp");

    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 4);
    assert_eq!(h.count("SELECT count(*) FROM ingest.event_keys").await, 4);
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.rejected_events WHERE kind = 2")
            .await,
        2,
        "conflicts are kept for review"
    );
    assert_eq!(
        h.count("SELECT sum(duplicate_count)::int8 FROM ingest.event_keys")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.outbox WHERE topic = 'usage-rejected'")
            .await,
        3,
        "every rejection and conflict is published on usage-rejected"
    );
    // Each batch left exactly one outbox row, holding only its accepted events.
    assert_eq!(
        h.count("SELECT sum(event_count)::int8 FROM ingest.accepted_batches")
            .await,
        4
    );
}

/// One row per rule: the event, and the (field, rule) it must be rejected with.
#[tokio::test]
async fn every_validation_rule_names_field_and_rule() {
    let mut h = harness().await;
    let now = start_time();
    let with = |change: &dyn Fn(&mut UsageEvent)| {
        let mut e = event("cus_a", "ok-1");
        change(&mut e);
        e
    };
    let cases: Vec<(UsageEvent, &str, &str)> = vec![
        (with(&|e| e.id.clear()), "id", "required"),
        (with(&|e| e.id = "x".repeat(129)), "id", "max_length"),
        (
            with(&|e| e.id = "tab\there".into()),
            "id",
            "invalid_characters",
        ),
        (with(&|e| e.customer_id.clear()), "customer_id", "required"),
        (
            with(&|e| e.customer_id = "acme".into()),
            "customer_id",
            "invalid_prefix",
        ),
        (
            with(&|e| e.customer_id = "cus_a-b".into()),
            "customer_id",
            "invalid_characters",
        ),
        (with(&|e| e.event_type.clear()), "event_type", "required"),
        (
            with(&|e| e.event_type = "9calls".into()),
            "event_type",
            "invalid_characters",
        ),
        (
            with(&|e| e.event_type = "a".repeat(65)),
            "event_type",
            "max_length",
        ),
        (with(&|e| e.timestamp = None), "timestamp", "required"),
        (
            with(&|e| e.timestamp = Some(chrono_to_timestamp(now + Duration::minutes(6)))),
            "timestamp",
            "too_far_in_future",
        ),
        (
            with(&|e| e.timestamp = Some(chrono_to_timestamp(now - Duration::days(36)))),
            "timestamp",
            "before_backfill_window",
        ),
        (
            with(&|e| {
                e.timestamp = Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 2_000_000_000,
                })
            }),
            "timestamp",
            "invalid_timestamp",
        ),
        (
            with(&|e| e.properties = (0..51).map(|n| (format!("p{n}"), "1".into())).collect()),
            "properties",
            "max_properties",
        ),
        (
            with(&|e| {
                e.properties.insert("k".repeat(65), "1".into());
            }),
            &*Box::leak(format!("properties.{}", "k".repeat(65)).into_boxed_str()),
            "max_length",
        ),
        (
            with(&|e| {
                e.properties.insert("note".into(), "v".repeat(513));
            }),
            "properties.note",
            "max_length",
        ),
        (
            with(&|e| {
                e.properties.insert("note".into(), "a\0b".into());
            }),
            "properties.note",
            "invalid_characters",
        ),
        (
            with(&|e| {
                e.properties.insert(String::new(), "1".into());
            }),
            "properties.",
            "required",
        ),
        (
            with(&|e| {
                e.properties = (0..40)
                    .map(|n| (format!("p{n}"), "v".repeat(500)))
                    .collect()
            }),
            "event",
            "max_event_size",
        ),
        (
            with(&|e| e.source = "s".repeat(129)),
            "source",
            "max_length",
        ),
    ];
    let events: Vec<UsageEvent> = cases.iter().map(|(event, _, _)| event.clone()).collect();
    let response = h.send(events).await;
    for ((_, field, rule), result) in cases.iter().zip(&response.results) {
        assert_eq!(
            result.outcome,
            EventOutcome::Rejected as i32,
            "{field} {rule}"
        );
        let found: Vec<_> = result
            .violations
            .iter()
            .map(|v| (v.field.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(found, [(*field, *rule)], "expected exactly {field}: {rule}");
        assert!(!result.violations[0].description.is_empty());
    }
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.rejected_events WHERE kind = 1")
            .await,
        cases.len() as i64,
        "every rejected event is kept"
    );
    // The NUL-bearing event is kept byte-exact in its protobuf form.
    let listed = h
        .client
        .list_rejected_events(ListRejectedEventsRequest {
            rule: "invalid_characters".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rejected_events.iter().any(|r| {
        r.rejection
            .as_ref()
            .and_then(|r| r.event.as_ref())
            .is_some_and(|e| e.properties.get("note").map(String::as_str) == Some("a\0b"))
    }));
}

#[tokio::test]
async fn batch_limits_fail_the_call_with_the_field() {
    let config = IngestConfig {
        max_batch_events: 5,
        ..IngestConfig::default()
    };
    let mut h = harness_with(in_process(), config).await;
    let empty = h
        .client
        .ingest_batch(IngestBatchRequest { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().starts_with("events:"));
    let events = (0..6).map(|n| event("cus_a", &format!("e{n}"))).collect();
    let too_many = h
        .client
        .ingest_batch(IngestBatchRequest { events })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many.message().contains("at most 5"),
        "{}",
        too_many.message()
    );
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 0);
}

#[tokio::test]
async fn a_backfill_lets_rejected_old_events_be_replayed() {
    let mut h = harness().await;
    let old_time = start_time() - Duration::days(50);
    let old = event_at("cus_a", "old-1", old_time);
    let first = h
        .send(vec![old.clone(), event_at("cus_b", "old-2", old_time)])
        .await;
    assert_eq!(
        outcomes(&first.results),
        [EventOutcome::Rejected, EventOutcome::Rejected]
    );
    let rejection_id = first.results[0].rejection_id.clone();

    let listed = h
        .client
        .list_rejected_events(ListRejectedEventsRequest {
            customer_id: "cus_a".into(),
            rule: "before_backfill_window".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rejected_events.len(), 1);
    assert_eq!(
        listed.rejected_events[0].state,
        RejectedEventState::Open as i32
    );

    let range = TimeRange {
        start_time: Some(chrono_to_timestamp(old_time - Duration::days(1))),
        end_time: Some(chrono_to_timestamp(old_time + Duration::days(1))),
    };
    let open = OpenBackfillRequest {
        idempotency_key: "migration-1".into(),
        customer_id: "cus_a".into(),
        event_time_range: Some(range),
        duration: None,
        reason: "import from the old system".into(),
    };
    let backfill = h
        .client
        .open_backfill(open.clone())
        .await
        .unwrap()
        .into_inner()
        .backfill
        .unwrap();
    let again = h
        .client
        .open_backfill(open.clone())
        .await
        .unwrap()
        .into_inner()
        .backfill
        .unwrap();
    assert_eq!(backfill.id, again.id, "idempotent by key");
    let conflicting = h
        .client
        .open_backfill(OpenBackfillRequest {
            reason: "other".into(),
            ..open.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(conflicting.code(), Code::AlreadyExists);
    let future = h
        .client
        .open_backfill(OpenBackfillRequest {
            idempotency_key: "future".into(),
            event_time_range: Some(TimeRange {
                start_time: Some(chrono_to_timestamp(start_time())),
                end_time: Some(chrono_to_timestamp(start_time() + Duration::days(1))),
            }),
            ..open.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::InvalidArgument);

    // Replaying after the fix accepts it; a second replay finds a duplicate.
    let replay = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec![rejection_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&replay.results), [EventOutcome::Accepted]);
    let replay = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec![rejection_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&replay.results), [EventOutcome::Duplicate]);
    let state: (i16, i32) =
        sqlx::query_as("SELECT state, replay_count FROM ingest.rejected_events WHERE id = $1")
            .bind(&rejection_id)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(state, (RejectedEventState::Resolved as i16, 2));
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.events WHERE intake = 3")
            .await,
        1,
        "recorded as a replay"
    );

    // The other customer has no backfill: still rejected, stays open, nothing new stored.
    let other = listed_id(&mut h, "cus_b").await;
    let replay = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec![other.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&replay.results), [EventOutcome::Rejected]);
    assert_eq!(replay.results[0].rejection_id, other);
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.rejected_events").await,
        2
    );

    let unknown = h
        .client
        .replay_rejected_events(ReplayRejectedEventsRequest {
            rejection_ids: vec!["rej_nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Closing the backfill restores the window.
    h.client
        .close_backfill(CloseBackfillRequest {
            backfill_id: backfill.id.clone(),
        })
        .await
        .unwrap();
    let late = h.send(vec![event_at("cus_a", "old-3", old_time)]).await;
    assert_eq!(outcomes(&late.results), [EventOutcome::Rejected]);
    let backfills = h
        .client
        .list_backfills(ListBackfillsRequest {
            customer_id: "cus_a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backfills;
    assert_eq!(backfills.len(), 1);
    assert!(backfills[0].closed_at.is_some());
}

async fn listed_id(h: &mut Harness, customer: &str) -> String {
    h.client
        .list_rejected_events(ListRejectedEventsRequest {
            customer_id: customer.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rejected_events[0]
        .rejection
        .as_ref()
        .unwrap()
        .rejection_id
        .clone()
}

#[tokio::test]
async fn status_traces_sent_but_never_billed() {
    let mut h = harness().await;
    let status = |customer: &str, id: &str| GetIngestStatusRequest {
        customer_id: customer.into(),
        event_id: id.into(),
    };
    let unseen = h
        .client
        .get_ingest_status(status("cus_a", "e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unseen.state, IngestState::NotSeen as i32);

    let mut conflicting = event("cus_a", "e1");
    conflicting.properties.insert("tokens".into(), "1".into());
    let mut invalid = event("cus_a", "e2");
    invalid.timestamp = None;
    h.send(vec![
        event("cus_a", "e1"),
        event("cus_a", "e1"),
        conflicting,
        invalid,
    ])
    .await;

    let accepted = h
        .client
        .get_ingest_status(status("cus_a", "e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state, IngestState::AcceptedWithConflicts as i32);
    assert_eq!(accepted.duplicate_count, 1);
    assert_eq!(accepted.rejections.len(), 1);
    assert!(!accepted.published, "not relayed yet");
    let stored = accepted.accepted.unwrap();
    assert_eq!(stored.event.unwrap().properties["tokens"], "1200");

    h.ingest.relay().relay_once().await.unwrap();
    let published = h
        .client
        .get_ingest_status(status("cus_a", "e1"))
        .await
        .unwrap()
        .into_inner();
    assert!(published.published);

    let rejected = h
        .client
        .get_ingest_status(status("cus_a", "e2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, IngestState::Rejected as i32);
    let violations = &rejected.rejections[0]
        .rejection
        .as_ref()
        .unwrap()
        .violations;
    assert_eq!(violations[0].rule, "required");

    let stats = h
        .client
        .get_ingest_stats(GetIngestStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.accepted, stats.duplicate, stats.conflict), (1, 1, 1));
    assert_eq!(stats.rejected_by_rule.get("required"), Some(&1));
    assert_eq!(
        stats.published_sequence_number,
        stats.log_high_water_sequence_number
    );
}

#[tokio::test]
async fn read_events_replays_in_time_order_and_resumes() {
    let mut h = harness().await;
    let base = start_time() - Duration::days(30); // previous month
    let mut all = Vec::new();
    for n in 0..2500 {
        let mut e = event_at(
            "cus_a",
            &format!("e{n:05}"),
            base + Duration::minutes(n * 17),
        );
        if n % 5 == 0 {
            e.event_type = "images".into();
        }
        all.push(e);
    }
    // Sent in reverse time order: replay still comes back in time order.
    all.reverse();
    for chunk in all.chunks(1000) {
        h.send(chunk.to_vec()).await;
    }
    h.send(vec![event("cus_b", "other")]).await;
    let range = TimeRange {
        start_time: Some(chrono_to_timestamp(base)),
        end_time: Some(chrono_to_timestamp(start_time())),
    };
    let request = ReadEventsRequest {
        customer_id: "cus_a".into(),
        time_range: Some(range),
        ..Default::default()
    };
    let chunks: Vec<ReadEventsResponse> = h
        .client
        .read_events(request.clone())
        .await
        .unwrap()
        .into_inner()
        .map(|chunk| chunk.unwrap())
        .collect()
        .await;
    assert_eq!(
        chunks.iter().map(|c| c.events.len()).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
    let ids: Vec<String> = chunks
        .iter()
        .flat_map(|c| {
            c.events
                .iter()
                .map(|e| e.event.as_ref().unwrap().id.clone())
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "event-time order");
    let months = h
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ingest.events'::regclass")
        .await;
    assert_eq!(months, 2, "one partition per month");

    // Resume after the first chunk; events ingested later are not in the snapshot.
    let snapshot = chunks[0].max_sequence_number;
    h.send(vec![event_at("cus_a", "late", base + Duration::seconds(1))])
        .await;
    let rest: Vec<ReadEventsResponse> = h
        .client
        .read_events(ReadEventsRequest {
            resume_token: chunks[0].resume_token.clone(),
            max_sequence_number: snapshot,
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|chunk| chunk.unwrap())
        .collect()
        .await;
    assert_eq!(rest.iter().map(|c| c.events.len()).sum::<usize>(), 1500);

    let images: usize = h
        .client
        .read_events(ReadEventsRequest {
            event_type: "images".into(),
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|chunk| chunk.unwrap().events.len())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(images, 500);

    let bad = h
        .client
        .read_events(ReadEventsRequest {
            resume_token: "nonsense".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_stream_acknowledges_in_order_within_the_window() {
    let mut h = harness().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    for batch in 0..20u64 {
        let events = (0..50)
            .map(|n| event("cus_s", &format!("b{batch}-{n}")))
            .collect();
        sender
            .send(IngestStreamRequest {
                batch_sequence: batch + 1,
                events,
            })
            .await
            .unwrap();
    }
    // A repeated batch number ends the stream after everything before it is acknowledged.
    sender
        .send(IngestStreamRequest {
            batch_sequence: 20,
            events: vec![event("cus_s", "x")],
        })
        .await
        .unwrap();
    drop(sender);
    let mut responses = h
        .client
        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut acknowledged = Vec::new();
    let ending = loop {
        match responses.message().await {
            Ok(Some(response)) => {
                assert_eq!(response.window, 8);
                assert_eq!(response.counts.unwrap().accepted, 50);
                acknowledged.push(response.batch_sequence);
            }
            Ok(None) => panic!("the stream should end with an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(acknowledged, (1..=20).collect::<Vec<_>>());
    assert_eq!(ending.code(), Code::InvalidArgument);
    assert!(ending.message().contains("batch_sequence"));
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 1000);
}

#[tokio::test]
async fn keys_are_unique_forever_even_after_a_month_is_detached() {
    let mut h = harness().await;
    let old = start_time() - Duration::days(20);
    let old = old - Duration::days(i64::from(chrono::Datelike::day(&old)));
    let first = h.send(vec![event_at("cus_a", "archived", old)]).await;
    assert_eq!(outcomes(&first.results), [EventOutcome::Accepted]);
    let partition: String = sqlx::query_scalar(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'ingest.events'::regclass",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE ingest.events DETACH PARTITION {partition}"
    )))
    .execute(&h.db.pool)
    .await
    .unwrap();
    let again = h.send(vec![event_at("cus_a", "archived", old)]).await;
    assert_eq!(outcomes(&again.results), [EventOutcome::Duplicate]);
    let mut changed = event_at("cus_a", "archived", old);
    changed.properties.clear();
    let conflict = h.send(vec![changed]).await;
    assert_eq!(outcomes(&conflict.results), [EventOutcome::Conflict]);
    assert_eq!(
        conflict.results[0].violations[0].field, "event",
        "the original is archived"
    );
}

#[tokio::test]
async fn a_restarted_ingest_still_knows_every_key() {
    let mut h = harness().await;
    h.send(vec![event("cus_a", "e1")]).await;
    let mut restarted = h.restart().await;
    let again = restarted
        .send(vec![event("cus_a", "e1"), event("cus_a", "e2")])
        .await;
    assert_eq!(
        outcomes(&again.results),
        [EventOutcome::Duplicate, EventOutcome::Accepted]
    );
}

#[tokio::test]
async fn concurrent_batches_with_the_same_keys_accept_each_once() {
    let h = harness().await;
    let events: Vec<UsageEvent> = (0..300)
        .map(|n| event(&format!("cus_c{}", n % 30), &format!("e{n}")))
        .collect();
    let mut tasks = Vec::new();
    for round in 0..8usize {
        let mut batch = events.clone();
        batch.rotate_left(round * 37);
        let ingestor = std::sync::Arc::clone(h.ingest.ingestor());
        tasks.push(tokio::spawn(async move {
            ingestor
                .ingest(
                    batch.into_iter().map(Incoming::Event).collect(),
                    tally_proto::events::Intake::Grpc,
                    tally_ingest::RejectionStorage::Store,
                )
                .await
                .unwrap()
                .counts
        }));
    }
    let mut accepted = 0;
    let mut duplicate = 0;
    for task in tasks {
        let counts = task.await.unwrap();
        accepted += counts.accepted;
        duplicate += counts.duplicate;
    }
    assert_eq!((accepted, duplicate), (300, 7 * 300));
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 300);
    let per_key: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT customer_id || '/' || event_id, duplicate_count FROM ingest.event_keys",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(per_key.values().all(|count| *count == 7));
}
