//! The reads of the event log: snapshot bounds, replay pages, an event's
//! status, rejected events and their replays.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tally_domain::ids::RejectionId;
use tally_proto::ingest::RejectedEventState;

use super::{ReadPosition, RejectionFilter, RejectionRow};
use crate::log::{self, EventRow, StoredKey};
use crate::pipeline::SEQUENCE_BLOCK;

/// A bound above every sequence number committed so far: the end of the
/// latest batch's block (0 when none). `ReadEvents` snapshots by it.
pub async fn snapshot_bound(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (last, called): (i64, bool) =
        sqlx::query_as("SELECT last_value, is_called FROM ingest.batch_block")
            .fetch_one(pool)
            .await?;
    Ok(if called {
        (last + 1) * SEQUENCE_BLOCK - 1
    } else {
        0
    })
}

/// The highest sequence number committed: published or still in the outbox.
pub async fn committed_high_water(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT GREATEST((SELECT published_high_water FROM ingest.relay_state), \
                         (SELECT max(last_seq) FROM ingest.accepted_batches))",
    )
    .fetch_one(pool)
    .await
}

/// The published high-water mark of the relay.
pub async fn published_high_water(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT published_high_water FROM ingest.relay_state")
        .fetch_one(pool)
        .await
}

/// One page of a customer's events in `[start, end)`, in (time, seq) order.
#[allow(clippy::too_many_arguments)]
pub async fn events_page(
    pool: &PgPool,
    customer_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    event_type: Option<&str>,
    max_seq: i64,
    after: Option<ReadPosition>,
    limit: i64,
) -> Result<Vec<(ReadPosition, tally_proto::events::UsageAccepted)>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, payload, intake, ingested_at \
         FROM ingest.events \
         WHERE customer_id = $1 AND event_time >= $2 AND event_time < $3 \
           AND ($4::text IS NULL OR event_type = $4) AND seq <= $5 \
           AND ($6::timestamptz IS NULL OR (event_time, seq) > ($6, $7)) \
         ORDER BY event_time, seq LIMIT $8",
    )
    .bind(customer_id)
    .bind(start)
    .bind(end)
    .bind(event_type)
    .bind(max_seq)
    .bind(after.map(|position| position.event_time))
    .bind(after.map_or(0, |position| position.seq))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let accepted = row.into_accepted()?;
            let position = ReadPosition {
                event_time: accepted
                    .event
                    .as_ref()
                    .and_then(|event| event.timestamp.as_ref())
                    .and_then(crate::validation::to_instant)
                    .unwrap_or_default(),
                seq: i64::try_from(accepted.sequence_number).unwrap_or(0),
            };
            Ok((position, accepted))
        })
        .collect()
}

/// The accepted key and duplicate count of (customer, event id), if accepted.
pub async fn accepted_key(
    pool: &PgPool,
    customer_id: &str,
    event_id: &str,
) -> Result<Option<(StoredKey, i64)>, sqlx::Error> {
    let row: Option<(i64, DateTime<Utc>, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT seq, event_time, payload_hash, duplicate_count FROM ingest.event_keys \
         WHERE customer_id = $1 AND event_id = $2",
    )
    .bind(customer_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(seq, event_time, payload_hash, duplicates)| {
        (
            StoredKey {
                seq,
                event_time,
                payload_hash,
            },
            duplicates,
        )
    }))
}

/// Whether the event with `seq` is still waiting in the outbox.
pub async fn is_pending(pool: &PgPool, seq: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ingest.accepted_batches WHERE $1 BETWEEN first_seq AND last_seq)",
    )
    .bind(seq)
    .fetch_one(pool)
    .await
}

const REJECTION_COLUMNS: &str = "id, kind, event, violations, raw_payload, raw_content_type, intake, rejected_at, state, replay_count, resolved_at, event_summarized";

/// Rejections of (customer, event id), newest first. Found by the stored
/// customer prefix and the hash of the full pair (exact for ids of any length).
pub async fn rejections_of(
    pool: &PgPool,
    customer_id: &str,
    event_id: &str,
) -> Result<Vec<RejectionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REJECTION_COLUMNS} FROM ingest.rejected_events \
         WHERE customer_id = $1 AND key_hash = $2 ORDER BY rejected_at DESC, id DESC"
    )))
    .bind(log::lookup_prefix(customer_id))
    .bind(log::rejection_key_hash(customer_id, event_id).as_slice())
    .fetch_all(pool)
    .await
}

/// One page of rejections, newest first, after `(rejected_at, id)` of the previous page.
pub async fn list_rejections(
    pool: &PgPool,
    filter: &RejectionFilter,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<RejectionRow>, sqlx::Error> {
    let rule_filter = filter
        .rule
        .as_ref()
        .map(|rule| serde_json::json!([{ "rule": rule }]).to_string());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REJECTION_COLUMNS} FROM ingest.rejected_events \
         WHERE ($1::text IS NULL OR customer_id = $1) \
           AND ($2::int2 IS NULL OR kind = $2) \
           AND ($3::int2 IS NULL OR state = $3) \
           AND ($4::timestamptz IS NULL OR rejected_at >= $4) \
           AND ($5::timestamptz IS NULL OR rejected_at < $5) \
           AND ($6::jsonb IS NULL OR violations @> $6::jsonb) \
           AND ($7::timestamptz IS NULL OR (rejected_at, id) < ($7, $8)) \
         ORDER BY rejected_at DESC, id DESC LIMIT $9"
    )))
    // Customer ids are stored as their first 256 characters (longer ones are
    // invalid anyway); a longer filter lists every rejection with that prefix.
    .bind(filter.customer_id.as_deref().map(log::lookup_prefix))
    .bind(filter.kind)
    .bind(filter.state)
    .bind(filter.from)
    .bind(filter.to)
    .bind(rule_filter)
    .bind(after.as_ref().map(|(at, _)| *at))
    .bind(
        after
            .as_ref()
            .map(|(_, id)| id.as_str())
            .unwrap_or_default(),
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The rejections with these ids (any order; missing ids are absent).
pub async fn rejections_by_id(
    pool: &PgPool,
    ids: &[RejectionId],
) -> Result<Vec<RejectionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REJECTION_COLUMNS} FROM ingest.rejected_events WHERE id = ANY($1)"
    )))
    .bind(texts(ids))
    .fetch_all(pool)
    .await
}

/// Records a replay attempt of each rejection; `resolved` ones are closed.
pub async fn record_replays(
    pool: &PgPool,
    attempted: &[RejectionId],
    resolved: &[RejectionId],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ingest.rejected_events SET replay_count = replay_count + 1, \
           state = CASE WHEN id = ANY($2) THEN $3 ELSE state END, \
           resolved_at = CASE WHEN id = ANY($2) THEN COALESCE(resolved_at, $4) ELSE resolved_at END \
         WHERE id = ANY($1)",
    )
    .bind(texts(attempted))
    .bind(texts(resolved))
    .bind(RejectedEventState::Resolved as i16)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ids as the text array a `= ANY($n)` binds.
fn texts(ids: &[RejectionId]) -> Vec<&str> {
    ids.iter().map(RejectionId::as_str).collect()
}
