//! The event log in PostgreSQL: the statements the ingest pipeline runs inside
//! one transaction per batch, plus the reads (status, replay, rejections).
//!
//! Tables (see `migrations/…_ingest_event_log.sql`): `event_keys` (one row per
//! accepted (customer, event id), forever), `events` (the log, partitioned by
//! month of event time), `rejected_events`, `accepted_batches` (the outbox of
//! accepted events, one row per batch).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Utc};
use prost::Message as _;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tally_domain::ids::RejectionId;
use tally_proto::common::FieldViolation;
use tally_proto::events::{Intake, RejectionKind, UsageAccepted, UsageEvent as WireEvent};

use crate::validation::ValidEvent;

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

impl Partitions {
    /// Creates the partitions for every month in `instants` that is not known yet.
    pub async fn ensure(
        &self,
        pool: &PgPool,
        instants: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<DateTime<Utc>> = {
            let known = self
                .known
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let mut months = HashSet::new();
            instants
                .into_iter()
                .filter(|instant| {
                    let month = (instant.year(), instant.month());
                    !known.contains(&month) && months.insert(month)
                })
                .collect()
        };
        for instant in missing {
            sqlx::query("SELECT ingest.ensure_event_partition($1)")
                .bind(instant)
                .execute(pool)
                .await?;
            self.known
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .insert((instant.year(), instant.month()));
        }
        Ok(())
    }
}

/// Inserts the keys of `events` (distinct within the batch, sorted by key so
/// concurrent batches lock in the same order), each with the sequence number
/// it would get. Returns, per event, whether its key was new.
pub async fn claim_keys(
    connection: &mut PgConnection,
    events: &[(i64, &ValidEvent)],
) -> Result<Vec<bool>, sqlx::Error> {
    let seqs: Vec<i64> = events.iter().map(|(seq, _)| *seq).collect();
    let customers: Vec<&str> = events.iter().map(|(_, e)| e.customer_id()).collect();
    let ids: Vec<&str> = events.iter().map(|(_, e)| e.event_id()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|(_, e)| e.timestamp).collect();
    let hashes: Vec<&[u8]> = events
        .iter()
        .map(|(_, e)| e.payload_hash.as_slice())
        .collect();
    let inserted: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO ingest.event_keys (customer_id, event_id, seq, event_time, payload_hash) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::bytea[]) \
         ON CONFLICT DO NOTHING \
         RETURNING seq",
    )
    .bind(&customers)
    .bind(&ids)
    .bind(&seqs)
    .bind(&times)
    .bind(&hashes)
    .fetch_all(&mut *connection)
    .await?;
    let inserted: HashSet<i64> = inserted.into_iter().collect();
    Ok(seqs.iter().map(|seq| inserted.contains(seq)).collect())
}

/// The stored keys of already accepted events.
pub async fn existing_keys(
    connection: &mut PgConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), StoredKey>, sqlx::Error> {
    let customers: Vec<&str> = keys.iter().map(|(customer, _)| *customer).collect();
    let ids: Vec<&str> = keys.iter().map(|(_, id)| *id).collect();
    type KeyRow = (String, String, i64, DateTime<Utc>, Vec<u8>);
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT k.customer_id, k.event_id, k.seq, k.event_time, k.payload_hash \
         FROM unnest($1::text[], $2::text[]) AS input(c, e) \
         JOIN ingest.event_keys k ON k.customer_id = input.c AND k.event_id = input.e",
    )
    .bind(&customers)
    .bind(&ids)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(customer, id, seq, event_time, payload_hash)| {
            (
                (customer, id),
                StoredKey {
                    seq,
                    event_time,
                    payload_hash,
                },
            )
        })
        .collect())
}

/// Appends newly accepted events to the log with a binary `COPY` (no
/// per-row statement work: the rows go straight to the partitions).
pub async fn insert_events(
    connection: &mut PgConnection,
    events: &[(i64, &ValidEvent)],
    intake: Intake,
    ingested_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = CopyRows::with_capacity(events.len() * 512);
    let ingested_at = postgres_micros(ingested_at);
    for (seq, event) in events {
        rows.row(8);
        rows.int8(*seq);
        rows.bytes(event.customer_id().as_bytes());
        rows.bytes(event.event_id().as_bytes());
        rows.bytes(event.event_type().as_bytes());
        rows.int8(postgres_micros(event.timestamp));
        rows.bytes(&event.event.encode_to_vec());
        rows.int2(intake as i16);
        rows.int8(ingested_at);
    }
    let mut copy = connection
        .copy_in_raw(
            "COPY ingest.events (seq, customer_id, event_id, event_type, event_time, payload, intake, ingested_at) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// PostgreSQL's binary `COPY` format: a header, then per row the field count
/// and each field as a big-endian length and its binary value, then a trailer.
struct CopyRows(Vec<u8>);

impl CopyRows {
    fn with_capacity(capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity + 32);
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags
        buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self(buffer)
    }

    fn row(&mut self, fields: i16) {
        self.0.extend_from_slice(&fields.to_be_bytes());
    }

    fn int8(&mut self, value: i64) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn int2(&mut self, value: i16) {
        self.0.extend_from_slice(&2i32.to_be_bytes());
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    /// `text` (UTF-8) and `bytea` both travel as their raw bytes.
    fn bytes(&mut self, value: &[u8]) {
        let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&length.to_be_bytes());
        self.0.extend_from_slice(value);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

/// A `timestamptz` in binary form: microseconds since 2000-01-01 UTC.
fn postgres_micros(instant: DateTime<Utc>) -> i64 {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    instant.timestamp_micros() - POSTGRES_EPOCH_MICROS
}

/// Adds `count` later deliveries to each accepted key.
pub async fn count_duplicates(
    connection: &mut PgConnection,
    duplicates: &HashMap<(String, String), i64>,
) -> Result<(), sqlx::Error> {
    if duplicates.is_empty() {
        return Ok(());
    }
    let mut entries: Vec<(&(String, String), &i64)> = duplicates.iter().collect();
    entries.sort();
    let customers: Vec<&str> = entries.iter().map(|((c, _), _)| c.as_str()).collect();
    let ids: Vec<&str> = entries.iter().map(|((_, e), _)| e.as_str()).collect();
    let counts: Vec<i64> = entries.iter().map(|(_, count)| **count).collect();
    sqlx::query(
        "UPDATE ingest.event_keys k SET duplicate_count = k.duplicate_count + input.n \
         FROM unnest($1::text[], $2::text[], $3::int8[]) AS input(c, e, n) \
         WHERE k.customer_id = input.c AND k.event_id = input.e",
    )
    .bind(&customers)
    .bind(&ids)
    .bind(&counts)
    .execute(connection)
    .await?;
    Ok(())
}

/// The accepted event with key `(customer, event id)` at `event_time`.
pub async fn fetch_event(
    connection: &mut PgConnection,
    customer_id: &str,
    event_id: &str,
    event_time: DateTime<Utc>,
) -> Result<Option<UsageAccepted>, sqlx::Error> {
    let row: Option<EventRow> = sqlx::query_as(
        "SELECT seq, payload, intake, ingested_at \
         FROM ingest.events WHERE customer_id = $1 AND event_time = $3 AND event_id = $2",
    )
    .bind(customer_id)
    .bind(event_id)
    .bind(event_time)
    .fetch_optional(connection)
    .await?;
    row.map(EventRow::into_accepted).transpose()
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

/// Stores rejections (and nothing else).
pub async fn insert_rejections(
    connection: &mut PgConnection,
    rejections: &[RejectionRecord],
    rejected_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rejections.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rejections.iter().map(|r| r.id.as_str()).collect();
    let customers: Vec<Option<String>> = rejections
        .iter()
        .map(|r| r.event.as_ref().map(|e| lookup_prefix(&e.customer_id)))
        .collect();
    let event_ids: Vec<Option<String>> = rejections
        .iter()
        .map(|r| r.event.as_ref().map(|e| lookup_prefix(&e.id)))
        .collect();
    let key_hashes: Vec<Option<[u8; 32]>> = rejections
        .iter()
        .map(|r| {
            r.event
                .as_ref()
                .map(|e| rejection_key_hash(&e.customer_id, &e.id))
        })
        .collect();
    let key_hashes: Vec<Option<&[u8]>> = key_hashes
        .iter()
        .map(|hash| hash.as_ref().map(<[u8; 32]>::as_slice))
        .collect();
    let summarized: Vec<bool> = rejections.iter().map(|r| r.summarized).collect();
    let kinds: Vec<i16> = rejections.iter().map(|r| r.kind as i16).collect();
    let events: Vec<Option<Vec<u8>>> = rejections
        .iter()
        .map(|r| r.event.as_ref().map(prost::Message::encode_to_vec))
        .collect();
    let violations: Vec<String> = rejections
        .iter()
        .map(|r| violations_json(&r.violations))
        .collect();
    let raw_payloads: Vec<Option<&[u8]>> = rejections
        .iter()
        .map(|r| r.raw_payload.as_deref())
        .collect();
    let raw_types: Vec<Option<String>> = rejections
        .iter()
        .map(|r| r.raw_content_type.as_deref().map(without_nul))
        .collect();
    let intakes: Vec<i16> = rejections.iter().map(|r| r.intake as i16).collect();
    sqlx::query(
        "INSERT INTO ingest.rejected_events \
         (id, customer_id, event_id, key_hash, kind, event, event_summarized, violations, raw_payload, raw_content_type, intake, rejected_at) \
         SELECT i, c, e, h, k, ev, s, v::jsonb, raw, rt, it, $12 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int2[], $6::bytea[], $7::bool[], $8::text[], $9::bytea[], $10::text[], $11::int2[]) \
              AS input(i, c, e, h, k, ev, s, v, raw, rt, it)",
    )
    .bind(&ids)
    .bind(&customers)
    .bind(&event_ids)
    .bind(&key_hashes)
    .bind(&kinds)
    .bind(&events)
    .bind(&summarized)
    .bind(&violations)
    .bind(&raw_payloads)
    .bind(&raw_types)
    .bind(&intakes)
    .bind(rejected_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Records the batch's accepted sequence range in the `usage-accepted` outbox.
pub async fn enqueue_accepted(
    connection: &mut PgConnection,
    first_seq: i64,
    last_seq: i64,
    count: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ingest.accepted_batches (first_seq, last_seq, event_count) VALUES ($1, $2, $3)",
    )
    .bind(first_seq)
    .bind(last_seq)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .execute(connection)
    .await?;
    Ok(())
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
fn without_nul(text: &str) -> String {
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
