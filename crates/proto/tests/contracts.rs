//! The generated contracts encode, decode and describe themselves.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::{FileDescriptorSet, Timestamp};
use tally_proto::{FILE_DESCRIPTOR_SET, SERVICE_NAMES, common, events, ingest};

fn usage_event() -> events::UsageEvent {
    events::UsageEvent {
        id: "req-81f2".to_owned(),
        customer_id: "cus_01JABCDEF".to_owned(),
        event_type: "api_calls".to_owned(),
        timestamp: Some(Timestamp {
            seconds: 1_740_830_400,
            nanos: 123_000_000,
        }),
        properties: HashMap::from([
            ("tokens".to_owned(), "1200.5".to_owned()),
            ("model".to_owned(), "large".to_owned()),
        ]),
        source: "api-gateway".to_owned(),
    }
}

#[test]
fn usage_event_round_trips_through_protobuf() -> Result<(), prost::DecodeError> {
    let event = usage_event();
    let decoded = events::UsageEvent::decode(event.encode_to_vec().as_slice())?;
    assert_eq!(decoded, event);
    Ok(())
}

#[test]
fn usage_accepted_and_batch_results_round_trip() -> Result<(), prost::DecodeError> {
    let accepted = events::UsageAccepted {
        event: Some(usage_event()),
        sequence_number: 42,
        ingested_at: Some(Timestamp {
            seconds: 1_740_830_401,
            nanos: 0,
        }),
        intake: events::Intake::Grpc.into(),
    };
    let decoded = events::UsageAccepted::decode(accepted.encode_to_vec().as_slice())?;
    assert_eq!(decoded, accepted);
    assert_eq!(decoded.intake(), events::Intake::Grpc);

    let response = ingest::IngestBatchResponse {
        results: vec![ingest::EventResult {
            event_id: "req-81f2".to_owned(),
            outcome: ingest::EventOutcome::Rejected.into(),
            sequence_number: 0,
            violations: vec![common::FieldViolation {
                field: "timestamp".to_owned(),
                rule: "too_far_in_future".to_owned(),
                description: "timestamp is 6 minutes in the future; at most 5 allowed".to_owned(),
            }],
            rejection_id: "rej_01J".to_owned(),
        }],
        counts: Some(ingest::OutcomeCounts {
            rejected: 1,
            ..Default::default()
        }),
    };
    let decoded = ingest::IngestBatchResponse::decode(response.encode_to_vec().as_slice())?;
    assert_eq!(decoded, response);
    Ok(())
}

#[test]
fn descriptor_set_names_every_service() -> Result<(), prost::DecodeError> {
    let descriptors = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let services: BTreeSet<String> = descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect();
    for name in SERVICE_NAMES {
        assert!(
            services.contains(*name),
            "{name} missing from the descriptor set: {services:?}"
        );
    }
    assert_eq!(
        services.len(),
        SERVICE_NAMES.len(),
        "SERVICE_NAMES is out of date: {services:?}"
    );
    Ok(())
}

#[test]
fn descriptor_set_names_every_bus_message() -> Result<(), prost::DecodeError> {
    let descriptors = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let events_file = descriptors
        .file
        .iter()
        .find(|file| file.package() == "tally.events.v1");
    let messages: BTreeSet<&str> = events_file
        .map(|file| {
            file.message_type
                .iter()
                .map(|message| message.name())
                .collect()
        })
        .unwrap_or_default();
    for name in [
        "UsageEvent",
        "UsageAccepted",
        "UsageRejected",
        "SubscriptionEvent",
        "InvoiceEvent",
        "PaymentEvent",
        "ThresholdCrossed",
    ] {
        assert!(
            messages.contains(name),
            "tally.events.v1.{name} missing: {messages:?}"
        );
    }
    Ok(())
}
