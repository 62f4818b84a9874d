//! Turning a usage event as received into a [`ValidEvent`], or into every
//! rule it broke.
//!
//! The structural rules (id, customer, event type, timestamp window, property
//! names and sizes) are the domain crate's (`tally_domain::event`), so every
//! service agrees on what a valid event is; this module adds the intake rules
//! (encoded size, source length, timestamp range, the range of numbers) and
//! names each rule with the stable `rule` string of
//! `tally.common.v1.FieldViolation`.

use std::str::FromStr as _;

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
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

/// The largest absolute value of a numeric property: 10^15. Ingest cannot tell
/// which property a meter aggregates (the catalog is rating's), so the bound
/// applies to every property value that is a number. 10^15 is a petabyte in
/// bytes, 31 million years in seconds, a quadrillion tokens in one event; with
/// [`MAX_PROPERTY_FRACTION_DIGITS`] a value has at most 27 significant digits,
/// so it fits a `Decimal` (28) exactly and a sum of a million such values
/// (10^21) is still far from overflowing it (7.9 × 10^28). See
/// docs/architecture.md, "Numbers in properties".
pub const MAX_PROPERTY_NUMBER: i64 = 1_000_000_000_000_000;

/// The most decimal places of a numeric property (trailing zeros do not
/// count): 12, a millionth of a millionth of a unit.
pub const MAX_PROPERTY_FRACTION_DIGITS: usize = 12;

/// Violations kept per event: an event with a million bad properties is
/// described by its first ones and a count, not a million entries.
pub const MAX_VIOLATIONS: usize = 100;

/// Longest field name or description of a violation, in characters: a field
/// names a property (whose name may be megabytes long in a bad event) and is
/// stored and published with the rejection.
pub const MAX_VIOLATION_TEXT_CHARS: usize = 512;

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
            if let Some((rule, description)) = number_rule(key, value) {
                violations.push(violation(&format!("properties.{key}"), rule, description));
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
                Err((event, bounded(violations)))
            }
        }
    }

    /// The largest encoded event a rejection keeps as received: the size
    /// limit, or 64 KiB when that is smaller, and never more than 4 MiB (the
    /// rejection is published on `usage-rejected`, and Pub/Sub takes at most
    /// 10 MB per message). A larger event is kept as a summary (see
    /// `pipeline::rejections::kept_event`).
    pub fn max_kept_event_bytes(&self) -> usize {
        self.max_event_bytes.clamp(64 * 1024, 4 * 1024 * 1024)
    }
}

/// The rule a property value breaks as a number, with its description; `None`
/// when it is no number (text) or a number in range.
///
/// A value is a number when `Decimal` parses it — the parse rating uses for
/// the property a meter aggregates — or when it is a plain decimal literal
/// too long for a `Decimal` (which rating could not use as a number at all).
/// Negative numbers are in range: whether a negative reading may count is the
/// meter's rule, applied by rating (docs/architecture.md).
fn number_rule(key: &str, value: &str) -> Option<(&'static str, String)> {
    let number = match Decimal::from_str(value) {
        Ok(number) => number,
        Err(_) if is_decimal_literal(value) => {
            return Some((
                "number_out_of_range",
                format!(
                    "property {key:?} is a number beyond ±{MAX_PROPERTY_NUMBER} (too many digits for a decimal)"
                ),
            ));
        }
        Err(_) => return None,
    };
    if number.abs() > Decimal::from(MAX_PROPERTY_NUMBER) {
        return Some((
            "number_out_of_range",
            format!("property {key:?} is {number}, beyond ±{MAX_PROPERTY_NUMBER}"),
        ));
    }
    // Counted in the text: `Decimal` would round digits beyond its 28th.
    let fraction_digits = value
        .split_once('.')
        .map(|(_, fraction)| {
            fraction
                .trim_end_matches(['0', '_'])
                .bytes()
                .filter(u8::is_ascii_digit)
                .count()
        })
        .unwrap_or(0);
    if fraction_digits > MAX_PROPERTY_FRACTION_DIGITS {
        return Some((
            "max_fraction_digits",
            format!(
                "property {key:?} has {fraction_digits} decimal places, at most {MAX_PROPERTY_FRACTION_DIGITS} allowed"
            ),
        ));
    }
    None
}

/// `[+-]digits[.digits]`: what a number looks like, whatever its size.
fn is_decimal_literal(value: &str) -> bool {
    let unsigned = value.strip_prefix(['+', '-']).unwrap_or(value);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit())
}

/// At most [`MAX_VIOLATIONS`] violations (the last one counting the rest),
/// each field and description at most [`MAX_VIOLATION_TEXT_CHARS`] characters:
/// what is stored and published about a rejection stays small whatever the event.
fn bounded(mut violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - (MAX_VIOLATIONS - 1);
        violations.truncate(MAX_VIOLATIONS - 1);
        violations.push(violation(
            "event",
            "more_violations",
            format!("{more} more violations are not listed"),
        ));
    }
    for violation in &mut violations {
        cut(&mut violation.field);
        cut(&mut violation.description);
    }
    violations
}

/// Cuts `text` to [`MAX_VIOLATION_TEXT_CHARS`] characters, marking the cut with `…`.
fn cut(text: &mut String) {
    if let Some((index, _)) = text.char_indices().nth(MAX_VIOLATION_TEXT_CHARS) {
        text.truncate(index);
        text.push('…');
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
        (EventRule::InvalidId(IdError::WrongPrefix { expected, .. }), _)
            if field == "customer_id" =>
        {
            format!(
                "customer_id must be Tally's customer id ({expected}…), not an external id: ingest accepts usage \
                 for customers created later and while invoicing is down, so it does not look customers up; \
                 find the id with CustomerService.GetCustomer by external id (`tally customers show <external id>`), \
                 or send with `tally events send`, which looks external ids up"
            )
        }
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
#[path = "validation_tests.rs"]
mod tests;
