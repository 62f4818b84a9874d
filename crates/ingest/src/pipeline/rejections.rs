//! What a rejection keeps of its event, the fields a conflict names, and
//! the `usage-rejected` message.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use prost::Message as _;
use tally_bus::Message;
use tally_domain::ids::CustomerId;
use tally_proto::common::FieldViolation;
use tally_proto::events::{UsageEvent as WireEvent, UsageRejected};
use tally_runtime::clock_service::chrono_to_timestamp;

use crate::log::RejectionRecord;
use crate::validation::{ValidEvent, violation};

/// Longest text field (id, customer, event type, source) of a summarized event, in characters.
const SUMMARY_TEXT_CHARS: usize = 256;

/// What a rejection keeps of `event`: the event as received when its encoding
/// is at most `max_bytes`; otherwise a summary — id, customer, event type and
/// source cut to 256 characters, the timestamp, no properties — flagged as such
/// (`true`), so the rejection stays small enough to store and to publish on
/// `usage-rejected` (Pub/Sub takes at most 10 MB) and is never replayed as if
/// it were the event.
pub(super) fn kept_event(event: &WireEvent, max_bytes: usize) -> (WireEvent, bool) {
    if event.encoded_len() <= max_bytes {
        return (event.clone(), false);
    }
    let cut = |text: &str| text.chars().take(SUMMARY_TEXT_CHARS).collect::<String>();
    let summary = WireEvent {
        id: cut(&event.id),
        customer_id: cut(&event.customer_id),
        event_type: cut(&event.event_type),
        timestamp: event.timestamp,
        properties: HashMap::new(),
        source: cut(&event.source),
    };
    (summary, true)
}

/// The fields in which `event` differs from the accepted `original` (rule `conflict`).
pub(super) fn conflict_violations(
    original: Option<&WireEvent>,
    event: &ValidEvent,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let Some(original) = original else {
        return vec![violation(
            "event",
            "conflict",
            "an event with this id was accepted with a different payload (its partition is archived)"
                .to_owned(),
        )];
    };
    if original.event_type != event.event_type() {
        violations.push(violation(
            "event_type",
            "conflict",
            format!(
                "accepted as {:?}, now {:?}",
                original.event_type,
                event.event_type()
            ),
        ));
    }
    let original_time = original
        .timestamp
        .as_ref()
        .and_then(crate::validation::to_instant);
    if original_time != Some(event.timestamp) {
        violations.push(violation(
            "timestamp",
            "conflict",
            format!(
                "accepted with {}, now {}",
                original_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
                event.timestamp.to_rfc3339()
            ),
        ));
    }
    let keys: BTreeSet<&String> = original
        .properties
        .keys()
        .chain(event.event.properties.keys())
        .collect();
    for key in keys {
        let before = original.properties.get(key);
        let after = event.event.properties.get(key);
        if before != after {
            violations.push(violation(
                &format!("properties.{key}"),
                "conflict",
                format!("accepted as {before:?}, now {after:?}"),
            ));
        }
    }
    if violations.is_empty() {
        violations.push(violation(
            "event",
            "conflict",
            "an event with this id was accepted with a different payload".to_owned(),
        ));
    }
    violations
}

/// The `usage-rejected` message of a rejection.
pub(super) fn rejected_message(rejection: &RejectionRecord, rejected_at: DateTime<Utc>) -> Message {
    let payload = UsageRejected {
        rejection_id: rejection.id.to_string(),
        event: rejection.event.clone(),
        kind: rejection.kind as i32,
        violations: rejection.violations.clone(),
        raw_payload: rejection.raw_payload.clone().unwrap_or_default(),
        raw_content_type: rejection.raw_content_type.clone().unwrap_or_default(),
        rejected_at: Some(chrono_to_timestamp(rejected_at)),
        intake: rejection.intake as i32,
    }
    .encode_to_vec();
    let message =
        Message::new("tally.events.v1.UsageRejected", 1, payload).with_id(rejection.id.as_str());
    // Only a valid customer id orders the message: a rejected event's customer
    // may be anything, and Pub/Sub refuses ordering keys over 1 KB (the outbox
    // would retry that message forever).
    match rejection.event.as_ref() {
        Some(event) if CustomerId::check(&event.customer_id).is_ok() => {
            message.with_ordering_key(event.customer_id.clone())
        }
        _ => message,
    }
}
