//! Usage consumption: turns `UsageAccepted` events into running aggregates per
//! (subscription, billing period, plan-version segment, charge, group),
//! exactly once, or keeps them as unrated usage with the reason.
//!
//! [`UsageRater::rate`] is the one rating path: the `usage-accepted` consumer
//! ([`consumer::UsageConsumer`]) calls it for each batch, and the subscription
//! replica calls it again for a customer's unrated events when a snapshot
//! arrives (a backdated subscription makes them ratable). It runs inside the
//! caller's transaction:
//!
//! 0. the batch's customers are locked (advisory, in order) so the replica
//!    cannot apply a snapshot of one of them halfway through;
//! 1. repeats of an event within the batch are skipped;
//! 2. each event is classified without writing: the phases covering
//!    its timestamp, their plan versions' usage charges on the event type, the
//!    billing period and segment, the meter's reading and group key — or the
//!    reason it cannot be rated (an unratable event whose key is already in
//!    `rating.rated_events` is a redelivery of a rated one, and is skipped);
//! 3. ratable events insert their key (`ON CONFLICT DO NOTHING RETURNING`:
//!    a key rated before, by a redelivery or a concurrent consumer, is not
//!    returned) and only the inserted ones are absorbed; their unrated rows,
//!    if any, are deleted;
//! 4. the aggregate rows they feed are locked and each event is absorbed in
//!    turn ([`absorb`]): an event that would take a row or its line out of
//!    range (an inexact or overflowing sum, a quantity or amount beyond
//!    `tally_domain::bounds`) loses its rated key again and joins the unrated
//!    events (`OUT_OF_RANGE`) — never an error, so never a dead letter; the
//!    rows are written back in two set-based statements (`store::aggregates::write`),
//!    and the transactions of percentage charges are kept in `rating.transactions`;
//! 5. unratable events are upserted into `rating.unrated_events`.

mod absorb;
mod classify;
pub mod consumer;
mod decode;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use sqlx::PgConnection;
use tally_domain::meter::{AggregateState, GroupKey};
use tally_domain::pricing::Transaction;
use tally_proto::rating::UnratedReason;
use tally_runtime::SharedClock;

use crate::cache::CatalogCache;
use crate::error::RatingError;

pub use decode::{AcceptedEvent, DecodeError, accepted_event, decode_accepted};

/// The identity of one aggregate row (its primary key), ordered the way rows
/// are locked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AggregateKey {
    /// `sub_…`.
    pub subscription_id: String,
    /// Start of the billing period.
    pub period_start: DateTime<Utc>,
    /// Start of the segment (the part of the period one phase covers).
    pub segment_start: DateTime<Utc>,
    /// `pv_…` of the segment.
    pub plan_version_id: String,
    /// The charge.
    pub charge_code: String,
    /// The group (`{}` without group-by).
    pub group_key: GroupKey,
}

/// What a set of events adds to one aggregate row.
#[derive(Clone, Debug)]
pub struct AggregateDelta {
    /// End of the billing period.
    pub period_end: DateTime<Utc>,
    /// End of the segment.
    pub segment_end: DateTime<Utc>,
    /// The absorbed readings.
    pub state: AggregateState,
    /// Events absorbed.
    pub event_count: i64,
    /// Highest ingest sequence number absorbed.
    pub max_seq: i64,
}

/// Why an event was not rated, as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrated {
    /// The contract's reason.
    pub reason: UnratedReason,
    /// Details for an operator (the missing property, the unknown version…).
    pub detail: String,
}

/// What [`UsageRater::rate`] did with a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateSummary {
    /// Events absorbed into aggregates by this call.
    pub rated: usize,
    /// Events skipped because they were already rated.
    pub duplicates: usize,
    /// Events kept as unrated.
    pub unrated: usize,
}

/// The rating path shared by the usage consumer and the subscription replica.
#[derive(Debug, Clone)]
pub struct UsageRater {
    cache: CatalogCache,
    clock: SharedClock,
    /// `tally.rating.events`, built once.
    events: Counter<u64>,
}

impl UsageRater {
    /// A rater reading the catalog through `cache`.
    pub fn new(cache: CatalogCache, clock: SharedClock) -> Self {
        let events = tally_runtime::telemetry::meter()
            .u64_counter("tally.rating.events")
            .with_description(
                "Accepted events handled by rating, by outcome (rated, duplicate, unrated)",
            )
            .build();
        Self {
            cache,
            clock,
            events,
        }
    }

    /// Counts what a committed [`UsageRater::rate`] did (call it after the
    /// commit: a rolled-back batch is handled again and must not count twice).
    pub fn record(&self, summary: &RateSummary) {
        for (outcome, count) in [
            ("rated", summary.rated),
            ("duplicate", summary.duplicates),
            ("unrated", summary.unrated),
        ] {
            if count > 0 {
                self.events.add(
                    u64::try_from(count).unwrap_or(u64::MAX),
                    &[KeyValue::new("outcome", outcome)],
                );
            }
        }
    }

    /// The catalog cache.
    pub fn cache(&self) -> &CatalogCache {
        &self.cache
    }

    /// Rates `events` inside `transaction` (see the module documentation).
    /// Fails only when the database does or a stored row cannot be read;
    /// bad events become unrated rows, never errors.
    pub async fn rate(
        &self,
        transaction: &mut PgConnection,
        events: &[AcceptedEvent],
    ) -> Result<RateSummary, RatingError> {
        let customers: BTreeSet<&str> = events
            .iter()
            .map(|event| event.customer_id.as_str())
            .collect();
        store::lock_customers(&mut *transaction, &customers).await?;
        let (pending, mut duplicates) = once_each(events);
        let coverage = store::coverage(&mut *transaction, &customers).await?;
        let mut ratable = Vec::new();
        let mut unrated = Vec::new();
        for event in pending {
            match classify::classify(&self.cache, &coverage, event).await? {
                Ok(contributions) => ratable.push((event, contributions)),
                Err(reason) => unrated.push((event, reason)),
            }
        }
        // A redelivered event that was rated earlier but is unratable now (a
        // pause, an end) stays rated: it must not become unrated usage.
        // Ratable ones need no such check: `insert_rated` below only returns
        // the keys not rated yet.
        if !unrated.is_empty() {
            let candidates: Vec<AcceptedEvent> =
                unrated.iter().map(|(event, _)| (*event).clone()).collect();
            let already = store::rated_keys(&mut *transaction, &candidates).await?;
            let before = unrated.len();
            unrated.retain(|(event, _)| {
                !already.contains(&(event.customer_id.clone(), event.event_id.clone()))
            });
            duplicates += before - unrated.len();
        }
        let fresh =
            store::insert_rated(&mut *transaction, ratable.iter().map(|(event, _)| *event)).await?;
        let mut candidates = Vec::with_capacity(fresh.len());
        for (event, contributions) in ratable {
            if fresh.contains(&(event.customer_id.clone(), event.event_id.clone())) {
                candidates.push((event, contributions));
            } else {
                // Rated by a concurrent transaction since `rated_keys` was read.
                duplicates += 1;
            }
        }
        let batch = absorb::absorb(&mut *transaction, &self.cache, &candidates).await?;
        if !batch.out_of_range.is_empty() {
            // Kept as unrated instead: their rated keys go, in this transaction.
            let refused: Vec<&AcceptedEvent> =
                batch.out_of_range.iter().map(|(event, _)| *event).collect();
            store::forget_rated(&mut *transaction, &refused).await?;
            for (event, reason) in &batch.out_of_range {
                tracing::warn!(
                    customer = %event.customer_id, event = %event.event_id, detail = %reason.detail,
                    "usage event out of range: kept as unrated"
                );
            }
            unrated.extend(batch.out_of_range.iter().cloned());
        }
        let were_unrated: Vec<&AcceptedEvent> = batch
            .events
            .iter()
            .copied()
            .filter(|event| coverage.has_unrated(&event.customer_id))
            .collect();
        store::delete_unrated(&mut *transaction, &were_unrated).await?;
        store::aggregates::write(&mut *transaction, batch.changed_rows()).await?;
        store::insert_transactions(&mut *transaction, &batch.transactions).await?;
        let now = self.clock.now();
        for (event, reason) in &unrated {
            store::keep_unrated(&mut *transaction, event, reason, now).await?;
        }
        Ok(RateSummary {
            rated: batch.events.len(),
            duplicates,
            unrated: unrated.len(),
        })
    }
}

/// What a re-rate of one subscription gathers from the event log before it
/// writes: the subscription's fresh aggregates for the recomputed periods.
#[derive(Debug, Default)]
pub struct Reabsorbed {
    deltas: BTreeMap<AggregateKey, AggregateDelta>,
    transactions: Vec<(AggregateKey, Transaction)>,
    /// Rated events that no subscription covers any more (now unrated).
    pub no_longer_ratable: usize,
}

impl Reabsorbed {
    /// The billing periods the fresh aggregates belong to.
    pub fn periods(&self) -> BTreeSet<(DateTime<Utc>, DateTime<Utc>)> {
        self.deltas
            .iter()
            .map(|(key, delta)| (key.period_start, delta.period_end))
            .collect()
    }
}

impl UsageRater {
    /// Re-classifies `events` (read back from ingest's log) for a re-rate of
    /// `subscription_id`: of the events already rated, each contribution to
    /// that subscription in a period ending after `changed_from` is gathered
    /// into `into`. Events not rated yet are left to the usual path (they
    /// are unrated, or still on their way from the bus). A rated event that
    /// nothing covers any more becomes unrated usage, with its reason.
    pub async fn reabsorb(
        &self,
        transaction: &mut PgConnection,
        coverage: &store::Coverage,
        subscription_id: &str,
        changed_from: DateTime<Utc>,
        events: &[AcceptedEvent],
        into: &mut Reabsorbed,
    ) -> Result<(), RatingError> {
        let rated = store::rated_keys(&mut *transaction, events).await?;
        let mut orphans = Vec::new();
        for event in events {
            if !rated.contains(&(event.customer_id.clone(), event.event_id.clone())) {
                continue;
            }
            match classify::classify(&self.cache, coverage, event).await? {
                Ok(contributions) => {
                    for contribution in contributions {
                        if contribution.belongs_to(subscription_id, changed_from) {
                            classify::add(
                                &mut into.deltas,
                                &mut into.transactions,
                                contribution,
                                event.sequence_number,
                            )?;
                        }
                    }
                }
                Err(reason) => orphans.push((event, reason)),
            }
        }
        if !orphans.is_empty() {
            let events: Vec<&AcceptedEvent> = orphans.iter().map(|(event, _)| *event).collect();
            store::forget_rated(&mut *transaction, &events).await?;
            let now = self.clock.now();
            for (event, reason) in &orphans {
                store::keep_unrated(&mut *transaction, event, reason, now).await?;
            }
            into.no_longer_ratable += orphans.len();
        }
        Ok(())
    }

    /// Writes what [`UsageRater::reabsorb`] gathered (the caller deleted the
    /// recomputed periods' rows first).
    pub async fn write_reabsorbed(
        &self,
        transaction: &mut PgConnection,
        reabsorbed: &Reabsorbed,
    ) -> Result<(), RatingError> {
        store::aggregates::absorb_all(&mut *transaction, &reabsorbed.deltas).await?;
        store::insert_transactions(&mut *transaction, &reabsorbed.transactions).await?;
        Ok(())
    }
}

/// The events of `events`, each key once (a batch may carry an event twice);
/// and how many repeats were skipped.
fn once_each(events: &[AcceptedEvent]) -> (Vec<&AcceptedEvent>, usize) {
    let mut seen = BTreeSet::new();
    let mut pending = Vec::with_capacity(events.len());
    let mut skipped = 0;
    for event in events {
        if seen.insert((event.customer_id.as_str(), event.event_id.as_str())) {
            pending.push(event);
        } else {
            skipped += 1;
        }
    }
    (pending, skipped)
}
