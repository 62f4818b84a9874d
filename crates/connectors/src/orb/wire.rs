//! Orb's JSON shapes for `POST /v1/ingest`, as its OpenAPI spec and its
//! official SDKs define them (`EventIngestParams`, `IngestionResponse`, the
//! RFC 7807 error bodies). Private to the adapter: nothing outside
//! `crate::orb` sees them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::OrbEvent;

/// The request body.
#[derive(Debug, Serialize)]
pub(super) struct IngestRequest<'a> {
    pub events: Vec<IngestEvent<'a>>,
}

/// One event of the request (`customer_id` is never sent: Tally forwards by
/// `external_customer_id`, and Orb wants exactly one of the two).
#[derive(Debug, Serialize)]
pub(super) struct IngestEvent<'a> {
    pub idempotency_key: &'a str,
    pub external_customer_id: &'a str,
    pub event_name: &'a str,
    /// ISO 8601 in UTC with a `Z` (Orb wants no offset).
    pub timestamp: String,
    pub properties: BTreeMap<&'a str, serde_json::Value>,
}

impl<'a> IngestEvent<'a> {
    pub(super) fn from_event(event: &'a OrbEvent) -> Self {
        Self {
            idempotency_key: &event.idempotency_key,
            external_customer_id: &event.external_customer_id,
            event_name: &event.event_name,
            timestamp: event
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            properties: event
                .properties
                .iter()
                .map(|(name, value)| (name.as_str(), property_value(value)))
                .collect(),
        }
    }
}

/// A Tally property value (always a string) as Orb should see it: Orb
/// aggregates only JSON numbers, so an exact decimal string whose value a
/// JSON number carries without loss is sent as a number; anything else
/// (words, decimals a double would round) stays a string.
pub(super) fn property_value(value: &str) -> serde_json::Value {
    if !is_decimal(value) {
        return serde_json::Value::String(value.to_owned());
    }
    if !value.contains('.')
        && let Ok(integer) = value.parse::<i64>()
    {
        return serde_json::Value::from(integer);
    }
    match value.parse::<f64>() {
        Ok(float) if float.is_finite() && float.to_string() == normalized(value) => {
            serde_json::Number::from_f64(float)
                .map_or_else(|| serde_json::Value::String(value.to_owned()), Into::into)
        }
        _ => serde_json::Value::String(value.to_owned()),
    }
}

/// `-?[0-9]+(\.[0-9]+)?`, ingest's exact decimal form.
fn is_decimal(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && fraction.is_none_or(all_digits)
}

/// A decimal as Rust prints the `f64` of the same value: no trailing
/// fractional zeros, no `-0`, no leading zeros.
fn normalized(value: &str) -> String {
    let (sign, digits) = match value.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", value),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    let text = if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    };
    if text == "0" {
        text
    } else {
        format!("{sign}{text}")
    }
}

/// The 200 body.
#[derive(Debug, Deserialize)]
pub(super) struct IngestionResponse {
    pub validation_failed: Vec<ValidationFailed>,
}

/// One event Orb did not ingest, by its idempotency key.
#[derive(Debug, Deserialize)]
pub(super) struct ValidationFailed {
    pub idempotency_key: String,
    pub validation_errors: Vec<String>,
}

/// An error body (RFC 7807): `RequestValidationError`, `TooManyRequests`,
/// `ServerError`, … — every field optional here, so an unexpected body still
/// yields a reason.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Problem {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// Strings, or `ValidationFailed`-shaped objects for ingestion.
    #[serde(default)]
    pub validation_errors: Vec<serde_json::Value>,
}

impl Problem {
    /// Orb's reason in one line, and the reasons it gave per idempotency key.
    pub(super) fn reasons(&self) -> (String, BTreeMap<String, String>) {
        let mut general = Vec::new();
        let mut per_key = BTreeMap::new();
        for error in &self.validation_errors {
            match serde_json::from_value::<ValidationFailed>(error.clone()) {
                Ok(failed) => {
                    per_key.insert(failed.idempotency_key, failed.validation_errors.join("; "));
                }
                Err(_) => general.push(match error {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                }),
            }
        }
        let mut parts: Vec<String> = self
            .title
            .iter()
            .chain(self.detail.iter())
            .filter(|text| !text.is_empty())
            .cloned()
            .collect();
        parts.extend(general);
        (parts.join(": "), per_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_as_numbers_only_when_exact() {
        let cases = [
            ("1200", serde_json::json!(1200)),
            ("-3", serde_json::json!(-3)),
            ("1.5", serde_json::json!(1.5)),
            ("2.50", serde_json::json!(2.5)),
            ("0.1", serde_json::json!(0.1)),
            ("large", serde_json::json!("large")),
            ("1e3", serde_json::json!("1e3")),
            ("01", serde_json::json!(1)),
            (".5", serde_json::json!(".5")),
            (
                "12345678901234567890123",
                serde_json::json!("12345678901234567890123"),
            ),
            (
                "0.12345678901234567890",
                serde_json::json!("0.12345678901234567890"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(property_value(text), expected, "{text}");
        }
    }

    #[test]
    fn a_problem_names_its_reasons() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "https://docs.withorb.com/reference/error-responses#400-request-validation-errors",
            "status": 400,
            "title": "Request validation failed",
            "validation_errors": [
                {"idempotency_key": "k1", "validation_errors": ["timestamp too old", "x"]},
                "events.0.event_name: required"
            ]
        }))
        .unwrap();
        let (general, per_key) = problem.reasons();
        assert_eq!(
            general,
            "Request validation failed: events.0.event_name: required"
        );
        assert_eq!(per_key["k1"], "timestamp too old; x");
    }
}
