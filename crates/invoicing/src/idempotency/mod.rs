//! Idempotency keys of mutating RPCs: the first result per (method, key),
//! checked against the hash of the request (common.proto: a replay returns
//! the first result; a different request with the same key is ALREADY_EXISTS).

mod store;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tally_runtime::idempotency::{Fingerprint, encoded_request_fingerprint};

use crate::error::{InvoicingError, Result, Violations};

/// The fingerprint of a request (the runtime's one framing, stored as `v2:<hex>`),
/// with the hash invoicing stored before it, to recognise a retry of a request made
/// before the upgrade.
#[derive(Clone, Debug)]
pub struct RequestHash {
    fingerprint: Fingerprint,
    legacy: String,
}

/// The hash of a request: its protobuf encoding with maps taken out (protobuf encodes
/// maps in hash-map order), and the maps, sorted (`idempotency::encoded_request_fingerprint`).
pub fn request_hash(encoded: &[u8], maps: &[&HashMap<String, String>]) -> RequestHash {
    RequestHash {
        fingerprint: encoded_request_fingerprint(encoded, maps),
        legacy: legacy_hash(encoded, maps),
    }
}

impl RequestHash {
    /// Whether `stored` (`invoicing.idempotency_keys.request_hash`) records this request.
    fn matches(&self, stored: &str) -> bool {
        self.fingerprint
            .matches_stored(stored, || self.legacy.clone())
    }
}

/// The hash rows written before the runtime's fingerprint hold (64 hex digits, no
/// prefix): SHA-256 of the encoding, then each map's sorted entries as big-endian
/// `u64` lengths and bytes, and `|`. Only compared, never written.
fn legacy_hash(encoded: &[u8], maps: &[&HashMap<String, String>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(encoded);
    for map in maps {
        let sorted: BTreeMap<_, _> = map.iter().collect();
        for (key, value) in sorted {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        hasher.update(b"|");
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Checks the key's shape (1–255 printable ASCII characters).
pub fn check_key(key: &str, violations: &mut Violations) {
    if key.is_empty() {
        violations.add("idempotency_key", "is required");
    } else if key.len() > 255 || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        violations.add(
            "idempotency_key",
            "must be 1-255 printable ASCII characters without spaces",
        );
    }
}

/// Locks `(method, key)` for the transaction and returns the resource the
/// first request produced, if any. A different request hash is an error.
pub async fn claim(
    connection: &mut PgConnection,
    method: &str,
    key: &str,
    hash: &RequestHash,
) -> Result<Option<String>> {
    store::lock_key(&mut *connection, method, key).await?;
    match store::recorded_key(&mut *connection, method, key).await? {
        None => Ok(None),
        Some(recorded) if hash.matches(&recorded.request_hash) => Ok(Some(recorded.resource_id)),
        Some(_) => Err(InvoicingError::IdempotencyConflict(format!(
            "idempotency_key {key:?} was already used for a different {method} request"
        ))),
    }
}

/// Records the resource a request produced (same transaction as its effect).
pub async fn record(
    connection: &mut PgConnection,
    method: &str,
    key: &str,
    hash: &RequestHash,
    resource_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let stored = hash.fingerprint.to_stored();
    store::insert_key(connection, method, key, &stored, resource_id, now).await
}

/// One request's idempotency key: the method, the caller's key and the
/// request hash, claimed at the start of the transaction and recorded with
/// the resource it produced.
#[derive(Debug)]
pub struct Key<'a> {
    /// The RPC method.
    pub method: &'static str,
    /// The caller's key.
    pub key: &'a str,
    /// The request hash.
    pub hash: RequestHash,
}

impl Key<'_> {
    /// See [`claim`].
    pub async fn claim(&self, connection: &mut PgConnection) -> Result<Option<String>> {
        claim(connection, self.method, self.key, &self.hash).await
    }

    /// See [`record`].
    pub async fn record(
        &self,
        connection: &mut PgConnection,
        resource_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        record(
            connection,
            self.method,
            self.key,
            &self.hash,
            resource_id,
            now,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> HashMap<String, String> {
        [("b", "2"), ("a", "1")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Rows written before the runtime's fingerprint hold these exact hashes; a retry
    /// of such a request after the upgrade must still match them.
    #[test]
    fn requests_stored_before_the_upgrade_still_match() {
        let encoded = b"\x0a\x03abc";
        let metadata = metadata();
        let table = [
            (
                request_hash(encoded, &[]),
                "8ab7a6c5e74737878ac73863cb76739d15d4666de44e5756bf55a2f9e9ab5f44",
                "v2:9fe1dcdaf856b8b1f8952de6df309498a21d34e42643fdb1d98be73915db1ce5",
            ),
            (
                request_hash(encoded, &[&metadata]),
                "88dcbc96831ec3a50b1a5f8fbda40f6b9f73fe28b1b405e0081add4d878ad3d2",
                "v2:b1feb4a7db9ddc58f5541fd536dfe4cbb91a826dfae673e503d46150d9ffd094",
            ),
        ];
        for (hash, stored_before, stored_now) in table {
            assert_eq!(hash.legacy, stored_before);
            assert_eq!(hash.fingerprint.to_stored(), stored_now);
            assert!(hash.matches(stored_before), "a pre-upgrade row");
            assert!(hash.matches(stored_now), "a row written now");
        }
        let other = request_hash(b"\x0a\x03abd", &[&metadata]);
        assert!(!other.matches("88dcbc96831ec3a50b1a5f8fbda40f6b9f73fe28b1b405e0081add4d878ad3d2"));
        assert!(
            !other.matches("v2:b1feb4a7db9ddc58f5541fd536dfe4cbb91a826dfae673e503d46150d9ffd094")
        );
    }
}
