//! Ids the finance rules need: ids minted by other services, and deterministic transaction ids.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{IdError, TransactionId};

/// Longest [`ExternalId`].
pub const MAX_EXTERNAL_ID_LEN: usize = 128;

/// An id minted by another service that the domain has no type for (an invoice line, a
/// payment, a refund, a usage report): 1 to 128 visible ASCII characters, so `il_01HZ…`,
/// `pay_1` and `ref_race_3` all fit. It appears verbatim in transaction descriptions.
///
/// ```
/// use tally_domain::finance::ExternalId;
///
/// assert!(ExternalId::parse("il_01HZX3K8Q2").is_ok());
/// assert!(ExternalId::parse("has space").is_err());
/// assert!(ExternalId::parse("").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

impl ExternalId {
    /// Parses and validates an id.
    pub fn parse(text: &str) -> Result<ExternalId, IdError> {
        let kind = "ExternalId";
        if text.is_empty() {
            return Err(IdError::Empty { kind });
        }
        if text.len() > MAX_EXTERNAL_ID_LEN {
            return Err(IdError::TooLong {
                kind,
                length: text.len(),
                max: MAX_EXTERNAL_ID_LEN,
            });
        }
        if let Some((position, character)) = text
            .char_indices()
            .find(|(_, character)| !character.is_ascii_graphic())
        {
            return Err(IdError::InvalidCharacter {
                kind,
                character,
                position,
            });
        }
        Ok(ExternalId(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for ExternalId {
    type Error = IdError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        ExternalId::parse(&text)
    }
}

impl From<ExternalId> for String {
    fn from(id: ExternalId) -> String {
        id.0
    }
}

/// The 128-bit FNV-1a hash of `text`, as 32 lower-case hex digits.
///
/// Written out here rather than taken from `std` because `DefaultHasher` may change between
/// Rust releases, and these hashes are stored (in ids) forever.
pub(crate) fn fnv1a_128_hex(text: &str) -> String {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = text.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:032x}")
}

/// The transaction id of posting rule `rule` applied to the source named by `parts`:
/// `txn_` + `rule` + the FNV-1a-128 hash of the parts.
///
/// The same fact and rule always give the same id (a replay is recognised by the ledger);
/// different parts give different ids unless 128-bit hashes collide, and a collision is not
/// silent: the ledger refuses it as `ExistsWithDifferentContent`. The parts are joined with
/// the ASCII unit separator, which no id contains, so `("a b", "c")` and `("a", "b c")` differ.
pub(crate) fn derived_transaction_id(
    rule: &'static str,
    parts: &[&str],
) -> Result<TransactionId, IdError> {
    let mut key = String::from(rule);
    for part in parts {
        key.push('\u{1f}');
        key.push_str(part);
    }
    TransactionId::from_body(&format!("{rule}{}", fnv1a_128_hex(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_128_matches_the_reference_vectors() {
        // Reference values of the FNV specification (draft-eastlake-fnv).
        assert_eq!(fnv1a_128_hex(""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(fnv1a_128_hex("a"), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn derived_ids_are_stable_and_separate_their_parts() {
        let id = derived_transaction_id("inv", &["inv_1", "il_1"]).unwrap();
        assert_eq!(
            id,
            derived_transaction_id("inv", &["inv_1", "il_1"]).unwrap()
        );
        assert!(id.as_str().starts_with("txn_inv"));
        assert_eq!(id.as_str().len(), "txn_inv".len() + 32);
        assert_ne!(derived_transaction_id("inv", &["inv_1il_1"]).unwrap(), id);
        assert_ne!(
            derived_transaction_id("pay", &["inv_1", "il_1"]).unwrap(),
            id
        );
    }

    #[test]
    fn external_ids_are_visible_ascii() {
        assert_eq!(
            ExternalId::parse("pay_1\u{7f}"),
            Err(IdError::InvalidCharacter {
                kind: "ExternalId",
                character: '\u{7f}',
                position: 5
            })
        );
        assert!(ExternalId::parse(&"x".repeat(MAX_EXTERNAL_ID_LEN)).is_ok());
        assert!(ExternalId::parse(&"x".repeat(MAX_EXTERNAL_ID_LEN + 1)).is_err());
        let id: ExternalId = serde_json::from_str("\"ref_46\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"ref_46\"");
    }
}
