//! The set-based write of a batch's aggregate deltas into `rating.aggregates`:
//! three statements per batch whatever its number of rows.
//!
//! 1. insert every delta as a new row (`ON CONFLICT DO NOTHING RETURNING`):
//!    a returned key is done, its delta is the whole state;
//! 2. lock the existing rows of the other keys (`FOR UPDATE`), merge each
//!    delta into its stored state in Rust (the domain `AggregateState::merge`);
//! 3. write the merged rows back in one `UPDATE … FROM unnest(…)`.
//!
//! Rows of one subscription are only ever written by transactions holding its
//! customer's advisory lock (`store::lock_customers`), so these statements
//! cannot deadlock whatever order PostgreSQL takes their row locks in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_domain::meter::{AggregateState, GroupKey};

use super::{AggregateDelta, AggregateKey};
use crate::error::RatingError;

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
    state: Json<AggregateState>,
    event_count: i64,
    max_seq: i64,
}

/// A row key as the database returns it.
type ReturnedKey = (
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    Json<GroupKey>,
);

fn key_of(
    (subscription_id, period_start, segment_start, plan_version_id, charge_code, group): ReturnedKey,
) -> AggregateKey {
    AggregateKey {
        subscription_id,
        period_start,
        segment_start,
        plan_version_id,
        charge_code,
        group_key: group.0,
    }
}

/// Adds every delta to its aggregate row (see the module documentation).
pub async fn absorb_all(
    connection: &mut PgConnection,
    deltas: &BTreeMap<AggregateKey, AggregateDelta>,
) -> Result<(), RatingError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let inserted = insert_new(&mut *connection, deltas).await?;
    let existing: BTreeMap<&AggregateKey, &AggregateDelta> = deltas
        .iter()
        .filter(|(key, _)| !inserted.contains(*key))
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let mut keys = KeyColumns::default();
    for key in existing.keys() {
        keys.push(key)?;
    }
    let stored: Vec<StoredRow> = bind_keys!(sqlx::query_as(
            "SELECT a.subscription_id, a.period_start, a.segment_start, a.plan_version_id, \
               a.charge_code, a.group_key, a.state, a.event_count, a.max_seq \
             FROM rating.aggregates a \
             JOIN unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[]) \
               AS k (subscription_id, period_start, segment_start, plan_version_id, charge_code, group_key) \
               ON a.subscription_id = k.subscription_id AND a.period_start = k.period_start \
              AND a.segment_start = k.segment_start AND a.plan_version_id = k.plan_version_id \
              AND a.charge_code = k.charge_code AND a.group_key = k.group_key \
             FOR UPDATE OF a",
        ), keys)
        .fetch_all(&mut *connection)
        .await?;
    if stored.len() != existing.len() {
        return Err(RatingError::Corrupt(format!(
            "{} aggregate rows conflicted on insert but {} were found",
            existing.len(),
            stored.len()
        )));
    }
    let mut keys = KeyColumns::default();
    let mut states = Vec::with_capacity(stored.len());
    let mut counts = Vec::with_capacity(stored.len());
    let mut max_seqs = Vec::with_capacity(stored.len());
    let mut segment_ends = Vec::with_capacity(stored.len());
    let mut merged_keys = Vec::with_capacity(stored.len());
    for row in stored {
        let key = AggregateKey {
            subscription_id: row.subscription_id,
            period_start: row.period_start,
            segment_start: row.segment_start,
            plan_version_id: row.plan_version_id,
            charge_code: row.charge_code,
            group_key: row.group_key.0,
        };
        let Json(mut state) = row.state;
        let (count, max_seq) = (row.event_count, row.max_seq);
        let delta = existing
            .get(&key)
            .ok_or_else(|| RatingError::Corrupt(format!("aggregate {key:?} was not asked for")))?;
        state.merge(&delta.state).map_err(|error| {
            RatingError::Corrupt(format!(
                "aggregate {} {} {}: {error}",
                key.subscription_id, key.charge_code, key.period_start
            ))
        })?;
        states.push(json(&state)?);
        counts.push(count + delta.event_count);
        max_seqs.push(max_seq.max(delta.max_seq));
        segment_ends.push(delta.segment_end);
        merged_keys.push(key);
    }
    for key in &merged_keys {
        keys.push(key)?;
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

/// Inserts every delta whose row does not exist yet; returns their keys.
async fn insert_new(
    connection: &mut PgConnection,
    deltas: &BTreeMap<AggregateKey, AggregateDelta>,
) -> Result<BTreeSet<AggregateKey>, RatingError> {
    let mut keys = KeyColumns::default();
    let mut period_ends = Vec::with_capacity(deltas.len());
    let mut segment_ends = Vec::with_capacity(deltas.len());
    let mut states = Vec::with_capacity(deltas.len());
    let mut counts = Vec::with_capacity(deltas.len());
    let mut max_seqs = Vec::with_capacity(deltas.len());
    for (key, delta) in deltas {
        keys.push(key)?;
        period_ends.push(delta.period_end);
        segment_ends.push(delta.segment_end);
        states.push(json(&delta.state)?);
        counts.push(delta.event_count);
        max_seqs.push(delta.max_seq);
    }
    let returned: Vec<ReturnedKey> = bind_keys!(sqlx::query_as(
        "INSERT INTO rating.aggregates (subscription_id, period_start, segment_start, plan_version_id, \
           charge_code, group_key, period_end, segment_end, state, event_count, max_seq) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], \
           $6::jsonb[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[], $10::bigint[], $11::bigint[]) \
         ON CONFLICT DO NOTHING \
         RETURNING subscription_id, period_start, segment_start, plan_version_id, charge_code, group_key",
    ), keys)
    .bind(&period_ends)
    .bind(&segment_ends)
    .bind(&states)
    .bind(&counts)
    .bind(&max_seqs)
    .fetch_all(connection)
    .await?;
    Ok(returned.into_iter().map(key_of).collect())
}
