//! Appending to a chain, reading its head and verifying it.

use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::entry::{Entry, GENESIS_HASH, Row};
use crate::error::AuditError;
use crate::schema::Schema;
use crate::store::{self, StoredEntry};

/// Entries read per query while verifying.
const VERIFY_BATCH: i64 = 1000;

/// A chain's head: its last sequence and that entry's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The chain.
    pub schema: Schema,
    /// The last sequence (0: empty).
    pub sequence: i64,
    /// The last entry's hash ([`GENESIS_HASH`] when empty).
    pub hash: [u8; 32],
}

impl Head {
    /// The hash in lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Where an entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Its sequence.
    pub sequence: i64,
    /// Its hash.
    pub hash: [u8; 32],
}

/// Appends `entry` to `schema`'s chain on `connection`, which must be inside
/// the transaction making the change: the entry commits or rolls back with it.
///
/// Takes the chain-head row `FOR UPDATE`, so audited transactions of one
/// service append one after the other until each commits: call it last,
/// just before the commit, to hold the lock briefly. Refuses an entry
/// holding something shaped like a secret ([`AuditError::SecretInEntry`]).
pub async fn record(
    connection: &mut PgConnection,
    schema: Schema,
    entry: Entry,
) -> Result<Recorded, AuditError> {
    let recorded = record_many(connection, schema, vec![entry]).await?;
    recorded
        .last()
        .copied()
        .ok_or_else(|| AuditError::invalid("entries", "required", "nothing was recorded"))
}

/// [`record`] for several entries of one transaction (a bill run's batch of
/// finalizations), in their order: three statements whatever their number
/// — the head locked, every entry inserted, the head moved past them.
pub async fn record_many(
    connection: &mut PgConnection,
    schema: Schema,
    entries: Vec<Entry>,
) -> Result<Vec<Recorded>, AuditError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let (last_sequence, mut previous): (i64, Vec<u8>) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT sequence, hash FROM {} WHERE singleton FOR UPDATE",
        schema.head_table()
    )))
    .fetch_one(&mut *connection)
    .await?;
    let mut rows = Vec::with_capacity(entries.len());
    let mut links = Vec::with_capacity(entries.len());
    for (sequence, entry) in (last_sequence + 1..).zip(entries) {
        let row = entry.into_row(schema, sequence)?;
        let hash = row.hash(&previous);
        links.push((std::mem::replace(&mut previous, hash.to_vec()), hash));
        rows.push(row);
    }
    insert(connection, schema, &rows, &links).await?;
    let recorded: Vec<Recorded> = rows
        .iter()
        .zip(&links)
        .map(|(row, (_, hash))| Recorded {
            sequence: row.sequence,
            hash: *hash,
        })
        .collect();
    if let Some(last) = recorded.last() {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET sequence = $1, hash = $2 WHERE singleton",
            schema.head_table()
        )))
        .bind(last.sequence)
        .bind(last.hash.as_slice())
        .execute(&mut *connection)
        .await?;
    }
    Ok(recorded)
}

/// Inserts `rows` with their `(previous hash, hash)` links in one statement.
async fn insert(
    connection: &mut PgConnection,
    schema: Schema,
    rows: &[Row],
    links: &[(Vec<u8>, [u8; 32])],
) -> Result<(), AuditError> {
    let text = |field: fn(&Row) -> &String| rows.iter().map(field).cloned().collect::<Vec<_>>();
    let optional =
        |field: fn(&Row) -> &Option<String>| rows.iter().map(field).cloned().collect::<Vec<_>>();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (sequence, id, recorded_at, action, resource_type, resource_id, actor_kind, \
           actor_id, actor_name, request_id, trace_id, reason, comment, before_state, after_state, \
           previous_hash, hash) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
           $13::text[], $14::text[], $15::text[], $16::bytea[], $17::bytea[])",
        schema.log_table()
    )))
    .bind(rows.iter().map(|row| row.sequence).collect::<Vec<_>>())
    .bind(text(|row| &row.id))
    .bind(rows.iter().map(|row| row.recorded_at).collect::<Vec<_>>())
    .bind(text(|row| &row.action))
    .bind(text(|row| &row.resource_type))
    .bind(text(|row| &row.resource_id))
    .bind(text(|row| &row.actor_kind))
    .bind(text(|row| &row.actor_id))
    .bind(text(|row| &row.actor_name))
    .bind(optional(|row| &row.request_id))
    .bind(optional(|row| &row.trace_id))
    .bind(optional(|row| &row.reason))
    .bind(optional(|row| &row.comment))
    .bind(optional(|row| &row.before_state))
    .bind(optional(|row| &row.after_state))
    .bind(links.iter().map(|(previous, _)| previous.clone()).collect::<Vec<_>>())
    .bind(links.iter().map(|(_, hash)| hash.to_vec()).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The current head of `schema`'s chain, as committed.
pub async fn head(pool: &PgPool, schema: Schema) -> Result<Head, AuditError> {
    let mut connection = pool.acquire().await?;
    read_head(&mut connection, schema).await
}

async fn read_head(connection: &mut PgConnection, schema: Schema) -> Result<Head, AuditError> {
    let (sequence, hash): (i64, Vec<u8>) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT sequence, hash FROM {} WHERE singleton",
        schema.head_table()
    )))
    .fetch_one(&mut *connection)
    .await?;
    Ok(Head {
        schema,
        sequence,
        hash: to_hash(&hash),
    })
}

/// What is wrong with a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenLinkKind {
    /// A sequence is missing: `expected` the sequence, `found` the next one present.
    SequenceGap,
    /// The stored previous hash is not the hash of the entry before.
    PreviousHash,
    /// The entry does not hash to its stored hash: `expected` the recomputed hash.
    Hash,
    /// The chain-head row disagrees with the last entry (`sequence:hash`).
    Head,
    /// The entry at an exported head's sequence has another hash or is gone.
    ExportedHead,
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// What is wrong.
    pub kind: BrokenLinkKind,
    /// The sequence at fault.
    pub sequence: i64,
    /// What was expected there.
    pub expected: String,
    /// What was found.
    pub found: String,
}

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries read.
    pub entries_checked: i64,
    /// The head the walk ended on (the last good link when broken).
    pub head: Head,
    /// The first broken link; `None` when intact.
    pub broken: Option<BrokenLink>,
}

/// Walks `schema`'s chain from sequence 1 and reports the first broken link,
/// then compares the chain-head row with the last entry. Reads one
/// snapshot (`REPEATABLE READ`), so appends made meanwhile are not seen.
pub async fn verify(pool: &PgPool, schema: Schema) -> Result<Verification, AuditError> {
    verify_against(pool, schema, &[]).await
}

/// [`verify`], and checks that each of `exported` (heads of this chain read
/// earlier and kept elsewhere) still names an entry with that hash: what
/// catches a history rewritten with recomputed hashes, up to that head.
pub async fn verify_against(
    pool: &PgPool,
    schema: Schema,
    exported: &[Head],
) -> Result<Verification, AuditError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    let mut verification = walk(&mut transaction, schema).await?;
    if verification.broken.is_none() {
        let stored = read_head(&mut transaction, schema).await?;
        if stored != verification.head {
            verification.broken = Some(BrokenLink {
                kind: BrokenLinkKind::Head,
                sequence: stored.sequence,
                expected: format!(
                    "{}:{}",
                    verification.head.sequence,
                    verification.head.hash_hex()
                ),
                found: format!("{}:{}", stored.sequence, stored.hash_hex()),
            });
        }
    }
    if verification.broken.is_none() {
        for head in exported.iter().filter(|head| head.schema == schema) {
            if let Some(broken) = check_exported(&mut transaction, head).await? {
                verification.broken = Some(broken);
                break;
            }
        }
    }
    transaction.commit().await?;
    Ok(verification)
}

async fn walk(connection: &mut PgConnection, schema: Schema) -> Result<Verification, AuditError> {
    let mut verification = Verification {
        entries_checked: 0,
        head: Head {
            schema,
            sequence: 0,
            hash: GENESIS_HASH,
        },
        broken: None,
    };
    loop {
        let batch =
            store::entries_after(connection, schema, verification.head.sequence, VERIFY_BATCH)
                .await?;
        let done = batch.len() < VERIFY_BATCH as usize;
        for entry in batch {
            verification.entries_checked += 1;
            if let Some(broken) = check_link(&verification.head, &entry) {
                verification.broken = Some(broken);
                return Ok(verification);
            }
            verification.head = Head {
                schema,
                sequence: entry.sequence,
                hash: to_hash(&entry.hash),
            };
        }
        if done {
            return Ok(verification);
        }
    }
}

/// Whether `entry` correctly follows `previous`.
fn check_link(previous: &Head, entry: &StoredEntry) -> Option<BrokenLink> {
    let broken = |kind, expected: String, found: String| {
        Some(BrokenLink {
            kind,
            sequence: entry.sequence,
            expected,
            found,
        })
    };
    if entry.sequence != previous.sequence + 1 {
        return Some(BrokenLink {
            kind: BrokenLinkKind::SequenceGap,
            sequence: previous.sequence + 1,
            expected: (previous.sequence + 1).to_string(),
            found: entry.sequence.to_string(),
        });
    }
    if entry.previous_hash != previous.hash {
        return broken(
            BrokenLinkKind::PreviousHash,
            previous.hash_hex(),
            hex::encode(&entry.previous_hash),
        );
    }
    let recomputed = entry.computed_hash();
    if entry.hash != recomputed {
        return broken(
            BrokenLinkKind::Hash,
            hex::encode(recomputed),
            hex::encode(&entry.hash),
        );
    }
    None
}

async fn check_exported(
    connection: &mut PgConnection,
    head: &Head,
) -> Result<Option<BrokenLink>, AuditError> {
    if head.sequence == 0 {
        return Ok(None);
    }
    let found: Option<(Vec<u8>,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT hash FROM {} WHERE sequence = $1",
        head.schema.log_table()
    )))
    .bind(head.sequence)
    .fetch_optional(&mut *connection)
    .await?;
    let found = match found {
        Some((hash,)) if hash == head.hash => return Ok(None),
        Some((hash,)) => hex::encode(hash),
        None => "no entry".to_owned(),
    };
    Ok(Some(BrokenLink {
        kind: BrokenLinkKind::ExportedHead,
        sequence: head.sequence,
        expected: head.hash_hex(),
        found,
    }))
}

impl StoredEntry {
    /// The hash this entry's stored columns and previous hash give: what
    /// [`verify`] compares with the stored hash (and what anyone rewriting
    /// history would recompute — which only an exported head catches).
    pub fn computed_hash(&self) -> [u8; 32] {
        row_of(self).hash(&self.previous_hash)
    }
}

/// The hashed row of a stored entry.
fn row_of(entry: &StoredEntry) -> Row {
    Row {
        chain: entry.schema.chain_name(),
        sequence: entry.sequence,
        id: entry.id.clone(),
        recorded_at: entry.recorded_at,
        action: entry.action.clone(),
        resource_type: entry.resource_type.clone(),
        resource_id: entry.resource_id.clone(),
        actor_kind: entry.actor_kind.clone(),
        actor_id: entry.actor_id.clone(),
        actor_name: entry.actor_name.clone(),
        request_id: entry.request_id.clone(),
        trace_id: entry.trace_id.clone(),
        reason: entry.reason.clone(),
        comment: entry.comment.clone(),
        before_state: entry.before_state.clone(),
        after_state: entry.after_state.clone(),
    }
}

/// A stored hash as 32 bytes (the table's CHECK keeps them 32 long; a
/// shorter one reads as zero-padded and then fails verification).
fn to_hash(bytes: &[u8]) -> [u8; 32] {
    let mut hash = [0; 32];
    let length = bytes.len().min(32);
    hash[..length].copy_from_slice(&bytes[..length]);
    hash
}

/// Parses `<sequence>:<64 hex>` (what `tally audit head` prints) for `schema`.
pub fn parse_head(schema: Schema, text: &str) -> Option<Head> {
    let (sequence, hash) = text.split_once(':')?;
    let sequence: i64 = sequence.parse().ok().filter(|sequence| *sequence >= 0)?;
    let bytes = hex::decode(hash).ok()?;
    let hash: [u8; 32] = bytes.try_into().ok()?;
    Some(Head {
        schema,
        sequence,
        hash,
    })
}
