//! Orb's webhook signatures, as its official SDKs verify them:
//! `X-Orb-Signature: v1=<hex>` (several, space-separated, while a secret is
//! rolled; any `v1` matching is enough), the hex HMAC-SHA256 keyed with the
//! endpoint's secret over `"v1:{X-Orb-Timestamp}:{raw body}"`, the timestamp
//! an ISO 8601 instant (UTC when it has no offset) at most five minutes
//! from now on the service clock. Comparison is constant-time
//! (`Mac::verify_slice`). Then the body is read as an event (`id`, `type`,
//! `created_at`, and the ids of what it is about).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::OrbWebhookSecret;
use crate::biller::{ExternalWebhookEvent, WebhookDelivery, WebhookRefusal};

/// How far a webhook's timestamp may be from now (Orb's SDKs: five minutes).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The HMAC keyed with `secret` (`None` cannot happen: HMAC takes keys of
/// any length; it is handled as a mismatch rather than a panic).
fn mac(secret: &OrbWebhookSecret) -> Option<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()
}

/// The instant of an `X-Orb-Timestamp` (ISO 8601; no offset means UTC).
fn instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

/// Checks `delivery` with `secret` at `now`, then reads its event.
pub fn verify(
    secret: Option<&OrbWebhookSecret>,
    delivery: &WebhookDelivery<'_>,
    now: DateTime<Utc>,
) -> Result<ExternalWebhookEvent, WebhookRefusal> {
    let secret = secret.ok_or(WebhookRefusal::NoSecret)?;
    let stamp = delivery
        .timestamp
        .ok_or(WebhookRefusal::Missing("X-Orb-Timestamp"))?;
    let signatures = delivery
        .signature
        .ok_or(WebhookRefusal::Missing("X-Orb-Signature"))?;
    let at = instant(stamp).ok_or_else(|| WebhookRefusal::MalformedTimestamp(stamp.to_owned()))?;
    let age_seconds = (now - at).num_seconds().abs();
    if age_seconds > TOLERANCE_SECONDS {
        return Err(WebhookRefusal::Stale {
            age_seconds,
            tolerance_seconds: TOLERANCE_SECONDS,
        });
    }
    let mut expected = mac(secret).ok_or(WebhookRefusal::Mismatch)?;
    expected.update(format!("v1:{stamp}:").as_bytes());
    expected.update(delivery.body);
    let matched = signatures
        .split(' ')
        .filter_map(|part| part.split_once('='))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, hex)| hex::decode(hex).ok())
        .any(|signature| expected.clone().verify_slice(&signature).is_ok());
    if !matched {
        return Err(WebhookRefusal::Mismatch);
    }
    event(delivery.body)
}

/// The `X-Orb-Signature` Orb would send for `body` stamped `timestamp`
/// (tests and tools).
pub fn sign(secret: &OrbWebhookSecret, timestamp: &str, body: &[u8]) -> String {
    let Some(mut mac) = mac(secret) else {
        return String::new();
    };
    mac.update(format!("v1:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook body: every Orb webhook event has these (`type` names the
/// rest); the object it is about is under its name.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: DateTime<Utc>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

fn event(body: &[u8]) -> Result<ExternalWebhookEvent, WebhookRefusal> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|error| WebhookRefusal::Unreadable(error.to_string()))?;
    if envelope.id.is_empty() {
        return Err(WebhookRefusal::Unreadable("the event has no id".to_owned()));
    }
    let subjects = ["invoice", "customer", "subscription", "credit_note"]
        .into_iter()
        .filter_map(|name| {
            let id = envelope.rest.get(name)?.get("id")?.as_str()?;
            Some((name.to_owned(), id.to_owned()))
        })
        .collect();
    Ok(ExternalWebhookEvent {
        id: envelope.id,
        event_type: envelope.event_type,
        created_at: envelope.created_at,
        subjects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"whe_1","type":"invoice.issued","created_at":"2026-12-07T12:00:00+00:00","invoice":{"id":"inv_orb_1"},"properties":{}}"#;

    fn now() -> DateTime<Utc> {
        "2026-12-07T12:01:00Z".parse().unwrap()
    }

    fn delivery<'a>(timestamp: &'a str, signature: &'a str) -> WebhookDelivery<'a> {
        WebhookDelivery {
            timestamp: Some(timestamp),
            signature: Some(signature),
            body: BODY,
        }
    }

    #[test]
    fn a_signed_event_verifies_and_a_forged_or_stale_one_does_not() {
        let secret = OrbWebhookSecret::new("whsec_orb");
        let stamp = "2026-12-07T12:00:00.123456";
        let signature = sign(&secret, stamp, BODY);
        let event = verify(Some(&secret), &delivery(stamp, &signature), now()).unwrap();
        assert_eq!(event.id, "whe_1");
        assert_eq!(event.event_type, "invoice.issued");
        assert_eq!(event.subjects["invoice"], "inv_orb_1");
        // A rolled secret: any v1 of several matches.
        let old = sign(&OrbWebhookSecret::new("old"), stamp, BODY);
        let both = format!("{old} v0=00 {signature}");
        assert!(verify(Some(&secret), &delivery(stamp, &both), now()).is_ok());
        let forged = sign(&OrbWebhookSecret::new("guess"), stamp, BODY);
        assert_eq!(
            verify(Some(&secret), &delivery(stamp, &forged), now()),
            Err(WebhookRefusal::Mismatch)
        );
        let late = now() + chrono::Duration::minutes(5);
        assert_eq!(
            verify(Some(&secret), &delivery(stamp, &signature), late),
            Err(WebhookRefusal::Stale {
                age_seconds: 359,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            verify(None, &delivery(stamp, &signature), now()),
            Err(WebhookRefusal::NoSecret)
        );
        assert!(matches!(
            verify(Some(&secret), &delivery("yesterday", &signature), now()),
            Err(WebhookRefusal::MalformedTimestamp(_))
        ));
    }

    #[test]
    fn a_timestamp_with_an_offset_is_read_as_that_instant() {
        assert_eq!(
            instant("2026-12-07T13:00:00+01:00"),
            Some("2026-12-07T12:00:00Z".parse().unwrap())
        );
        assert_eq!(
            instant("2026-12-07T12:00:00"),
            Some("2026-12-07T12:00:00Z".parse().unwrap())
        );
    }
}
