//! Turning a usage event as received into a [`ValidEvent`], or into every
//! rule it broke.
//!
//! The structural rules (id, customer, event type, timestamp window, property
//! names and sizes) are the domain crate's (`tally_domain::event`), so every
//! service agrees on what a valid event is; this module adds the intake rules
//! (encoded size, source length, timestamp range) and names each rule with the
//! stable `rule` string of `tally.common.v1.FieldViolation`.

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tally_domain::event::{EventLimits, EventParts, EventRule, FieldError, check_event};
use tally_domain::ids::IdError;
use tally_proto::common::FieldViolation;
use tally_proto::events::UsageEvent as WireEvent;
use tally_runtime::config::IngestConfig;

/// Longest `source`, in bytes.
pub const MAX_SOURCE_BYTES: usize = 128;

/// The rule name of an event older than the backfill window.
pub const RULE_BEFORE_BACKFILL_WINDOW: &str = "before_backfill_window";

/// An event that passed every rule: the event as received, its instant and
/// its payload identity.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    /// The event as received (and as it will be committed).
    pub event: WireEvent,
    /// Its event time.
    pub timestamp: DateTime<Utc>,
    /// SHA-256 of the canonical payload: equal for a duplicate, different for a conflict.
    pub payload_hash: [u8; 32],
}

impl ValidEvent {
    /// `cus_…`.
    pub fn customer_id(&self) -> &str {
        &self.event.customer_id
    }

    /// The producer's id.
    pub fn event_id(&self) -> &str {
        &self.event.id
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event.event_type
    }
}

/// The configured rules.
#[derive(Debug, Clone)]
pub struct Validator {
    limits: EventLimits,
    max_event_bytes: usize,
}

impl Validator {
    /// Rules from the `ingest` config section.
    pub fn new(config: &IngestConfig) -> Self {
        Self {
            limits: EventLimits {
                max_age: Duration::days(i64::from(config.backfill_window_days)),
                max_future_skew: Duration::seconds(i64::from(config.max_future_skew_seconds)),
                max_properties: config.max_properties,
                max_property_name_len: config.max_property_key_bytes,
                max_text_len: config.max_property_value_bytes,
            },
            max_event_bytes: config.max_event_bytes,
        }
    }

    /// Validates `event` at `now`. With `allow_old` (an open backfill covers
    /// it) the backfill-window rule is not applied; the future rule always is.
    /// On failure the event comes back with every violated rule, in field order.
    // Both variants carry the event by value (it moves, never copies); boxing
    // one would only add an allocation.
    #[allow(clippy::result_large_err)]
    pub fn validate(
        &self,
        event: WireEvent,
        now: DateTime<Utc>,
        allow_old: bool,
    ) -> Result<ValidEvent, (WireEvent, Vec<FieldViolation>)> {
        let mut violations = Vec::new();
        let encoded_len = event.encoded_len();
        if encoded_len > self.max_event_bytes {
            violations.push(violation(
                "event",
                "max_event_size",
                format!(
                    "the event is {encoded_len} bytes encoded, at most {} allowed",
                    self.max_event_bytes
                ),
            ));
        }
        if event.source.len() > MAX_SOURCE_BYTES {
            violations.push(violation(
                "source",
                "max_length",
                format!(
                    "source is {} bytes, at most {MAX_SOURCE_BYTES} allowed",
                    event.source.len()
                ),
            ));
        }
        // PostgreSQL text cannot hold NUL; say so here rather than fail the batch.
        if event.source.contains('\0') {
            violations.push(violation(
                "source",
                "invalid_characters",
                "source contains a NUL character".to_owned(),
            ));
        }
        for (key, value) in &event.properties {
            if value.contains('\0') {
                violations.push(violation(
                    &format!("properties.{key}"),
                    "invalid_characters",
                    format!("property {key:?} contains a NUL character"),
                ));
            }
        }
        // An out-of-range timestamp is reported here; the domain then checks the
        // other fields with `now` in its place (so it adds neither `required`
        // nor a window rule for it).
        let timestamp = match &event.timestamp {
            None => None,
            Some(timestamp) => match to_instant(timestamp) {
                Some(instant) => Some(instant),
                None => {
                    violations.push(violation(
                        "timestamp",
                        "invalid_timestamp",
                        format!(
                            "timestamp {}s {}ns is not a valid instant",
                            timestamp.seconds, timestamp.nanos
                        ),
                    ));
                    Some(now)
                }
            },
        };
        let mut limits = self.limits;
        if allow_old {
            limits.max_age = Duration::days(365 * 1000);
        }
        // Sorted by name: the order the payload hash needs.
        let mut properties: Vec<(&str, &str)> = event
            .properties
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        properties.sort_unstable();
        let errors = check_event(
            EventParts {
                id: &event.id,
                customer: &event.customer_id,
                event_type: &event.event_type,
                timestamp,
                properties: &properties,
            },
            now,
            &limits,
        );
        violations.extend(
            errors
                .iter()
                .map(|error| describe(error, timestamp, &self.limits)),
        );
        match timestamp {
            Some(timestamp) if violations.is_empty() => {
                let payload_hash = payload_hash(
                    &event.customer_id,
                    &event.id,
                    &event.event_type,
                    timestamp,
                    properties.iter().copied(),
                );
                Ok(ValidEvent {
                    event,
                    timestamp,
                    payload_hash,
                })
            }
            _ => {
                violations.sort_by_key(|violation| field_order(&violation.field));
                Err((event, violations))
            }
        }
    }
}

/// Whether every violation is the backfill-window rule (an open backfill may lift it).
pub fn only_too_old(violations: &[FieldViolation]) -> bool {
    !violations.is_empty()
        && violations
            .iter()
            .all(|violation| violation.rule == RULE_BEFORE_BACKFILL_WINDOW)
}

/// The SHA-256 identity of an event's payload: customer, id, type, timestamp
/// and properties (sorted), each length-prefixed so no two payloads collide by
/// concatenation. `source` is deliberately not part of it.
pub fn payload_hash<'a>(
    customer_id: &str,
    event_id: &str,
    event_type: &str,
    timestamp: DateTime<Utc>,
    sorted_properties: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(customer_id.as_bytes());
    field(event_id.as_bytes());
    field(event_type.as_bytes());
    field(&timestamp.timestamp().to_le_bytes());
    field(&timestamp.timestamp_subsec_nanos().to_le_bytes());
    for (key, value) in sorted_properties {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    hasher.finalize().into()
}

/// A protobuf timestamp as an instant, if it is one.
pub fn to_instant(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// A violation with its three parts.
pub fn violation(field: &str, rule: &str, description: String) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        rule: rule.to_owned(),
        description,
    }
}

fn describe(
    error: &FieldError,
    timestamp: Option<DateTime<Utc>>,
    limits: &EventLimits,
) -> FieldViolation {
    let field = match error.field.as_str() {
        "customer" => "customer_id".to_owned(),
        other => other.to_owned(),
    };
    let rule = match &error.rule {
        EventRule::InvalidId(IdError::Empty { .. }) | EventRule::Missing => "required",
        EventRule::EmptyPropertyName => "required",
        EventRule::InvalidId(IdError::WrongPrefix { .. } | IdError::EmptyBody { .. }) => {
            "invalid_prefix"
        }
        EventRule::InvalidId(IdError::TooLong { .. })
        | EventRule::PropertyNameTooLong { .. }
        | EventRule::TextTooLong { .. } => "max_length",
        EventRule::InvalidId(IdError::InvalidCharacter { .. })
        | EventRule::PropertyNameControlCharacter => "invalid_characters",
        EventRule::InFuture { .. } => "too_far_in_future",
        EventRule::TooOld { .. } => RULE_BEFORE_BACKFILL_WINDOW,
        EventRule::TooManyProperties { .. } => "max_properties",
    };
    let description = match (&error.rule, timestamp) {
        (EventRule::TooOld { .. }, Some(instant)) => format!(
            "timestamp {} is older than the backfill window of {} days (open a backfill for the customer to accept it)",
            instant.to_rfc3339(),
            limits.max_age.num_days()
        ),
        (EventRule::InFuture { .. }, Some(instant)) => format!(
            "timestamp {} is more than {} s ahead of the service clock",
            instant.to_rfc3339(),
            limits.max_future_skew.num_seconds()
        ),
        (rule, _) => format!("{field} {rule}"),
    };
    FieldViolation {
        field,
        rule: rule.to_owned(),
        description,
    }
}

fn field_order(field: &str) -> usize {
    [
        "event",
        "id",
        "customer_id",
        "event_type",
        "timestamp",
        "properties",
        "source",
    ]
    .iter()
    .position(|name| field == *name || field.starts_with("properties.") && *name == "properties")
    .unwrap_or(7)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn event() -> WireEvent {
        WireEvent {
            id: "req-1".into(),
            customer_id: "cus_acme".into(),
            event_type: "api_calls".into(),
            timestamp: Some(tally_runtime::clock_service::chrono_to_timestamp(
                now() - Duration::minutes(1),
            )),
            properties: [("tokens".to_owned(), "1200".to_owned())].into(),
            source: "gateway".into(),
        }
    }

    fn rules(event: &WireEvent) -> Vec<(String, String)> {
        Validator::new(&IngestConfig::default())
            .validate(event.clone(), now(), false)
            .unwrap_err()
            .1
            .into_iter()
            .map(|violation| (violation.field, violation.rule))
            .collect()
    }

    fn pair(field: &str, rule: &str) -> (String, String) {
        (field.to_owned(), rule.to_owned())
    }

    #[test]
    fn a_valid_event_passes_with_a_stable_hash() {
        let validator = Validator::new(&IngestConfig::default());
        let valid = validator.validate(event(), now(), false).unwrap();
        let mut other_source = event();
        other_source.source = "batch-job".into();
        let again = validator.validate(other_source, now(), false).unwrap();
        assert_eq!(
            valid.payload_hash, again.payload_hash,
            "source is not payload"
        );
        let mut changed = event();
        changed.properties.insert("tokens".into(), "1201".into());
        let changed = validator.validate(changed, now(), false).unwrap();
        assert_ne!(valid.payload_hash, changed.payload_hash);
    }

    #[test]
    fn every_rule_names_its_field() {
        let mut missing = event();
        missing.id.clear();
        missing.customer_id.clear();
        missing.event_type.clear();
        missing.timestamp = None;
        assert_eq!(
            rules(&missing),
            [
                pair("id", "required"),
                pair("customer_id", "required"),
                pair("event_type", "required"),
                pair("timestamp", "required"),
            ]
        );

        let mut bad = event();
        bad.id = "has space".into();
        bad.customer_id = "acme".into();
        bad.event_type = "Api".into();
        assert_eq!(
            rules(&bad),
            [
                pair("id", "invalid_characters"),
                pair("customer_id", "invalid_prefix"),
                pair("event_type", "invalid_characters"),
            ]
        );

        let mut long = event();
        long.id = "x".repeat(129);
        long.source = "s".repeat(129);
        assert_eq!(
            rules(&long),
            [pair("id", "max_length"), pair("source", "max_length")]
        );
    }

    #[test]
    fn timestamps_must_be_in_the_window() {
        let mut future = event();
        future.timestamp = Some(tally_runtime::clock_service::chrono_to_timestamp(
            now() + Duration::minutes(6),
        ));
        assert_eq!(rules(&future), [pair("timestamp", "too_far_in_future")]);

        let mut old = event();
        old.timestamp = Some(tally_runtime::clock_service::chrono_to_timestamp(
            now() - Duration::days(36),
        ));
        let (_, violations) = Validator::new(&IngestConfig::default())
            .validate(old.clone(), now(), false)
            .unwrap_err();
        assert!(only_too_old(&violations));
        assert!(violations[0].description.contains("35 days"));
        assert!(
            Validator::new(&IngestConfig::default())
                .validate(old, now(), true)
                .is_ok(),
            "a backfill lifts the window"
        );

        let mut invalid = event();
        invalid.timestamp = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(rules(&invalid), [pair("timestamp", "invalid_timestamp")]);
    }

    #[test]
    fn property_limits() {
        let mut many = event();
        many.properties = (0..51).map(|n| (format!("p{n}"), "v".to_owned())).collect();
        assert_eq!(rules(&many), [pair("properties", "max_properties")]);

        let mut sizes = event();
        sizes.properties = [
            ("k".repeat(65), "v".to_owned()),
            ("value".to_owned(), "v".repeat(513)),
            (String::new(), "x".to_owned()),
        ]
        .into();
        let mut found = rules(&sizes);
        found.sort();
        assert_eq!(
            found,
            [
                pair("properties.", "required"),
                pair(&format!("properties.{}", "k".repeat(65)), "max_length"),
                pair("properties.value", "max_length"),
            ]
        );

        let mut huge = event();
        huge.properties = (0..40)
            .map(|n| (format!("p{n}"), "v".repeat(500)))
            .collect();
        assert_eq!(rules(&huge), [pair("event", "max_event_size")]);
    }

    fn arbitrary_event() -> impl Strategy<Value = WireEvent> {
        (
            ".{0,140}",
            ".{0,70}",
            ".{0,70}",
            proptest::option::of((any::<i64>(), any::<i32>())),
            proptest::collection::hash_map(".{0,70}", ".{0,600}", 0..60),
            ".{0,140}",
        )
            .prop_map(
                |(id, customer_id, event_type, timestamp, properties, source)| WireEvent {
                    id,
                    customer_id,
                    event_type,
                    timestamp: timestamp
                        .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                    properties,
                    source,
                },
            )
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_always_explains(event in arbitrary_event()) {
            let validator = Validator::new(&IngestConfig::default());
            match validator.validate(event.clone(), now(), false) {
                Ok(valid) => prop_assert_eq!(valid.event, event),
                Err((returned, violations)) => {
                    prop_assert_eq!(returned, event);
                    prop_assert!(!violations.is_empty());
                    for violation in violations {
                        prop_assert!(!violation.field.is_empty());
                        prop_assert!(!violation.rule.is_empty());
                        prop_assert!(!violation.description.is_empty());
                    }
                }
            }
        }
    }
}
