//! The event log's statements: partitions, keys, the binary `COPY` of
//! accepted events, duplicates, rejections and the `usage-accepted` outbox row.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tally_proto::events::{Intake, UsageAccepted};

use super::{
    EventRow, Partitions, RejectionRecord, StoredKey, lookup_prefix, rejection_key_hash,
    violations_json, without_nul,
};
use crate::validation::ValidEvent;

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
