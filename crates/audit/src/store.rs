//! Reading entries back: by id, filtered and paginated across chains, in
//! sequence order for verification.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::error::AuditError;
use crate::schema::Schema;

/// The stored columns, in the order the queries select them.
const COLUMNS: &str = "sequence, id, recorded_at, action, resource_type, resource_id, actor_kind, \
     actor_id, actor_name, request_id, trace_id, reason, comment, before_state, after_state, \
     previous_hash, hash";

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The chain it belongs to.
    pub schema: Schema,
    /// Its position, from 1.
    pub sequence: i64,
    /// `aud_…`.
    pub id: String,
    /// When.
    pub recorded_at: DateTime<Utc>,
    /// `invoice.voided`, …
    pub action: String,
    /// `invoice`, …
    pub resource_type: String,
    /// `inv_…`, …
    pub resource_id: String,
    /// `api_key`, `system` or `anonymous`.
    pub actor_kind: String,
    /// The key id or job.
    pub actor_id: String,
    /// The key name or job.
    pub actor_name: String,
    /// The caller's request id.
    pub request_id: Option<String>,
    /// The trace id.
    pub trace_id: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Canonical JSON before.
    pub before_state: Option<String>,
    /// Canonical JSON after.
    pub after_state: Option<String>,
    /// The previous entry's hash.
    pub previous_hash: Vec<u8>,
    /// This entry's hash.
    pub hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    sequence: i64,
    id: String,
    recorded_at: DateTime<Utc>,
    action: String,
    resource_type: String,
    resource_id: String,
    actor_kind: String,
    actor_id: String,
    actor_name: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    reason: Option<String>,
    comment: Option<String>,
    before_state: Option<String>,
    after_state: Option<String>,
    previous_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl EntryRow {
    fn in_chain(self, schema: Schema) -> StoredEntry {
        StoredEntry {
            schema,
            sequence: self.sequence,
            id: self.id,
            recorded_at: self.recorded_at,
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            actor_kind: self.actor_kind,
            actor_id: self.actor_id,
            actor_name: self.actor_name,
            request_id: self.request_id,
            trace_id: self.trace_id,
            reason: self.reason,
            comment: self.comment,
            before_state: self.before_state,
            after_state: self.after_state,
            previous_hash: self.previous_hash,
            hash: self.hash,
        }
    }
}

/// Up to `limit` entries of `schema` after `sequence`, in sequence order.
pub(crate) async fn entries_after(
    connection: &mut PgConnection,
    schema: Schema,
    sequence: i64,
    limit: i64,
) -> Result<Vec<StoredEntry>, AuditError> {
    let rows: Vec<EntryRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {} WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        schema.log_table()
    )))
    .bind(sequence)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows.into_iter().map(|row| row.in_chain(schema)).collect())
}

/// The entry `id` in one of `schemas`.
pub async fn get(
    pool: &PgPool,
    schemas: &[Schema],
    id: &str,
) -> Result<Option<StoredEntry>, AuditError> {
    for schema in schemas {
        let row: Option<EntryRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {} WHERE id = $1",
            schema.log_table()
        )))
        .bind(id)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            return Ok(Some(row.in_chain(*schema)));
        }
    }
    Ok(None)
}

/// Which entries to list (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `invoice`, …
    pub resource_type: Option<String>,
    /// `inv_…`, …
    pub resource_id: Option<String>,
    /// `key_…`, `bill_run`, …
    pub actor_id: Option<String>,
    /// `invoice.voided`, …
    pub action: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// A position in the merged order of every chain: (recorded at, chain, sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// When the last listed entry was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Its chain.
    pub schema: Schema,
    /// Its sequence.
    pub sequence: i64,
}

impl Cursor {
    /// The cursor just past `entry`.
    pub fn after(entry: &StoredEntry) -> Self {
        Self {
            recorded_at: entry.recorded_at,
            schema: entry.schema,
            sequence: entry.sequence,
        }
    }

    /// An opaque page token.
    pub fn to_token(self) -> String {
        format!(
            "{}:{}:{}",
            self.recorded_at.timestamp_micros(),
            self.schema.chain_name(),
            self.sequence
        )
    }

    /// Reads a page token back.
    pub fn from_token(token: &str) -> Option<Self> {
        let mut parts = token.split(':');
        let micros: i64 = parts.next()?.parse().ok()?;
        let schema = Schema::from_chain_name(parts.next()?)?;
        let sequence: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            recorded_at: DateTime::from_timestamp_micros(micros)?,
            schema,
            sequence,
        })
    }
}

/// Up to `limit` entries of `schemas` matching `filter`, after `cursor`, in
/// the order (recorded at, chain, sequence), and whether more follow.
pub async fn list(
    pool: &PgPool,
    schemas: &[Schema],
    filter: &Filter,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<(Vec<StoredEntry>, bool), AuditError> {
    let mut merged = Vec::new();
    for schema in schemas {
        // Entries of chains before the cursor's at its instant come before
        // it, of later chains after: the (time, sequence) bound per chain.
        let bound = cursor.map(|cursor| {
            let sequence = match schema.cmp(&cursor.schema) {
                std::cmp::Ordering::Less => i64::MAX,
                std::cmp::Ordering::Equal => cursor.sequence,
                std::cmp::Ordering::Greater => 0,
            };
            (cursor.recorded_at, sequence)
        });
        let rows: Vec<EntryRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {} \
             WHERE ($1::text IS NULL OR resource_type = $1) \
               AND ($2::text IS NULL OR resource_id = $2) \
               AND ($3::text IS NULL OR actor_id = $3) \
               AND ($4::text IS NULL OR action = $4) \
               AND ($5::timestamptz IS NULL OR recorded_at >= $5) \
               AND ($6::timestamptz IS NULL OR recorded_at < $6) \
               AND ($7::timestamptz IS NULL OR (recorded_at, sequence) > ($7, $8)) \
             ORDER BY recorded_at, sequence LIMIT $9",
            schema.log_table()
        )))
        .bind(&filter.resource_type)
        .bind(&filter.resource_id)
        .bind(&filter.actor_id)
        .bind(&filter.action)
        .bind(filter.from)
        .bind(filter.to)
        .bind(bound.map(|(at, _)| at))
        .bind(bound.map_or(0, |(_, sequence)| sequence))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        merged.extend(rows.into_iter().map(|row| row.in_chain(*schema)));
    }
    merged.sort_by_key(Cursor::after);
    let more = merged.len() > limit;
    merged.truncate(limit);
    Ok((merged, more))
}
