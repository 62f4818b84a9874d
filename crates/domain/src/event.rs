//! Usage events: what publishers send, and the validation that reports every broken rule.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, EventId, IdError, MeterCode};

/// A property value. JSON numbers and numeric strings become [`Number`](PropertyValue::Number)
/// (send numbers as strings, `"0.1"`, to keep every digit); other strings stay text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// `true` / `false`.
    Bool(bool),
    /// A decimal number.
    Number(Decimal),
    /// Any other text.
    Text(String),
}

impl PropertyValue {
    /// The number, if this value is one or is text that parses as one.
    pub fn as_number(&self) -> Option<Decimal> {
        match self {
            PropertyValue::Number(number) => Some(*number),
            PropertyValue::Text(text) => text.parse().ok(),
            PropertyValue::Bool(_) => None,
        }
    }

    /// A canonical text form, used for unique counts and group keys: numbers normalised
    /// (`1.50` and `1.5` are the same key), booleans as `true` / `false`.
    pub fn canonical_key(&self) -> String {
        match self {
            PropertyValue::Bool(flag) => flag.to_string(),
            PropertyValue::Number(number) => number.normalize().to_string(),
            PropertyValue::Text(text) => text.clone(),
        }
    }
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.canonical_key())
    }
}

/// Limits applied when an event is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLimits {
    /// How far in the past a timestamp may be (late events beyond it are rejected).
    pub max_age: Duration,
    /// How far ahead of the receiver's clock a timestamp may be.
    pub max_future_skew: Duration,
    /// Most properties on one event.
    pub max_properties: usize,
    /// Longest property name, in bytes.
    pub max_property_name_len: usize,
    /// Longest text value, in bytes.
    pub max_text_len: usize,
}

impl Default for EventLimits {
    /// 35 days back (a monthly period plus grace), 5 minutes ahead, 64 properties,
    /// names up to 128 bytes, text up to 1 KiB.
    fn default() -> EventLimits {
        EventLimits {
            max_age: Duration::days(35),
            max_future_skew: Duration::minutes(5),
            max_properties: 64,
            max_property_name_len: 128,
            max_text_len: 1024,
        }
    }
}

/// The rule a field broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRule {
    /// An id or code that does not parse.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A required field is absent.
    #[error("is required")]
    Missing,
    /// The timestamp is ahead of the receiver's clock by more than the allowed skew.
    #[error("is {ahead_seconds} s in the future, at most {max_seconds} s allowed")]
    InFuture {
        /// How far ahead.
        ahead_seconds: i64,
        /// The limit.
        max_seconds: i64,
    },
    /// The timestamp is older than the allowed age.
    #[error("is {age_seconds} s old, at most {max_seconds} s allowed")]
    TooOld {
        /// How old.
        age_seconds: i64,
        /// The limit.
        max_seconds: i64,
    },
    /// Too many properties.
    #[error("has {count} properties, at most {max}")]
    TooManyProperties {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An empty property name.
    #[error("property name is empty")]
    EmptyPropertyName,
    /// A property name that is too long.
    #[error("property name is {length} bytes, at most {max}")]
    PropertyNameTooLong {
        /// Its length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A property name with a control character.
    #[error("property name contains a control character")]
    PropertyNameControlCharacter,
    /// A text value that is too long.
    #[error("text is {length} bytes, at most {max}")]
    TextTooLong {
        /// Its length.
        length: usize,
        /// The limit.
        max: usize,
    },
}

/// One broken rule: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// `id`, `customer`, `event_type`, `timestamp`, `properties` or `properties.<name>`.
    pub field: String,
    /// The rule.
    pub rule: EventRule,
}

/// Every rule an event broke (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid usage event: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct EventValidationError {
    /// The broken rules, in field order.
    pub errors: Vec<FieldError>,
}

/// An event as received, before validation (the wire shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawUsageEvent {
    /// The publisher's idempotency key.
    pub id: String,
    /// The customer id, `cus_…`.
    pub customer: String,
    /// The event type, which is the code of the meter(s) it feeds.
    pub event_type: String,
    /// When the usage happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// Free-form properties.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

/// A validated usage event. The pair (customer, id) is unique forever.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use tally_domain::event::{EventLimits, EventRule, RawUsageEvent, UsageEvent};
///
/// let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
/// let raw: RawUsageEvent = serde_json::from_str(r#"{
///     "id": "req-42", "customer": "cus_acme", "event_type": "api_requests",
///     "timestamp": "2025-06-01T11:59:00Z", "properties": {"region": "eu", "bytes": "1024"}
/// }"#).unwrap();
/// let event = UsageEvent::validate(raw.clone(), now, &EventLimits::default()).unwrap();
/// assert_eq!(event.id().as_str(), "req-42");
///
/// let late = RawUsageEvent { timestamp: Some(now - Duration::days(90)), customer: "acme".into(), ..raw };
/// let error = UsageEvent::validate(late, now, &EventLimits::default()).unwrap_err();
/// let fields: Vec<_> = error.errors.iter().map(|error| error.field.as_str()).collect();
/// assert_eq!(fields, ["customer", "timestamp"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawUsageEvent", into = "RawUsageEvent")]
pub struct UsageEvent {
    id: EventId,
    customer: CustomerId,
    event_type: MeterCode,
    timestamp: DateTime<Utc>,
    properties: BTreeMap<String, PropertyValue>,
}

impl UsageEvent {
    /// Validates `raw` against the structural rules and the time window around `now`
    /// (the receiver's injected clock). Reports every broken rule, not just the first.
    pub fn validate(
        raw: RawUsageEvent,
        now: DateTime<Utc>,
        limits: &EventLimits,
    ) -> Result<UsageEvent, EventValidationError> {
        let mut errors = Vec::new();
        let timestamp_errors = raw
            .timestamp
            .map(|timestamp| time_window_rule(timestamp, now, limits));
        let result = Self::check(raw, limits, &mut errors);
        if let Some(Some(rule)) = timestamp_errors {
            errors.push(FieldError {
                field: "timestamp".into(),
                rule,
            });
            errors.sort_by_key(|error| field_order(&error.field));
        }
        match result {
            Some(event) if errors.is_empty() => Ok(event),
            Some(_) | None => Err(EventValidationError { errors }),
        }
    }

    /// Validates the structural rules only, with default limits and no time window
    /// (for events read back from the log).
    pub fn from_raw(raw: RawUsageEvent) -> Result<UsageEvent, EventValidationError> {
        let mut errors = Vec::new();
        match Self::check(raw, &EventLimits::default(), &mut errors) {
            Some(event) if errors.is_empty() => Ok(event),
            Some(_) | None => Err(EventValidationError { errors }),
        }
    }

    fn check(
        raw: RawUsageEvent,
        limits: &EventLimits,
        errors: &mut Vec<FieldError>,
    ) -> Option<UsageEvent> {
        let mut field = |name: &str, result: Result<(), EventRule>| {
            if let Err(rule) = result {
                errors.push(FieldError {
                    field: name.to_owned(),
                    rule,
                });
            }
        };
        let id = EventId::parse(&raw.id).map_err(EventRule::from);
        field("id", id.as_ref().map(|_| ()).map_err(Clone::clone));
        let customer = CustomerId::parse(&raw.customer).map_err(EventRule::from);
        field(
            "customer",
            customer.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let event_type = MeterCode::parse(&raw.event_type).map_err(EventRule::from);
        field(
            "event_type",
            event_type.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        field(
            "timestamp",
            raw.timestamp.map(|_| ()).ok_or(EventRule::Missing),
        );
        if raw.properties.len() > limits.max_properties {
            field(
                "properties",
                Err(EventRule::TooManyProperties {
                    count: raw.properties.len(),
                    max: limits.max_properties,
                }),
            );
        }
        for (name, value) in &raw.properties {
            field(
                &format!("properties.{name}"),
                property_rule(name, value, limits),
            );
        }
        Some(UsageEvent {
            id: id.ok()?,
            customer: customer.ok()?,
            event_type: event_type.ok()?,
            timestamp: raw.timestamp?,
            properties: raw.properties,
        })
    }

    /// The publisher's idempotency key.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The event type (a meter code).
    pub fn event_type(&self) -> &MeterCode {
        &self.event_type
    }

    /// When the usage happened.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// One property.
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.properties.get(name)
    }

    /// All properties.
    pub fn properties(&self) -> &BTreeMap<String, PropertyValue> {
        &self.properties
    }
}

/// An event as received, borrowed: the allocation-free way into the same rules
/// as [`UsageEvent::validate`], for intakes that handle events by the hundred
/// thousand per second and keep the wire form. Property values are text (the
/// wire form of every value).
#[derive(Clone, Copy, Debug)]
pub struct EventParts<'a> {
    /// The publisher's idempotency key.
    pub id: &'a str,
    /// The customer id, `cus_…`.
    pub customer: &'a str,
    /// The event type (a meter code).
    pub event_type: &'a str,
    /// When the usage happened.
    pub timestamp: Option<DateTime<Utc>>,
    /// (name, value) pairs.
    pub properties: &'a [(&'a str, &'a str)],
}

/// Every rule `parts` breaks at `now` under `limits`, in field order; empty
/// when the event is valid. Same rules and fields as [`UsageEvent::validate`].
pub fn check_event(
    parts: EventParts<'_>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut field = |name: &str, result: Result<(), EventRule>| {
        if let Err(rule) = result {
            errors.push(FieldError {
                field: name.to_owned(),
                rule,
            });
        }
    };
    field("id", EventId::check(parts.id).map_err(EventRule::from));
    field(
        "customer",
        CustomerId::check(parts.customer).map_err(EventRule::from),
    );
    field(
        "event_type",
        MeterCode::check(parts.event_type).map_err(EventRule::from),
    );
    match parts.timestamp {
        None => field("timestamp", Err(EventRule::Missing)),
        Some(timestamp) => {
            if let Some(rule) = time_window_rule(timestamp, now, limits) {
                field("timestamp", Err(rule));
            }
        }
    }
    if parts.properties.len() > limits.max_properties {
        field(
            "properties",
            Err(EventRule::TooManyProperties {
                count: parts.properties.len(),
                max: limits.max_properties,
            }),
        );
    }
    for (name, value) in parts.properties {
        let rule = property_name_rule(name, limits).and_then(|()| text_rule(value, limits));
        if rule.is_err() {
            field(&format!("properties.{name}"), rule);
        }
    }
    errors
}

impl TryFrom<RawUsageEvent> for UsageEvent {
    type Error = EventValidationError;

    fn try_from(raw: RawUsageEvent) -> Result<Self, Self::Error> {
        UsageEvent::from_raw(raw)
    }
}

impl From<UsageEvent> for RawUsageEvent {
    fn from(event: UsageEvent) -> RawUsageEvent {
        RawUsageEvent {
            id: event.id.into(),
            customer: event.customer.into(),
            event_type: event.event_type.into(),
            timestamp: Some(event.timestamp),
            properties: event.properties,
        }
    }
}

fn time_window_rule(
    timestamp: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Option<EventRule> {
    if timestamp > now + limits.max_future_skew {
        return Some(EventRule::InFuture {
            ahead_seconds: (timestamp - now).num_seconds(),
            max_seconds: limits.max_future_skew.num_seconds(),
        });
    }
    if timestamp < now - limits.max_age {
        return Some(EventRule::TooOld {
            age_seconds: (now - timestamp).num_seconds(),
            max_seconds: limits.max_age.num_seconds(),
        });
    }
    None
}

fn property_rule(name: &str, value: &PropertyValue, limits: &EventLimits) -> Result<(), EventRule> {
    property_name_rule(name, limits)?;
    match value {
        PropertyValue::Text(text) => text_rule(text, limits),
        PropertyValue::Number(_) | PropertyValue::Bool(_) => Ok(()),
    }
}

fn text_rule(text: &str, limits: &EventLimits) -> Result<(), EventRule> {
    if text.len() > limits.max_text_len {
        return Err(EventRule::TextTooLong {
            length: text.len(),
            max: limits.max_text_len,
        });
    }
    Ok(())
}

fn property_name_rule(name: &str, limits: &EventLimits) -> Result<(), EventRule> {
    if name.is_empty() {
        return Err(EventRule::EmptyPropertyName);
    }
    if name.len() > limits.max_property_name_len {
        return Err(EventRule::PropertyNameTooLong {
            length: name.len(),
            max: limits.max_property_name_len,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(EventRule::PropertyNameControlCharacter);
    }
    Ok(())
}

fn field_order(field: &str) -> usize {
    ["id", "customer", "event_type", "timestamp", "properties"]
        .iter()
        .position(|name| field == *name)
        .unwrap_or(5)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
    }

    proptest::proptest! {
        /// The borrowed check and the owned validation are the same rules.
        #[test]
        fn check_event_agrees_with_validate(
            id in ".{0,130}",
            customer in "(cus_)?[a-zA-Z0-9_-]{0,66}",
            event_type in "[a-zA-Z0-9_.]{0,66}",
            offset_minutes in proptest::option::of(-60_000i64..60_000),
            properties in proptest::collection::btree_map(".{0,130}", ".{0,1030}", 0..70),
        ) {
            let timestamp = offset_minutes.map(|minutes| now() + Duration::minutes(minutes));
            let raw = RawUsageEvent {
                id: id.clone(),
                customer: customer.clone(),
                event_type: event_type.clone(),
                timestamp,
                properties: properties
                    .iter()
                    .map(|(key, value)| (key.clone(), PropertyValue::Text(value.clone())))
                    .collect(),
            };
            let pairs: Vec<(&str, &str)> =
                properties.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            let borrowed = check_event(
                EventParts { id: &id, customer: &customer, event_type: &event_type, timestamp, properties: &pairs },
                now(),
                &EventLimits::default(),
            );
            let owned = UsageEvent::validate(raw, now(), &EventLimits::default())
                .err()
                .map(|error| error.errors)
                .unwrap_or_default();
            proptest::prop_assert_eq!(borrowed, owned);
        }
    }

    fn raw() -> RawUsageEvent {
        RawUsageEvent {
            id: "evt-1".into(),
            customer: "cus_1".into(),
            event_type: "storage.gb".into(),
            timestamp: Some(now()),
            properties: BTreeMap::from([("gb".into(), PropertyValue::Number(dec!(1.5)))]),
        }
    }

    #[test]
    fn every_broken_rule_is_reported_with_its_field() {
        let limits = EventLimits {
            max_properties: 1,
            ..EventLimits::default()
        };
        let bad = RawUsageEvent {
            id: String::new(),
            customer: "sub_1".into(),
            event_type: "Storage".into(),
            timestamp: None,
            properties: BTreeMap::from([
                (String::new(), PropertyValue::Bool(true)),
                ("note".into(), PropertyValue::Text("x".repeat(2000))),
            ]),
        };
        let error = UsageEvent::validate(bad, now(), &limits).unwrap_err();
        let fields: Vec<_> = error
            .errors
            .iter()
            .map(|error| error.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "id",
                "customer",
                "event_type",
                "timestamp",
                "properties",
                "properties.",
                "properties.note"
            ]
        );
        assert_eq!(error.errors[3].rule, EventRule::Missing);
        assert_eq!(
            error.errors[4].rule,
            EventRule::TooManyProperties { count: 2, max: 1 }
        );
        assert_eq!(
            error.errors[6].rule,
            EventRule::TextTooLong {
                length: 2000,
                max: 1024
            }
        );
    }

    #[test]
    fn time_window() {
        let limits = EventLimits::default();
        let future = RawUsageEvent {
            timestamp: Some(now() + Duration::minutes(6)),
            ..raw()
        };
        let error = UsageEvent::validate(future, now(), &limits).unwrap_err();
        assert_eq!(
            error.errors[0].rule,
            EventRule::InFuture {
                ahead_seconds: 360,
                max_seconds: 300
            }
        );
        let edge = RawUsageEvent {
            timestamp: Some(now() - Duration::days(35)),
            ..raw()
        };
        assert!(UsageEvent::validate(edge, now(), &limits).is_ok());
    }

    #[test]
    fn json_numbers_and_numeric_strings_are_numbers() {
        let json = r#"{"a": 1.5, "b": "2.25", "c": "eu", "d": true}"#;
        let properties: BTreeMap<String, PropertyValue> = serde_json::from_str(json).unwrap();
        assert_eq!(properties["a"], PropertyValue::Number(dec!(1.5)));
        assert_eq!(properties["b"], PropertyValue::Number(dec!(2.25)));
        assert_eq!(properties["c"], PropertyValue::Text("eu".into()));
        assert_eq!(properties["d"], PropertyValue::Bool(true));
        assert_eq!(PropertyValue::Number(dec!(1.50)).canonical_key(), "1.5");
    }

    #[test]
    fn serde_round_trip_validates_structure() {
        let event = UsageEvent::from_raw(raw()).unwrap();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<UsageEvent>(&json).unwrap(), event);
        assert!(serde_json::from_str::<UsageEvent>(&json.replace("cus_1", "cus-1")).is_err());
    }
}
