//! Stripe webhook signatures: `Stripe-Signature: t=<unix seconds>,v1=<hex>,…`
//! where each `v1` is HMAC-SHA256 over `"<t>.<raw body>"` keyed with the
//! endpoint's signing secret. Several `v1` values appear while a secret is
//! rolled; any one matching is enough. `v0` and unknown schemes are ignored.
//! Comparison is constant-time (`Mac::verify_slice`).
//!
//! Ours rather than async-stripe-webhook's `Webhook::construct_event`: that
//! one fixes the tolerance at 300 s (ours is `webhook_tolerance_seconds`),
//! takes "now" from the system clock (ours is the service clock, so tests
//! and replays are exact; its `construct_event_with_timestamp` is documented
//! as not for production), and parses the whole event into its typed
//! `EventObject` in the SDK's API version — an endpoint left on another
//! version would see every event refused, while payments reads only the
//! envelope and ids and then fetches the object's current state anyway. Its
//! typed events would also need every resource crate of the event types
//! received.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The webhook signing secret (`whsec_…`). Its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Wraps a secret read from `STRIPE_WEBHOOK_SECRET`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        match Hmac::<Sha256>::new_from_slice(self.0.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable_key_length(),
        }
    }
}

#[expect(
    clippy::panic,
    reason = "HMAC takes a key of any length, so new_from_slice never fails"
)]
fn unreachable_key_length() -> ! {
    panic!("HMAC-SHA256 accepts keys of every length")
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header has no timestamp or no `v1` signature, or a bad value.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is outside the tolerance (a replay, or a skewed clock).
    #[error("signature timestamp outside the tolerance ({age_seconds} s away)")]
    OutsideTolerance {
        /// Distance between the timestamp and now.
        age_seconds: i64,
    },
    /// No `v1` signature matches.
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `header` for `body` at `now`.
pub fn verify(
    secret: &WebhookSecret,
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((scheme, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match scheme {
            "t" => {
                timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?);
            }
            "v1" => match hex::decode(value) {
                Ok(bytes) => signatures.push(bytes),
                Err(_) => return Err(SignatureError::Malformed),
            },
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_seconds = (now.timestamp() - timestamp).abs();
    if age_seconds > tolerance_seconds {
        return Err(SignatureError::OutsideTolerance { age_seconds });
    }
    let mut mac = secret.mac();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `body` at
/// `timestamp` (for tests and tools).
pub fn sign(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn a_signed_body_verifies_and_anything_else_does_not() {
        let secret = WebhookSecret::new("whsec_test");
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(&secret, now().timestamp(), body);
        assert_eq!(verify(&secret, Some(&header), body, now(), 300), Ok(()));
        // A rolled secret: the second v1 matches.
        let other = sign(&WebhookSecret::new("whsec_old"), now().timestamp(), body);
        let v1 = header.split(",v1=").nth(1).unwrap();
        let both = format!("{other},v1={v1},v0=abcd");
        assert_eq!(verify(&secret, Some(&both), body, now(), 300), Ok(()));
        assert_eq!(
            verify(&secret, Some(&header), br#"{"id":"evt_2"}"#, now(), 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &WebhookSecret::new("whsec_x"),
                Some(&header),
                body,
                now(),
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &secret,
                Some(&header),
                body,
                now() + chrono::Duration::seconds(301),
                300
            ),
            Err(SignatureError::OutsideTolerance { age_seconds: 301 })
        );
        assert_eq!(
            verify(&secret, None, body, now(), 300),
            Err(SignatureError::Missing)
        );
        for malformed in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1700000000",
            "t=1700000000,v1=zz",
        ] {
            assert_eq!(
                verify(&secret, Some(malformed), body, now(), 300),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn the_secret_is_never_printed() {
        assert!(!format!("{:?}", WebhookSecret::new("whsec_visible")).contains("visible"));
    }
}
