//! Idempotency keys of mutating RPCs: the first result per (method, key),
//! checked against the hash of the request (common.proto: a replay returns
//! the first result; a different request with the same key is ALREADY_EXISTS).

mod store;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::{InvoicingError, Result, Violations};

/// The hash of a request: its protobuf encoding (with maps taken out, as
/// protobuf encodes maps in hash-map order) and the maps' sorted entries.
pub fn request_hash(encoded: &[u8], maps: &[&HashMap<String, String>]) -> String {
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
    hash: &str,
) -> Result<Option<String>> {
    store::lock_key(&mut *connection, method, key).await?;
    match store::recorded_key(&mut *connection, method, key).await? {
        None => Ok(None),
        Some(recorded) if recorded.request_hash == hash => Ok(Some(recorded.resource_id)),
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
    hash: &str,
    resource_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    store::insert_key(connection, method, key, hash, resource_id, now).await
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
    pub hash: String,
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
