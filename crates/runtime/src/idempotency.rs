//! Request fingerprints: how a service tells an honest retry (the same idempotency key
//! with the same request) from a different request that reuses a key.
//!
//! One framing for every service: SHA-256 over the request's canonical parts, each part
//! preceded by its length as a little-endian `u64`, so two different lists of parts
//! never run together into the same bytes ([`fingerprint`]). A protobuf request is its
//! encoding with its map fields taken out (protobuf encodes a map in hash-map order, so
//! the same request could encode two ways), then each map as one part holding its entry
//! count followed by its keys and values in key order ([`request_fingerprint`]).
//!
//! Fingerprints are stored with idempotency rows, so this framing never changes: a
//! different fingerprint for the same request would turn a retry into a conflict.
//! Binary columns (`rating`'s catalog, `ingest.backfills`) have always held exactly this
//! framing. Text columns (`invoicing.idempotency_keys`, `payments.refunds`,
//! `payments.reconciliation_reports`) store [`Fingerprint::to_stored`]: `v2:` and 64 hex
//! digits. A text value without that prefix was written before this module, with its
//! service's own framing; [`Fingerprint::matches_stored`] compares such a row with the
//! fingerprint of that framing (which the service keeps beside the call, pinned to
//! today's hashes by a test), so a retry of a request made before an upgrade is still a
//! replay after it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sha2::{Digest, Sha256};

/// The prefix of a stored fingerprint in this module's framing (a text column).
pub const STORED_PREFIX: &str = "v2:";

/// The SHA-256 fingerprint of a request in the one framing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// The fingerprint of `parts`: SHA-256 over each part's length (`u64`, little-endian)
/// and bytes. Equal exactly when every part is equal.
///
/// ```
/// use tally_runtime::idempotency::fingerprint;
///
/// let window = fingerprint([b"2026-01-01".as_slice(), b"2026-02-01"]);
/// assert_eq!(window, fingerprint([b"2026-01-01".as_slice(), b"2026-02-01"]));
/// assert_ne!(window, fingerprint([b"2026-01-012026-02-01".as_slice()]));
/// ```
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Fingerprint(hasher.finalize().into())
}

/// The fingerprint of a protobuf request whose map fields the caller took out (cleared
/// in `request`, passed in `maps`): the request's encoding, then for each map its entry
/// count and its keys and values in key order (all parts of [`fingerprint`]).
pub fn request_fingerprint(
    request: &impl prost::Message,
    maps: &[&HashMap<String, String>],
) -> Fingerprint {
    encoded_request_fingerprint(&request.encode_to_vec(), maps)
}

/// [`request_fingerprint`] of a request the caller already encoded (maps taken out).
pub fn encoded_request_fingerprint(
    encoded: &[u8],
    maps: &[&HashMap<String, String>],
) -> Fingerprint {
    let sorted: Vec<BTreeMap<&String, &String>> =
        maps.iter().map(|map| map.iter().collect()).collect();
    // Each map starts with its entry count, so entries cannot move between maps.
    let lengths: Vec<[u8; 8]> = sorted
        .iter()
        .map(|map| (map.len() as u64).to_le_bytes())
        .collect();
    let entries = sorted.iter().zip(&lengths).flat_map(|(map, length)| {
        std::iter::once(length.as_slice()).chain(
            map.iter()
                .flat_map(|(key, value)| [key.as_bytes(), value.as_bytes()]),
        )
    });
    fingerprint(std::iter::once(encoded).chain(entries))
}

impl Fingerprint {
    /// The 32 bytes (what a binary column stores).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// What a text column stores: `v2:` and 64 lower-case hex digits.
    pub fn to_stored(&self) -> String {
        format!("{STORED_PREFIX}{self}")
    }

    /// Whether `stored` (a text column's value) records this request. A value in this
    /// framing is compared with it; an older value (no `v2:` prefix) with `legacy()`, the
    /// value the service's framing before this module gives the same request.
    pub fn matches_stored(&self, stored: &str, legacy: impl FnOnce() -> String) -> bool {
        if stored.starts_with(STORED_PREFIX) {
            stored == self.to_stored()
        } else {
            stored == legacy()
        }
    }
}

impl fmt::Display for Fingerprint {
    /// 64 lower-case hex digits.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The framing never changes: fixed parts give these exact hashes forever.
    #[test]
    fn fixed_parts_give_fixed_fingerprints() {
        assert_eq!(
            fingerprint(std::iter::empty()).to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "no part is SHA-256 of nothing"
        );
        let parts = fingerprint([b"ab".as_slice(), b"c"]);
        let mut framed = Vec::new();
        framed.extend_from_slice(&2u64.to_le_bytes());
        framed.extend_from_slice(b"ab");
        framed.extend_from_slice(&1u64.to_le_bytes());
        framed.extend_from_slice(b"c");
        assert_eq!(parts.as_bytes(), &<[u8; 32]>::from(Sha256::digest(&framed)));
        assert_ne!(parts, fingerprint([b"a".as_slice(), b"bc"]));
    }

    #[test]
    fn a_request_fingerprint_ignores_map_order_but_not_content() {
        let request = prost_types::Duration {
            seconds: 7,
            nanos: 0,
        };
        let forward: HashMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        let mut backward = HashMap::new();
        for (key, value) in [("c", "3"), ("b", "2"), ("a", "1")] {
            backward.insert(key.to_owned(), value.to_owned());
        }
        let hash = request_fingerprint(&request, &[&forward]);
        assert_eq!(request_fingerprint(&request, &[&backward]), hash);
        backward.insert("d".into(), String::new());
        assert_ne!(request_fingerprint(&request, &[&backward]), hash);
        // Entries cannot move between maps unnoticed.
        let (first, second): (HashMap<_, _>, HashMap<_, _>) = forward
            .clone()
            .into_iter()
            .partition(|(key, _)| key.as_str() == "a");
        assert_ne!(request_fingerprint(&request, &[&first, &second]), hash);
        assert_eq!(
            hash,
            fingerprint([
                request.encode_to_vec().as_slice(),
                &3u64.to_le_bytes(),
                b"a",
                b"1",
                b"b",
                b"2",
                b"c",
                b"3",
            ])
        );
    }

    #[test]
    fn stored_values_compare_in_their_own_framing() {
        let current = fingerprint([b"refund".as_slice()]);
        let stored = current.to_stored();
        assert!(stored.starts_with("v2:") && stored.len() == 3 + 64);
        let never = || -> String { panic!("a v2 value is never compared with the legacy framing") };
        assert!(current.matches_stored(&stored, never));
        assert!(!fingerprint([b"other".as_slice()]).matches_stored(&stored, never));
        assert!(current.matches_stored("0123abcd", || "0123abcd".to_owned()));
        assert!(!current.matches_stored("0123abcd", || "ffff".to_owned()));
    }
}
