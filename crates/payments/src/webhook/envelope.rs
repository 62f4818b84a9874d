//! A verified event's envelope and the fields read from its object.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// A verified event's envelope.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) created: DateTime<Utc>,
    pub(super) object: Value,
}

pub(super) fn envelope(body: &[u8]) -> Result<Envelope, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("event `{field}` is missing"))
    };
    let id = text("id")?;
    let kind = text("type")?;
    let created = value
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
        .ok_or("event `created` is missing")?;
    let object = value
        .get("data")
        .and_then(|data| data.get("object"))
        .filter(|object| object.is_object())
        .cloned()
        .ok_or("event `data.object` is missing")?;
    Ok(Envelope {
        id,
        kind,
        created,
        object,
    })
}

/// The id `field` of an event's object names: a string, or an expanded
/// object's `id`; `None` when absent, null or empty.
pub(super) fn reference(object: &Value, field: &str) -> Option<String> {
    let value = object.get(field)?;
    value
        .as_str()
        .or_else(|| value.get("id").and_then(Value::as_str))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// `metadata.<key>` of an event's object, when set and not empty.
pub(super) fn metadata<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(key))
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}
