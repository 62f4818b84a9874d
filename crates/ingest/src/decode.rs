//! Decoding `usage-events` bus messages: binary protobuf or the proto3 JSON
//! mapping, chosen by the `content-type` attribute (see `UsageEvent` in
//! `proto/tally/events/v1/events.proto`).
//!
//! Decoding never panics and never loses a message: bytes that are not an
//! event become [`Incoming::Undecodable`] (kept with the reason), and a JSON
//! event with an unsupported property value becomes [`Incoming::Flawed`]
//! (kept, with the field named).

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use tally_proto::events::UsageEvent as WireEvent;

use crate::pipeline::Incoming;
use crate::validation::violation;

/// `content-type` of binary protobuf (also the default when absent).
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// `content-type` of the JSON mapping.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Decodes one message payload by its content type.
pub fn decode(payload: &[u8], content_type: Option<&str>) -> Incoming {
    let media_type = content_type
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let undecodable = |reason: String| Incoming::Undecodable {
        payload: payload.to_vec(),
        content_type: content_type.unwrap_or_default().to_owned(),
        reason,
    };
    match media_type.as_str() {
        "" | CONTENT_TYPE_PROTOBUF | "application/protobuf" | "application/vnd.google.protobuf" => {
            match WireEvent::decode(payload) {
                Ok(event) => Incoming::Event(event),
                Err(error) => undecodable(format!(
                    "not a protobuf tally.events.v1.UsageEvent: {error}{}",
                    json_hint(payload, content_type)
                )),
            }
        }
        CONTENT_TYPE_JSON => match decode_json(payload) {
            Ok(incoming) => incoming,
            Err(reason) => undecodable(reason),
        },
        other => undecodable(format!(
            "unsupported content-type {other:?}: use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}"
        )),
    }
}

/// What to do when bytes read as protobuf (the default without a
/// `content-type`) are a JSON object: the publisher forgot the attribute.
fn json_hint(payload: &[u8], content_type: Option<&str>) -> String {
    let looks_like_json = payload.trim_ascii_start().starts_with(b"{")
        && serde_json::from_slice::<serde_json::Value>(payload)
            .is_ok_and(|value| value.is_object());
    if !looks_like_json {
        return String::new();
    }
    let given = match content_type {
        None | Some("") => {
            "the message has no content-type attribute, so it was read as protobuf".to_owned()
        }
        Some(given) => format!("its content-type attribute is {given:?}"),
    };
    format!(
        "; the payload looks like JSON but {given}: set the content-type attribute to {CONTENT_TYPE_JSON}"
    )
}

/// The JSON form: camelCase (the proto3 mapping) or snake_case names.
#[derive(Debug, Deserialize)]
struct JsonEvent {
    #[serde(default)]
    id: String,
    #[serde(default, alias = "customerId")]
    customer_id: String,
    #[serde(default, alias = "eventType")]
    event_type: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, Box<RawValue>>,
    #[serde(default)]
    source: String,
}

fn decode_json(payload: &[u8]) -> Result<Incoming, String> {
    let json: JsonEvent = serde_json::from_slice(payload)
        .map_err(|error| format!("not a JSON tally.events.v1.UsageEvent: {error}"))?;
    let mut violations = Vec::new();
    let timestamp = match json.timestamp.as_deref() {
        None => None,
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(instant) => Some(tally_runtime::clock_service::chrono_to_timestamp(
                instant.to_utc(),
            )),
            Err(error) => {
                violations.push(violation(
                    "timestamp",
                    "invalid_timestamp",
                    format!("timestamp {text:?} is not an RFC 3339 instant: {error}"),
                ));
                None
            }
        },
    };
    let mut properties = HashMap::with_capacity(json.properties.len());
    for (key, raw) in json.properties {
        match property_text(raw.get()) {
            Some(text) => {
                properties.insert(key, text);
            }
            None => violations.push(violation(
                &format!("properties.{key}"),
                "unsupported_property_type",
                format!(
                    "property {key:?} is {}; values must be strings, numbers or booleans",
                    kind_of(raw.get())
                ),
            )),
        }
    }
    let event = WireEvent {
        id: json.id,
        customer_id: json.customer_id,
        event_type: json.event_type,
        timestamp,
        properties,
        source: json.source,
    };
    Ok(if violations.is_empty() {
        Incoming::Event(event)
    } else {
        Incoming::Flawed { event, violations }
    })
}

/// A JSON property value as exact text: strings unescaped, numbers as written
/// (exponents expanded exactly), booleans as `true` / `false`.
fn property_text(raw: &str) -> Option<String> {
    let raw = raw.trim();
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw).ok(),
        b't' | b'f' => Some(raw.to_owned()),
        b'-' | b'0'..=b'9' => {
            if raw.contains(['e', 'E']) {
                Decimal::from_scientific(raw)
                    .ok()
                    .map(|number| number.to_string())
            } else {
                Some(raw.to_owned())
            }
        }
        _ => None,
    }
}

fn kind_of(raw: &str) -> &'static str {
    match raw.trim().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'n') => "null",
        _ => "an unsupported number",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn json_in_both_spellings_with_exact_numbers() {
        let camel = br#"{"id":"req-1","customerId":"cus_a","eventType":"api_calls",
            "timestamp":"2026-11-21T12:00:00Z","properties":{"tokens":1200.50,"big":1e3,"model":"large","ok":true},
            "source":"gw","unknownField":1}"#;
        let Incoming::Event(event) = decode(camel, Some("application/json; charset=utf-8")) else {
            panic!("expected an event");
        };
        assert_eq!(event.customer_id, "cus_a");
        assert_eq!(event.event_type, "api_calls");
        assert_eq!(event.properties["tokens"], "1200.50");
        assert_eq!(event.properties["big"], "1000");
        assert_eq!(event.properties["ok"], "true");
        assert_eq!(event.timestamp.unwrap().seconds, 1_795_262_400);

        let snake = br#"{"id":"req-1","customer_id":"cus_a","event_type":"api_calls","timestamp":"2026-11-21T13:00:00+01:00"}"#;
        let Incoming::Event(same) = decode(snake, Some(CONTENT_TYPE_JSON)) else {
            panic!("expected an event");
        };
        assert_eq!(same.timestamp, event.timestamp);
    }

    #[test]
    fn flawed_and_undecodable_json() {
        let nested = br#"{"id":"r","customerId":"cus_a","eventType":"x","timestamp":"yesterday","properties":{"a":{"b":1},"c":null}}"#;
        let Incoming::Flawed { violations, .. } = decode(nested, Some(CONTENT_TYPE_JSON)) else {
            panic!("expected a flawed event");
        };
        let rules: Vec<_> = violations
            .iter()
            .map(|v| (v.field.as_str(), v.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("timestamp", "invalid_timestamp"),
                ("properties.a", "unsupported_property_type"),
                ("properties.c", "unsupported_property_type"),
            ]
        );
        for bad in [&b"[1,2]"[..], b"{\"id\": 5}", b"not json"] {
            assert!(matches!(
                decode(bad, Some(CONTENT_TYPE_JSON)),
                Incoming::Undecodable { .. }
            ));
        }
        assert!(matches!(
            decode(b"x", Some("text/csv")),
            Incoming::Undecodable { reason, .. } if reason.contains("text/csv")
        ));
    }

    #[test]
    fn protobuf_round_trip_and_garbage() {
        let event = WireEvent {
            id: "e".into(),
            customer_id: "cus_a".into(),
            ..WireEvent::default()
        };
        assert_eq!(
            decode(&event.encode_to_vec(), None),
            Incoming::Event(event.clone())
        );
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff], Some(CONTENT_TYPE_PROTOBUF)),
            Incoming::Undecodable { reason, .. } if !reason.contains("JSON")
        ));
    }

    #[test]
    fn json_read_as_protobuf_says_to_set_the_content_type() {
        let json = br#" {"id":"e","customerId":"cus_a","eventType":"api_calls"}"#;
        for content_type in [None, Some(""), Some(CONTENT_TYPE_PROTOBUF)] {
            let Incoming::Undecodable { reason, .. } = decode(json, content_type) else {
                panic!("JSON is not protobuf");
            };
            assert!(
                reason.starts_with("not a protobuf tally.events.v1.UsageEvent")
                    && reason
                        .contains("looks like JSON but the message has no content-type attribute")
                        == content_type.is_none_or(str::is_empty)
                    && reason.ends_with("set the content-type attribute to application/json"),
                "{reason}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, None);
            let _ = decode(&bytes, Some(CONTENT_TYPE_JSON));
        }

        #[test]
        fn decoding_arbitrary_json_never_panics(
            id in ".{0,20}",
            value in prop_oneof![
                Just("null".to_owned()), Just("{}".to_owned()), Just("[]".to_owned()),
                any::<f64>().prop_map(|f| f.to_string()), any::<i64>().prop_map(|i| i.to_string()),
                ".{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
                "-?[0-9]{1,30}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
            ],
        ) {
            let json = format!(
                r#"{{"id":{},"customerId":"cus_a","eventType":"x","timestamp":"2026-01-01T00:00:00Z","properties":{{"p":{value}}}}}"#,
                serde_json::to_string(&id).unwrap_or_default()
            );
            let _ = decode(json.as_bytes(), Some(CONTENT_TYPE_JSON));
        }
    }
}
