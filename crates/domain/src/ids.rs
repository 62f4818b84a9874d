//! Identifiers: prefixed, validated newtypes.
//!
//! Every way in — [`FromStr`](std::str::FromStr), `TryFrom<String>`, serde, and the proto
//! mapping of the services (`tally_proto::convert::id`) — goes through the same parser, so an
//! id value is always valid. New ids are minted from a generated [`IdBody`], valid by
//! construction, with [`PrefixedId::with_body`] (the runtime's `ids.mint::<InvoiceId>()`):
//! each prefix is written once, in its `prefixed_id!` below, and a new prefix is a new type
//! (with its line in the `prefixed_id_tests!` list).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest body after the prefix of a prefixed id, and longest code or event id.
pub const MAX_ID_BODY_LEN: usize = 64;

/// Longest client-supplied event id (idempotency key).
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("{kind}: empty")]
    Empty {
        /// What kind of id was expected.
        kind: &'static str,
    },
    /// The string does not start with the expected `prefix_`.
    #[error("{kind}: expected prefix {expected:?}")]
    WrongPrefix {
        /// What kind of id was expected.
        kind: &'static str,
        /// The prefix, with its underscore.
        expected: &'static str,
    },
    /// Nothing after the prefix.
    #[error("{kind}: nothing after the prefix")]
    EmptyBody {
        /// What kind of id was expected.
        kind: &'static str,
    },
    /// Too long.
    #[error("{kind}: {length} characters, at most {max}")]
    TooLong {
        /// What kind of id was expected.
        kind: &'static str,
        /// The length given.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("{kind}: character {character:?} at byte {position} is not allowed")]
    InvalidCharacter {
        /// What kind of id was expected.
        kind: &'static str,
        /// The offending character.
        character: char,
        /// Its byte offset in the whole string.
        position: usize,
    },
}

/// An id type with a fixed prefix (`inv_…`): what the runtime's id generator mints.
///
/// The prefix lives once, on the type; services mint with
/// `ids.mint::<InvoiceId>()` and never spell a prefix.
pub trait PrefixedId: Sized + fmt::Display {
    /// The prefix, including its underscore (`"inv_"`).
    const PREFIX: &'static str;

    /// The id made of this type's prefix and a generated body; always valid,
    /// because an [`IdBody`] is.
    fn with_body(body: &IdBody) -> Self;

    /// The whole id, prefix included.
    fn as_str(&self) -> &str;
}

/// The generated part of a new id, after the prefix: 1 to [`MAX_ID_BODY_LEN`] ASCII letters
/// and digits by construction, so joining it to any prefix gives a valid id.
///
/// ```
/// use tally_domain::ids::{IdBody, InvoiceId, PrefixedId};
///
/// assert_eq!(InvoiceId::with_body(&IdBody::sequence(7)).as_str(), "inv_000007");
/// assert_eq!(IdBody::hex(0xab).as_str(), "000000000000000000000000000000ab");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdBody(String);

impl IdBody {
    /// A counter, zero-padded to six digits (`000042`): predictable ids for tests.
    pub fn sequence(number: u64) -> Self {
        Self(format!("{number:06}"))
    }

    /// 128 bits in 32 lower-case hex digits, most significant first (a UUIDv7's
    /// `simple()` form, which sorts by its time part).
    pub fn hex(value: u128) -> Self {
        Self(format!("{value:032x}"))
    }

    /// The body.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Defines a `prefix_body` id: the body is 1 to [`MAX_ID_BODY_LEN`] ASCII letters and digits
/// (sortable generators such as ULIDs or base32 UUIDv7 fit).
macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix, including its underscore.
            pub const PREFIX: &'static str = concat!($prefix, "_");

            /// Parses and validates `prefix_body`.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                Self::check(text).map(|()| Self(text.to_owned()))
            }

            /// The rules of [`Self::parse`] without building the id (no allocation).
            pub fn check(text: &str) -> Result<(), IdError> {
                parse_prefixed(stringify!($name), Self::PREFIX, text)
            }

            /// Builds an id from a generated body (e.g. a ULID), validating it.
            pub fn from_body(body: &str) -> Result<Self, IdError> {
                Self::parse(&format!("{}{}", Self::PREFIX, body))
            }

            /// The whole id, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl PrefixedId for $name {
            const PREFIX: &'static str = concat!($prefix, "_");

            fn with_body(body: &IdBody) -> Self {
                Self(format!("{}{}", Self::PREFIX, body.as_str()))
            }

            fn as_str(&self) -> &str {
                &self.0
            }
        }

        id_conversions!($name);
    };
}

/// `Display`, `FromStr`, `TryFrom<String>`, `From<id> for String`, all through `parse`.
macro_rules! id_conversions {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A customer, `cus_…`.
    ///
    /// ```
    /// use tally_domain::ids::CustomerId;
    ///
    /// let id: CustomerId = "cus_01HZX3K8Q2".parse().unwrap();
    /// assert_eq!(id.as_str(), "cus_01HZX3K8Q2");
    /// assert!("sub_01HZX3K8Q2".parse::<CustomerId>().is_err());
    /// assert!("cus_".parse::<CustomerId>().is_err());
    /// assert!("cus_a-b".parse::<CustomerId>().is_err());
    /// ```
    CustomerId,
    "cus"
);
prefixed_id!(
    /// A subscription, `sub_…`.
    SubscriptionId,
    "sub"
);
prefixed_id!(
    /// An invoice, `inv_…`.
    InvoiceId,
    "inv"
);
prefixed_id!(
    /// A plan (all its versions), `plan_…`.
    PlanId,
    "plan"
);
prefixed_id!(
    /// A credit note, `cn_…`.
    CreditNoteId,
    "cn"
);
prefixed_id!(
    /// A prepaid credit grant, `grant_…`.
    CreditGrantId,
    "grant"
);
prefixed_id!(
    /// A ledger account, `acct_…`.
    AccountId,
    "acct"
);
prefixed_id!(
    /// A ledger transaction, `txn_…`; also its idempotency key.
    TransactionId,
    "txn"
);

prefixed_id!(
    /// A plan version (a draft or a published version of a plan), `pv_…`.
    PlanVersionId,
    "pv"
);
prefixed_id!(
    /// A meter of the catalog, `mtr_…` (its code is a [`MeterCode`]).
    MeterId,
    "mtr"
);
prefixed_id!(
    /// A re-rating job, `rrj_…`.
    RerateJobId,
    "rrj"
);
prefixed_id!(
    /// A usage or spend threshold of a subscription, `thr_…`.
    ThresholdId,
    "thr"
);
prefixed_id!(
    /// A line of an invoice, `il_…`.
    InvoiceLineId,
    "il"
);
prefixed_id!(
    /// An invoice event on the bus (`tally.invoicing.v1.InvoiceEvent`), `ievt_…`.
    InvoiceEventId,
    "ievt"
);
prefixed_id!(
    /// An entry of a customer's prepaid-credit ledger, `cle_…`.
    CreditLedgerEntryId,
    "cle"
);
prefixed_id!(
    /// A payment (the collection of one invoice), `pay_…`.
    PaymentId,
    "pay"
);
prefixed_id!(
    /// A refund of a payment, `ref_…`.
    RefundId,
    "ref"
);
prefixed_id!(
    /// A reconciliation report (Tally against Stripe over a window), `rec_…`.
    ReconciliationReportId,
    "rec"
);
prefixed_id!(
    /// One finding of a reconciliation report, `rcf_…`.
    ReconciliationFindingId,
    "rcf"
);
prefixed_id!(
    /// A rejected usage event kept with its reasons, `rej_…`.
    RejectionId,
    "rej"
);
prefixed_id!(
    /// A backfill window that accepts a customer's older usage, `bkf_…`.
    BackfillId,
    "bkf"
);
prefixed_id!(
    /// An API key or a portal token (`tally_auth.api_keys`), `key_…`.
    ApiKeyId,
    "key"
);
prefixed_id!(
    /// An entry of a service's audit chain, `aud_…`.
    AuditEntryId,
    "aud"
);
prefixed_id!(
    /// A bus message's default id, `msg_…` (producers that derive ids from their own
    /// records, such as `uacc_<seq>`, replace it).
    MessageId,
    "msg"
);
prefixed_id!(
    /// A quote (one revision of it), `quo_…`.
    QuoteId,
    "quo"
);

fn parse_prefixed(kind: &'static str, prefix: &'static str, text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let Some(body) = text.strip_prefix(prefix) else {
        return Err(IdError::WrongPrefix {
            kind,
            expected: prefix,
        });
    };
    if body.is_empty() {
        return Err(IdError::EmptyBody { kind });
    }
    check_length(kind, body.len(), MAX_ID_BODY_LEN)?;
    check_characters(kind, text, prefix.len(), |character| {
        character.is_ascii_alphanumeric()
    })
}

fn check_length(kind: &'static str, length: usize, max: usize) -> Result<(), IdError> {
    if length > max {
        return Err(IdError::TooLong { kind, length, max });
    }
    Ok(())
}

fn check_characters(
    kind: &'static str,
    text: &str,
    skip_bytes: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    match text
        .char_indices()
        .skip_while(|(position, _)| *position < skip_bytes)
        .find(|(_, character)| !allowed(*character))
    {
        Some((position, character)) => Err(IdError::InvalidCharacter {
            kind,
            character,
            position,
        }),
        None => Ok(()),
    }
}

/// A meter code, also the event type that feeds it: `api_requests`, `storage.gb`.
///
/// 1 to 64 characters: lower-case ASCII letters, digits, `_`, `.` and `-`, starting with a letter.
///
/// ```
/// use tally_domain::ids::MeterCode;
///
/// assert!(MeterCode::parse("llm.tokens_out").is_ok());
/// assert!(MeterCode::parse("Tokens").is_err());
/// assert!(MeterCode::parse("1tokens").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeterCode(String);

impl MeterCode {
    /// Parses and validates a code.
    pub fn parse(text: &str) -> Result<MeterCode, IdError> {
        Self::check(text).map(|()| MeterCode(text.to_owned()))
    }

    /// The rules of [`Self::parse`] without building the code (no allocation).
    pub fn check(text: &str) -> Result<(), IdError> {
        parse_code("MeterCode", text)
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

id_conversions!(MeterCode);

/// A plan charge's code, unique within a plan version: `seats`, `api_calls`.
/// Same rules as [`MeterCode`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChargeCode(String);

impl ChargeCode {
    /// Parses and validates a code.
    pub fn parse(text: &str) -> Result<ChargeCode, IdError> {
        parse_code("ChargeCode", text).map(|()| ChargeCode(text.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

id_conversions!(ChargeCode);

fn parse_code(kind: &'static str, text: &str) -> Result<(), IdError> {
    let Some(first) = text.chars().next() else {
        return Err(IdError::Empty { kind });
    };
    check_length(kind, text.len(), MAX_ID_BODY_LEN)?;
    if !first.is_ascii_lowercase() {
        return Err(IdError::InvalidCharacter {
            kind,
            character: first,
            position: 0,
        });
    }
    check_characters(kind, text, 0, |character| {
        character.is_ascii_lowercase()
            || character.is_ascii_digit()
            || matches!(character, '_' | '.' | '-')
    })
}

/// A usage event's id, chosen by the publisher: its idempotency key, unique per customer forever.
///
/// 1 to 128 visible ASCII characters (no spaces or control characters), so a UUID, a ULID or
/// `order-123:line-4` all work.
///
/// ```
/// use tally_domain::ids::EventId;
///
/// assert!(EventId::parse("0190d2a4-7c1e-7b3f-9e61-2f0c8f0d4b11").is_ok());
/// assert!(EventId::parse("has space").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    /// Parses and validates an event id.
    pub fn parse(text: &str) -> Result<EventId, IdError> {
        Self::check(text).map(|()| EventId(text.to_owned()))
    }

    /// The rules of [`Self::parse`] without building the id (no allocation).
    pub fn check(text: &str) -> Result<(), IdError> {
        let kind = "EventId";
        if text.is_empty() {
            return Err(IdError::Empty { kind });
        }
        check_length(kind, text.len(), MAX_EVENT_ID_LEN)?;
        check_characters(kind, text, 0, |character| character.is_ascii_graphic())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

id_conversions!(EventId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_ids_report_the_rule_broken() {
        assert_eq!(
            InvoiceId::parse(""),
            Err(IdError::Empty { kind: "InvoiceId" })
        );
        assert_eq!(
            InvoiceId::parse("in_1"),
            Err(IdError::WrongPrefix {
                kind: "InvoiceId",
                expected: "inv_"
            })
        );
        assert_eq!(
            InvoiceId::parse("inv_"),
            Err(IdError::EmptyBody { kind: "InvoiceId" })
        );
        assert_eq!(
            InvoiceId::parse("inv_ab!"),
            Err(IdError::InvalidCharacter {
                kind: "InvoiceId",
                character: '!',
                position: 6
            })
        );
        let long = format!("inv_{}", "a".repeat(MAX_ID_BODY_LEN + 1));
        assert!(matches!(
            InvoiceId::parse(&long),
            Err(IdError::TooLong { .. })
        ));
        assert_eq!(PlanId::from_body("pro").unwrap().as_str(), "plan_pro");
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let id: SubscriptionId = serde_json::from_str("\"sub_42\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"sub_42\"");
        assert!(serde_json::from_str::<SubscriptionId>("\"cus_42\"").is_err());
        assert!(serde_json::from_str::<MeterCode>("\"Bad Code\"").is_err());
    }

    #[test]
    fn event_ids() {
        assert!(EventId::parse("a").is_ok());
        assert!(EventId::parse(&"a".repeat(MAX_EVENT_ID_LEN)).is_ok());
        assert!(EventId::parse(&"a".repeat(MAX_EVENT_ID_LEN + 1)).is_err());
        assert!(EventId::parse("tab\there").is_err());
        assert!(EventId::parse("é").is_err());
    }

    /// One test module per prefixed id type: its prefix round-trips through every way in
    /// (parse, `FromStr`, serde, a minted body) and another type's prefix is refused.
    macro_rules! prefixed_id_tests {
        ($($name:ident),+ $(,)?) => {
            $(
                #[allow(non_snake_case)]
                mod $name {
                    use super::super::*;

                    #[test]
                    fn round_trips_its_prefix() {
                        let minted = $name::with_body(&IdBody::hex(0x0192_f0c1_a3b8_7c2e_9d4f_5a6b_7c8d_9e0f));
                        let text = format!("{}0192f0c1a3b87c2e9d4f5a6b7c8d9e0f", $name::PREFIX);
                        assert_eq!(minted.as_str(), text);
                        assert_eq!($name::parse(&text), Ok(minted.clone()));
                        assert_eq!(text.parse::<$name>(), Ok(minted.clone()));
                        assert_eq!(String::from(minted.clone()), text);
                        let json = serde_json::to_string(&minted).unwrap();
                        assert_eq!(serde_json::from_str::<$name>(&json).unwrap(), minted);
                        assert_eq!(
                            $name::with_body(&IdBody::sequence(1)).to_string(),
                            format!("{}000001", $name::PREFIX)
                        );
                    }

                    #[test]
                    fn refuses_another_prefix() {
                        let other = if $name::PREFIX == "x_" { "y_1" } else { "x_1" };
                        assert_eq!(
                            $name::parse(other),
                            Err(IdError::WrongPrefix {
                                kind: stringify!($name),
                                expected: $name::PREFIX
                            })
                        );
                        let bare = $name::PREFIX.trim_end_matches('_');
                        assert!($name::parse(bare).is_err());
                        assert!($name::parse(&format!("{bare}1")).is_err());
                        assert!(serde_json::from_str::<$name>("\"x_1\"").is_err());
                    }
                }
            )+

            #[test]
            fn prefixes_are_distinct_and_none_starts_another() {
                let prefixes = [$(<super::$name as PrefixedId>::PREFIX),+];
                for (index, prefix) in prefixes.iter().enumerate() {
                    for (other_index, other) in prefixes.iter().enumerate() {
                        assert!(
                            index == other_index || !other.starts_with(prefix),
                            "{prefix:?} and {other:?}: an id of one would parse as the other"
                        );
                    }
                }
            }
        };
    }

    mod per_type {
        use super::*;

        prefixed_id_tests!(
            CustomerId,
            SubscriptionId,
            InvoiceId,
            PlanId,
            CreditNoteId,
            CreditGrantId,
            AccountId,
            TransactionId,
            PlanVersionId,
            MeterId,
            RerateJobId,
            ThresholdId,
            InvoiceLineId,
            InvoiceEventId,
            CreditLedgerEntryId,
            PaymentId,
            RefundId,
            ReconciliationReportId,
            ReconciliationFindingId,
            RejectionId,
            BackfillId,
            ApiKeyId,
            AuditEntryId,
            MessageId,
            QuoteId,
        );
    }
}
