//! SQL of usage rating (tables: `migrations/…_rating_usage.sql`).

pub(super) mod aggregates;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tally_domain::period::Period;
use tally_domain::pricing::Transaction;

use super::{AcceptedEvent, AggregateKey, Unrated};

/// One phase of a subscription as the replica stores it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PhaseRow {
    /// `sub_…`.
    pub subscription_id: String,
    /// `pv_…` in force during the phase.
    pub plan_version_id: String,
    /// The subscription's billing anchor.
    pub billing_anchor_at: DateTime<Utc>,
    /// Start (inclusive).
    pub start_at: DateTime<Utc>,
    /// End (exclusive); `None` while open-ended.
    pub end_at: Option<DateTime<Utc>>,
    /// The subscription's pause windows: from, and until (`None`: indefinite).
    pub pauses: Json<Vec<PauseWindow>>,
}

/// A pause window: from, and until (`None`: indefinite).
pub type PauseWindow = (DateTime<Utc>, Option<DateTime<Utc>>);

/// The columns of [`PhaseRow`], for `SELECT … FROM rating.subscription_phases p JOIN
/// rating.subscriptions s USING (subscription_id)`.
pub const PHASE_COLUMNS: &str =
    "subscription_id, p.plan_version_id, p.billing_anchor_at, p.start_at, p.end_at, s.pauses";

impl PhaseRow {
    /// Whether the phase is in force at `instant`.
    pub fn covers(&self, instant: DateTime<Utc>) -> bool {
        self.start_at <= instant && self.end_at.is_none_or(|end| instant < end)
    }

    /// Whether the subscription is paused at `instant` (usage then is not billed).
    pub fn paused_at(&self, instant: DateTime<Utc>) -> bool {
        self.pauses.0.iter().any(|(pause_at, resume_at)| {
            *pause_at <= instant && resume_at.is_none_or(|resume_at| instant < resume_at)
        })
    }

    /// The part of `period` this phase covers, if any.
    pub fn segment(&self, period: &Period) -> Option<Period> {
        let start = period.start().max(self.start_at);
        let end = self
            .end_at
            .map_or(period.end(), |end| end.min(period.end()));
        Period::new(start, end).ok()
    }
}

/// What the replica knows about a set of customers.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    known: BTreeSet<String>,
    /// Customers with unrated events (only their rated events can have an
    /// unrated row to delete).
    with_unrated: BTreeSet<String>,
    phases: BTreeMap<String, Vec<PhaseRow>>,
}

impl Coverage {
    /// Whether rating has seen a subscription of `customer`.
    pub fn is_known(&self, customer: &str) -> bool {
        self.known.contains(customer)
    }

    /// Whether `customer` has unrated events.
    pub fn has_unrated(&self, customer: &str) -> bool {
        self.with_unrated.contains(customer)
    }

    /// The customer's phases, by start.
    pub fn phases(&self, customer: &str) -> impl Iterator<Item = &PhaseRow> {
        self.phases.get(customer).into_iter().flatten()
    }
}

/// The first key of rating's customer advisory locks (`pg_advisory_xact_lock(int, int)`;
/// the second is `hashtext(customer)`), so they cannot collide with other users of
/// advisory locks.
const CUSTOMER_LOCK_SPACE: i32 = 0x5261_7465; // "Rate"

/// Serialises rating work per customer until the transaction ends: the usage
/// consumer and the replica both take it before reading a customer's phases,
/// so an event classified as unratable cannot be stored after a concurrent
/// snapshot already retried that customer's unrated events (it would stay
/// unrated until the next snapshot). Locks are taken in customer order, so
/// batches cannot deadlock; a hash collision only serialises more.
pub async fn lock_customers(
    connection: &mut PgConnection,
    customers: &BTreeSet<&str>,
) -> Result<(), sqlx::Error> {
    if customers.is_empty() {
        return Ok(());
    }
    let customers: Vec<&str> = customers.iter().copied().collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, hashtext(customer)) \
         FROM (SELECT customer FROM unnest($2::text[]) AS c (customer) ORDER BY customer) AS ordered",
    )
    .bind(CUSTOMER_LOCK_SPACE)
    .bind(&customers)
    .execute(connection)
    .await?;
    Ok(())
}

/// The subscriptions and phases of `customers`.
pub async fn coverage(
    connection: &mut PgConnection,
    customers: &BTreeSet<&str>,
) -> Result<Coverage, sqlx::Error> {
    if customers.is_empty() {
        return Ok(Coverage::default());
    }
    let customers: Vec<&str> = customers.iter().copied().collect();
    let customer_flags: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.customer_id, \
           EXISTS (SELECT 1 FROM rating.subscriptions s WHERE s.customer_id = c.customer_id), \
           EXISTS (SELECT 1 FROM rating.unrated_events u WHERE u.customer_id = c.customer_id) \
         FROM unnest($1::text[]) AS c (customer_id)",
    )
    .bind(&customers)
    .fetch_all(&mut *connection)
    .await?;
    let rows: Vec<CustomerPhase> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.customer_id, {PHASE_COLUMNS} \
         FROM rating.subscription_phases p JOIN rating.subscriptions s USING (subscription_id) \
         WHERE p.customer_id = ANY($1) \
         ORDER BY p.customer_id, p.start_at, subscription_id"
    )))
    .bind(&customers)
    .fetch_all(&mut *connection)
    .await?;
    let mut phases: BTreeMap<String, Vec<PhaseRow>> = BTreeMap::new();
    for row in rows {
        phases.entry(row.customer_id).or_default().push(row.phase);
    }
    Ok(Coverage {
        known: customer_flags
            .iter()
            .filter(|(_, known, _)| *known)
            .map(|(customer, _, _)| customer.clone())
            .collect(),
        with_unrated: customer_flags
            .iter()
            .filter(|(_, _, unrated)| *unrated)
            .map(|(customer, _, _)| customer.clone())
            .collect(),
        phases,
    })
}

/// A phase with its customer.
#[derive(sqlx::FromRow)]
struct CustomerPhase {
    customer_id: String,
    #[sqlx(flatten)]
    phase: PhaseRow,
}

/// The keys among `events` already rated.
pub async fn rated_keys(
    connection: &mut PgConnection,
    events: &[AcceptedEvent],
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let (customers, ids) = key_columns(events.iter());
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.customer_id, r.event_id FROM rating.rated_events r \
         JOIN unnest($1::text[], $2::text[]) AS k (customer_id, event_id) \
           ON r.customer_id = k.customer_id AND r.event_id = k.event_id",
    )
    .bind(&customers)
    .bind(&ids)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The (customer, event id) keys of `events` as two columns for `unnest`.
fn key_columns<'a>(
    events: impl Iterator<Item = &'a AcceptedEvent>,
) -> (Vec<&'a str>, Vec<&'a str>) {
    events
        .map(|event| (event.customer_id.as_str(), event.event_id.as_str()))
        .unzip()
}

/// Records `events` as rated, in key order; returns the keys this call
/// inserted (a key another transaction committed first is not returned).
pub async fn insert_rated(
    connection: &mut PgConnection,
    events: impl Iterator<Item = &AcceptedEvent>,
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let mut keys: Vec<(&str, &str, i64)> = events
        .map(|event| {
            (
                event.customer_id.as_str(),
                event.event_id.as_str(),
                event.sequence_number,
            )
        })
        .collect();
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    keys.sort_unstable();
    let customers: Vec<&str> = keys.iter().map(|key| key.0).collect();
    let ids: Vec<&str> = keys.iter().map(|key| key.1).collect();
    let seqs: Vec<i64> = keys.iter().map(|key| key.2).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO rating.rated_events (customer_id, event_id, seq) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
         ON CONFLICT DO NOTHING RETURNING customer_id, event_id",
    )
    .bind(&customers)
    .bind(&ids)
    .bind(&seqs)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Removes the unrated rows of events that were just rated.
pub async fn delete_unrated(
    connection: &mut PgConnection,
    events: &[&AcceptedEvent],
) -> Result<(), sqlx::Error> {
    delete_keys(connection, KeyedTable::Unrated, events).await
}

/// Removes the rated keys of `events` (a re-rate found nothing covers them
/// any more; they are kept as unrated instead).
pub async fn forget_rated(
    connection: &mut PgConnection,
    events: &[&AcceptedEvent],
) -> Result<(), sqlx::Error> {
    delete_keys(connection, KeyedTable::Rated, events).await
}

/// The tables keyed by (customer, event id).
enum KeyedTable {
    Rated,
    Unrated,
}

async fn delete_keys(
    connection: &mut PgConnection,
    table: KeyedTable,
    events: &[&AcceptedEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let table = match table {
        KeyedTable::Rated => "rating.rated_events",
        KeyedTable::Unrated => "rating.unrated_events",
    };
    let (customers, ids) = key_columns(events.iter().copied());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} t USING unnest($1::text[], $2::text[]) AS k (customer_id, event_id) \
         WHERE t.customer_id = k.customer_id AND t.event_id = k.event_id"
    )))
    .bind(&customers)
    .bind(&ids)
    .execute(connection)
    .await?;
    Ok(())
}

/// Deletes `subscription_id`'s aggregates (and percentage transactions) of
/// every period ending after `instant`; returns those periods.
pub async fn delete_periods_after(
    connection: &mut PgConnection,
    subscription_id: &str,
    instant: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let periods: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "WITH deleted AS (DELETE FROM rating.aggregates \
           WHERE subscription_id = $1 AND period_end > $2 RETURNING period_start, period_end) \
         SELECT DISTINCT period_start, period_end FROM deleted ORDER BY period_start",
    )
    .bind(subscription_id)
    .bind(instant)
    .fetch_all(&mut *connection)
    .await?;
    let starts: Vec<DateTime<Utc>> = periods.iter().map(|(start, _)| *start).collect();
    sqlx::query(
        "DELETE FROM rating.transactions WHERE subscription_id = $1 AND period_start = ANY($2)",
    )
    .bind(subscription_id)
    .bind(&starts)
    .execute(connection)
    .await?;
    Ok(periods)
}

/// Keeps the transactions of percentage charges (idempotent by key and event).
pub async fn insert_transactions(
    connection: &mut PgConnection,
    transactions: &[(AggregateKey, Transaction)],
) -> Result<(), sqlx::Error> {
    for (key, transaction) in transactions {
        sqlx::query(
            "INSERT INTO rating.transactions (subscription_id, period_start, segment_start, \
               plan_version_id, charge_code, group_key, event_id, occurred_at, amount) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&key.subscription_id)
        .bind(key.period_start)
        .bind(key.segment_start)
        .bind(&key.plan_version_id)
        .bind(&key.charge_code)
        .bind(Json(&key.group_key))
        .bind(transaction.event_id.as_str())
        .bind(transaction.timestamp)
        .bind(transaction.amount)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Keeps `event` as unrated (the first sighting's time stays; the reason is
/// the latest one).
pub async fn keep_unrated(
    connection: &mut PgConnection,
    event: &AcceptedEvent,
    unrated: &Unrated,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rating.unrated_events \
           (customer_id, event_id, seq, accepted, reason, detail, first_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (customer_id, event_id) DO UPDATE \
           SET reason = EXCLUDED.reason, detail = EXCLUDED.detail",
    )
    .bind(&event.customer_id)
    .bind(&event.event_id)
    .bind(event.sequence_number)
    .bind(&event.accepted)
    .bind(unrated.reason as i16)
    .bind(&unrated.detail)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// One page of `customer`'s unrated events after `after` (sequence number,
/// event id), in that order: their keys and stored `UsageAccepted` bytes.
pub async fn unrated_page(
    connection: &mut PgConnection,
    customer: &str,
    after: Option<&(i64, String)>,
    limit: i64,
) -> Result<Vec<(i64, String, Vec<u8>)>, sqlx::Error> {
    let (after_seq, after_event) = match after {
        Some((seq, event)) => (Some(*seq), event.as_str()),
        None => (None, ""),
    };
    sqlx::query_as(
        "SELECT seq, event_id, accepted FROM rating.unrated_events \
         WHERE customer_id = $1 AND ($2::bigint IS NULL OR (seq, event_id) > ($2, $3)) \
         ORDER BY seq, event_id LIMIT $4",
    )
    .bind(customer)
    .bind(after_seq)
    .bind(after_event)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// How many accepted events rating has applied (rated or unrated), all time.
pub async fn applied_event_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM rating.rated_events) + (SELECT count(*) FROM rating.unrated_events)",
    )
    .fetch_one(pool)
    .await
}

/// `(reason code, events)` of the unrated events held now, per reason held.
pub async fn unrated_counts_by_reason(pool: &PgPool) -> Result<Vec<(i16, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT reason, count(*) FROM rating.unrated_events GROUP BY reason")
        .fetch_all(pool)
        .await
}

/// `(subscription, customer)` of those of `subscription_ids` rating has.
pub async fn subscription_customers(
    pool: &PgPool,
    subscription_ids: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT subscription_id, customer_id FROM rating.subscriptions WHERE subscription_id = ANY($1)",
    )
    .bind(subscription_ids)
    .fetch_all(pool)
    .await
}

/// The subscriptions of `customer_id` (only `subscription_id` when not
/// empty), by id.
pub async fn customer_subscription_ids(
    pool: &PgPool,
    customer_id: &str,
    subscription_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT subscription_id FROM rating.subscriptions \
         WHERE customer_id = $1 AND ($2 = '' OR subscription_id = $2) ORDER BY subscription_id",
    )
    .bind(customer_id)
    .bind(subscription_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// An unrated event as listed.
#[derive(Debug, sqlx::FromRow)]
pub struct UnratedRow {
    pub customer_id: String,
    pub event_id: String,
    pub seq: i64,
    /// The encoded `UsageAccepted`.
    pub accepted: Vec<u8>,
    pub reason: i16,
    pub detail: String,
    pub first_seen_at: DateTime<Utc>,
}

/// Which unrated events a listing shows: of `customer_id` (all when empty)
/// for `reason` (all when 0).
const UNRATED_FILTER: &str = "($1 = '' OR customer_id = $1) AND ($2 = 0 OR reason = $2)";

/// Up to `limit` unrated events of the filter after `(first_seen_at,
/// customer, event)` `after` (from the start when its time is `None`).
pub async fn unrated_events_page(
    pool: &PgPool,
    customer_id: &str,
    reason: i16,
    after: (Option<DateTime<Utc>>, &str, &str),
    limit: i64,
) -> Result<Vec<UnratedRow>, sqlx::Error> {
    let (after_time, after_customer, after_event) = after;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT customer_id, event_id, seq, accepted, reason, detail, first_seen_at \
         FROM rating.unrated_events WHERE {UNRATED_FILTER} \
           AND ($3::timestamptz IS NULL OR (first_seen_at, customer_id, event_id) > ($3, $4, $5)) \
         ORDER BY first_seen_at, customer_id, event_id LIMIT $6"
    )))
    .bind(customer_id)
    .bind(reason)
    .bind(after_time)
    .bind(after_customer)
    .bind(after_event)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many unrated events the filter holds.
pub async fn unrated_event_count(
    pool: &PgPool,
    customer_id: &str,
    reason: i16,
) -> Result<i64, sqlx::Error> {
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM rating.unrated_events WHERE {UNRATED_FILTER}"
    )))
    .bind(customer_id)
    .bind(reason)
    .fetch_one(pool)
    .await?;
    Ok(total)
}

/// Those of `event_ids` of `customer_id` that are rated.
pub async fn rated_event_ids(
    pool: &PgPool,
    customer_id: &str,
    event_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT event_id FROM rating.rated_events \
         WHERE customer_id = $1 AND event_id = ANY($2)",
    )
    .bind(customer_id)
    .bind(event_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(event_id,)| event_id).collect())
}

/// `(event, reason code, detail)` of those of `event_ids` of `customer_id`
/// that are held unrated.
pub async fn unrated_statuses(
    pool: &PgPool,
    customer_id: &str,
    event_ids: &[String],
) -> Result<Vec<(String, i16, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, reason, detail FROM rating.unrated_events \
         WHERE customer_id = $1 AND event_id = ANY($2)",
    )
    .bind(customer_id)
    .bind(event_ids)
    .fetch_all(pool)
    .await
}
