//! The set-based write of a batch's aggregate deltas into `rating.aggregates`:
//! at most three statements per batch whatever its number of rows, two once
//! the period's rows exist.
//!
//! 1. lock the existing rows of the batch's keys (`FOR UPDATE`, [`lock`]) and
//!    merge what the batch adds into them in Rust (the domain's exact
//!    `AggregateState::merge`; the rating path checks each event as it goes,
//!    see `usage::absorb`);
//! 2. write the merged rows back in one `UPDATE … FROM unnest(…)` ([`write`]);
//! 3. insert the keys that had no row, each the batch's whole state.
//!
//! Rows of one subscription are only ever written by transactions holding its
//! customer's advisory lock (`store::lock_customers`), so no other transaction
//! can insert one of the missing keys in between (an insert that conflicts
//! anyway fails the batch, which is then retried), and these statements cannot
//! deadlock whatever order PostgreSQL takes their row locks in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_domain::meter::{AggregateState, GroupKey};

use crate::error::RatingError;
use crate::usage::{AggregateDelta, AggregateKey};

/// The key columns of a set of aggregate rows, for `unnest`.
#[derive(Default)]
struct KeyColumns<'a> {
    subscriptions: Vec<&'a str>,
    period_starts: Vec<DateTime<Utc>>,
    segment_starts: Vec<DateTime<Utc>>,
    versions: Vec<&'a str>,
    charges: Vec<&'a str>,
    groups: Vec<serde_json::Value>,
}

impl<'a> KeyColumns<'a> {
    fn push(&mut self, key: &'a AggregateKey) -> Result<(), RatingError> {
        self.subscriptions.push(&key.subscription_id);
        self.period_starts.push(key.period_start);
        self.segment_starts.push(key.segment_start);
        self.versions.push(&key.plan_version_id);
        self.charges.push(&key.charge_code);
        self.groups.push(json(&key.group_key)?);
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RatingError> {
    serde_json::to_value(value).map_err(|error| RatingError::Corrupt(error.to_string()))
}

/// Binds the six key columns of `$keys` as the query's next parameters.
macro_rules! bind_keys {
    ($query:expr, $keys:expr) => {
        $query
            .bind(&$keys.subscriptions)
            .bind(&$keys.period_starts)
            .bind(&$keys.segment_starts)
            .bind(&$keys.versions)
            .bind(&$keys.charges)
            .bind(&$keys.groups)
    };
}

/// An existing row, locked for the merge.
#[derive(sqlx::FromRow)]
struct StoredRow {
    subscription_id: String,
    period_start: DateTime<Utc>,
    segment_start: DateTime<Utc>,
    plan_version_id: String,
    charge_code: String,
    group_key: Json<GroupKey>,
    period_end: DateTime<Utc>,
    segment_end: DateTime<Utc>,
    state: Json<AggregateState>,
    event_count: i64,
    max_seq: i64,
}

/// One aggregate row as it will be written: the running state with what a
/// batch absorbed, and whether the row exists (update) or not (insert).
#[derive(Clone, Debug)]
pub struct RunningAggregate {
    /// End of the billing period.
    pub period_end: DateTime<Utc>,
    /// End of the segment.
    pub segment_end: DateTime<Utc>,
    /// The running aggregate.
    pub state: AggregateState,
    /// Events absorbed.
    pub event_count: i64,
    /// Highest ingest sequence number absorbed.
    pub max_seq: i64,
    /// Whether the row is stored already.
    pub stored: bool,
}

/// Locks the stored rows of `keys` (`FOR UPDATE`) and reads them; keys
/// without a row are absent from the answer.
pub async fn lock<'k>(
    connection: &mut PgConnection,
    keys: impl Iterator<Item = &'k AggregateKey>,
) -> Result<BTreeMap<AggregateKey, RunningAggregate>, RatingError> {
    let mut columns = KeyColumns::default();
    for key in keys {
        columns.push(key)?;
    }
    if columns.subscriptions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let stored: Vec<StoredRow> = bind_keys!(sqlx::query_as(
            "SELECT a.subscription_id, a.period_start, a.segment_start, a.plan_version_id, \
               a.charge_code, a.group_key, a.period_end, a.segment_end, a.state, a.event_count, a.max_seq \
             FROM rating.aggregates a \
             JOIN unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[]) \
               AS k (subscription_id, period_start, segment_start, plan_version_id, charge_code, group_key) \
               ON a.subscription_id = k.subscription_id AND a.period_start = k.period_start \
              AND a.segment_start = k.segment_start AND a.plan_version_id = k.plan_version_id \
              AND a.charge_code = k.charge_code AND a.group_key = k.group_key \
             FOR UPDATE OF a",
        ), columns)
        .fetch_all(&mut *connection)
        .await?;
    Ok(stored
        .into_iter()
        .map(|row| {
            let key = AggregateKey {
                subscription_id: row.subscription_id,
                period_start: row.period_start,
                segment_start: row.segment_start,
                plan_version_id: row.plan_version_id,
                charge_code: row.charge_code,
                group_key: row.group_key.0,
            };
            let running = RunningAggregate {
                period_end: row.period_end,
                segment_end: row.segment_end,
                state: row.state.0,
                event_count: row.event_count,
                max_seq: row.max_seq,
                stored: true,
            };
            (key, running)
        })
        .collect())
}

/// Adds every delta to its aggregate row (see the module documentation); a
/// merge that does not fit exactly is an error (the re-rate path: its events
/// were all rated before).
pub async fn absorb_all(
    connection: &mut PgConnection,
    deltas: &BTreeMap<AggregateKey, AggregateDelta>,
) -> Result<(), RatingError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut rows = lock(&mut *connection, deltas.keys()).await?;
    for (key, delta) in deltas {
        match rows.get_mut(key) {
            Some(row) => {
                row.state.merge(&delta.state).map_err(|error| {
                    RatingError::Corrupt(format!(
                        "aggregate {} {} {}: {error}",
                        key.subscription_id, key.charge_code, key.period_start
                    ))
                })?;
                row.event_count += delta.event_count;
                row.max_seq = row.max_seq.max(delta.max_seq);
                row.segment_end = delta.segment_end;
            }
            None => {
                rows.insert(
                    key.clone(),
                    RunningAggregate {
                        period_end: delta.period_end,
                        segment_end: delta.segment_end,
                        state: delta.state.clone(),
                        event_count: delta.event_count,
                        max_seq: delta.max_seq,
                        stored: false,
                    },
                );
            }
        }
    }
    write(connection, rows.iter()).await
}

/// Writes `rows`: one `UPDATE` for the stored ones, one `INSERT` for the others.
pub async fn write<'r>(
    connection: &mut PgConnection,
    rows: impl Iterator<Item = (&'r AggregateKey, &'r RunningAggregate)>,
) -> Result<(), RatingError> {
    let (stored, missing): (Vec<_>, Vec<_>) = rows.partition(|(_, row)| row.stored);
    if !stored.is_empty() {
        update_merged(&mut *connection, &stored).await?;
    }
    if !missing.is_empty() {
        insert_missing(&mut *connection, &missing).await?;
    }
    Ok(())
}

/// Writes the merged rows back in one statement.
async fn update_merged(
    connection: &mut PgConnection,
    merged: &[(&AggregateKey, &RunningAggregate)],
) -> Result<(), RatingError> {
    let mut keys = KeyColumns::default();
    let mut states = Vec::with_capacity(merged.len());
    let mut counts = Vec::with_capacity(merged.len());
    let mut max_seqs = Vec::with_capacity(merged.len());
    let mut segment_ends = Vec::with_capacity(merged.len());
    for (key, row) in merged {
        keys.push(key)?;
        states.push(json(&row.state)?);
        counts.push(row.event_count);
        max_seqs.push(row.max_seq);
        segment_ends.push(row.segment_end);
    }
    bind_keys!(sqlx::query(
        "UPDATE rating.aggregates a \
         SET state = u.state, event_count = u.event_count, max_seq = u.max_seq, segment_end = u.segment_end \
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[], \
                     $7::jsonb[], $8::bigint[], $9::bigint[], $10::timestamptz[]) \
           AS u (subscription_id, period_start, segment_start, plan_version_id, charge_code, group_key, \
                 state, event_count, max_seq, segment_end) \
         WHERE a.subscription_id = u.subscription_id AND a.period_start = u.period_start \
           AND a.segment_start = u.segment_start AND a.plan_version_id = u.plan_version_id \
           AND a.charge_code = u.charge_code AND a.group_key = u.group_key",
    ), keys)
    .bind(&states)
    .bind(&counts)
    .bind(&max_seqs)
    .bind(&segment_ends)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Inserts the rows of keys that had none. A conflict means another
/// transaction wrote a row of this customer without its lock: a bug, refused
/// rather than merged blindly.
async fn insert_missing(
    connection: &mut PgConnection,
    missing: &[(&AggregateKey, &RunningAggregate)],
) -> Result<(), RatingError> {
    let mut keys = KeyColumns::default();
    let mut period_ends = Vec::with_capacity(missing.len());
    let mut segment_ends = Vec::with_capacity(missing.len());
    let mut states = Vec::with_capacity(missing.len());
    let mut counts = Vec::with_capacity(missing.len());
    let mut max_seqs = Vec::with_capacity(missing.len());
    for (key, row) in missing {
        keys.push(key)?;
        period_ends.push(row.period_end);
        segment_ends.push(row.segment_end);
        states.push(json(&row.state)?);
        counts.push(row.event_count);
        max_seqs.push(row.max_seq);
    }
    let inserted = bind_keys!(sqlx::query(
        "INSERT INTO rating.aggregates (subscription_id, period_start, segment_start, plan_version_id, \
           charge_code, group_key, period_end, segment_end, state, event_count, max_seq) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], \
           $6::jsonb[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[], $10::bigint[], $11::bigint[]) \
         ON CONFLICT DO NOTHING",
    ), keys)
    .bind(&period_ends)
    .bind(&segment_ends)
    .bind(&states)
    .bind(&counts)
    .bind(&max_seqs)
    .execute(connection)
    .await?;
    if inserted.rows_affected() != missing.len() as u64 {
        return Err(RatingError::Corrupt(format!(
            "{} of {} new aggregate rows already existed: written without the customer lock",
            missing.len() as u64 - inserted.rows_affected(),
            missing.len()
        )));
    }
    Ok(())
}
