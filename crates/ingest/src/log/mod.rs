//! The event log in PostgreSQL: what is stored (keys, rejections, rows) and,
//! in [`store`], the statements the ingest pipeline runs inside one transaction
//! per batch (the transaction itself is `pipeline::commit`'s).
//!
//! Tables (see `migrations/…_ingest_event_log.sql`): `event_keys` (one row per
//! accepted (customer, event id), forever), `events` (the log, partitioned by
//! month of event time), `rejected_events`, `accepted_batches` (the outbox of
//! accepted events, one row per batch).

mod store;

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tally_domain::ids::RejectionId;
use tally_proto::common::FieldViolation;
use tally_proto::events::{Intake, RejectionKind, UsageAccepted, UsageEvent as WireEvent};

pub use store::{
    claim_keys, count_duplicates, enqueue_accepted, existing_keys, fetch_event, insert_events,
    insert_rejections,
};

/// An accepted key as stored: its sequence number and payload hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Sequence number of the accepted event.
    pub seq: i64,
    /// Its event time (finds the partition).
    pub event_time: DateTime<Utc>,
    /// Its payload hash.
    pub payload_hash: Vec<u8>,
}

/// A rejection about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRecord {
    /// Its id.
    pub id: RejectionId,
    /// Invalid, conflict or undecodable.
    pub kind: RejectionKind,
    /// The event as received (or its summary, see `summarized`); `None` when undecodable.
    pub event: Option<WireEvent>,
    /// Whether `event` is only a summary of an event too large to keep
    /// (`pipeline::rejections::kept_event`); a summary is never replayed.
    pub summarized: bool,
    /// Every violated rule.
    pub violations: Vec<FieldViolation>,
    /// Original bytes of an undecodable message (at most 64 KiB).
    pub raw_payload: Option<Vec<u8>>,
    /// Original content type of an undecodable message.
    pub raw_content_type: Option<String>,
    /// How it arrived.
    pub intake: Intake,
}

/// Most bytes of an undecodable payload kept.
pub const MAX_RAW_PAYLOAD_BYTES: usize = 64 * 1024;

/// Knows which monthly partitions exist, so the hot path asks PostgreSQL only
/// for a month it has not seen.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<(i32, u32)>>,
}

/// A row of `ingest.events`, as replay and status read it.
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    /// Sequence number.
    pub seq: i64,
    /// The protobuf-encoded event.
    pub payload: Vec<u8>,
    /// How it arrived.
    pub intake: i16,
    /// When it was committed.
    pub ingested_at: DateTime<Utc>,
}

impl EventRow {
    /// The row as the bus message rating reads.
    pub fn into_accepted(self) -> Result<UsageAccepted, sqlx::Error> {
        let event = WireEvent::decode(self.payload.as_slice())
            .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        Ok(UsageAccepted {
            event: Some(event),
            sequence_number: u64::try_from(self.seq).unwrap_or(0),
            ingested_at: Some(tally_runtime::clock_service::chrono_to_timestamp(
                self.ingested_at,
            )),
            intake: i32::from(self.intake),
        })
    }

    /// The encoded `UsageAccepted` for this row, built around the stored event
    /// bytes without decoding them (an embedded message is its bytes on the wire).
    pub fn encode_accepted(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(self.payload.len() + 32);
        prost::encoding::bytes::encode(1, &self.payload, &mut buffer);
        prost::encoding::uint64::encode(2, &u64::try_from(self.seq).unwrap_or(0), &mut buffer);
        prost::encoding::message::encode(
            3,
            &tally_runtime::clock_service::chrono_to_timestamp(self.ingested_at),
            &mut buffer,
        );
        prost::encoding::int32::encode(4, &i32::from(self.intake), &mut buffer);
        buffer
    }
}

/// Violations as the JSON array stored beside a rejection.
pub fn violations_json(violations: &[FieldViolation]) -> String {
    let array: Vec<serde_json::Value> = violations
        .iter()
        .map(|v| {
            serde_json::json!({
                "field": without_nul(&v.field),
                "rule": without_nul(&v.rule),
                "description": without_nul(&v.description),
            })
        })
        .collect();
    serde_json::Value::Array(array).to_string()
}

/// Violations read back from the JSON array.
pub fn violations_from_json(value: &serde_json::Value) -> Vec<FieldViolation> {
    let text = |entry: &serde_json::Value, key: &str| {
        entry
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    value
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| FieldViolation {
                    field: text(entry, "field"),
                    rule: text(entry, "rule"),
                    description: text(entry, "description"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// PostgreSQL text cannot hold NUL: lookups and JSON keep a visible stand-in;
/// the exact bytes stay in the protobuf `event` column.
pub(crate) fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Characters of a customer or event id kept in `rejected_events`' lookup
/// columns. A rejected event's ids may be megabytes long (that is often why it
/// was rejected), and an index entry must stay under PostgreSQL's btree limit
/// (about 2.7 kB): 256 characters are at most 1 KiB of UTF-8, readable for an
/// operator, and the full pair is identified by [`rejection_key_hash`].
pub const LOOKUP_PREFIX_CHARS: usize = 256;

/// A customer or event id as `rejected_events` stores it for lookups: NUL
/// replaced, cut to [`LOOKUP_PREFIX_CHARS`] characters (like SQL's `left(text, 256)`).
pub fn lookup_prefix(text: &str) -> String {
    without_nul(text)
        .chars()
        .take(LOOKUP_PREFIX_CHARS)
        .collect()
}

/// `rejected_events.key_hash`: SHA-256 of the full (customer id, event id),
/// NULs replaced, each prefixed with its length in bytes as a big-endian u64.
/// The migration that added the column computes the same in SQL:
/// `sha256(int8send(octet_length(c)) || c || int8send(octet_length(e)) || e)`.
pub fn rejection_key_hash(customer_id: &str, event_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [without_nul(customer_id), without_nul(event_id)] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}
