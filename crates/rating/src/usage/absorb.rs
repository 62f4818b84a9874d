//! Absorbing a batch's newly rated events into the running aggregates, one
//! event at a time, so that an event that would take an aggregate or its line
//! out of range is kept as unrated usage (`OUT_OF_RANGE`, with the reason)
//! instead of failing the batch — which would retry it until the bus
//! dead-letters it, and it would be neither rated nor unrated.
//!
//! An event is absorbed only if, for every aggregate row it feeds:
//!
//! 1. the merge is exact (the domain's exact sums: a count or sum that would
//!    overflow or be rounded is refused);
//! 2. the row's quantity stays within `tally_domain::bounds::MAX_AGGREGATE`;
//! 3. the row's line still prices — exactly, through the same
//!    `ChargePrice::price_net` as `GetUsageCharges` — to at most
//!    `bounds::MAX_LINE_AMOUNT` (a percentage charge: the event's own
//!    transaction prices, and the volume stays within the line bound).
//!
//! So every stored aggregate prices, and `GetUsageCharges` cannot fail on
//! usage. Checks 2 and 3 need the merged state, which for unique counts and
//! gauges means copying it; the batch therefore first merges every event in
//! place (check 1 is cheap and needs no copy) and checks each row's line once
//! at the end. Only if a line is then out of range is the batch absorbed again
//! from the stored rows (read again: nothing was written), checking every
//! event's lines, to find the events at fault — rare, and never wrong: both
//! passes absorb in the same order.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::bounds;
use tally_domain::ids::ChargeCode;
use tally_domain::meter::AggregateState;
use tally_domain::period::Period;
use tally_domain::pricing::{PriceModel, Transaction, Usage};
use tally_proto::rating::UnratedReason;

use super::classify::Contribution;
use super::store::aggregates::{self, RunningAggregate};
use super::{AcceptedEvent, AggregateKey, Unrated};
use crate::cache::CatalogCache;
use crate::error::RatingError;

/// An event classified as ratable, with the rows it feeds.
pub type Candidate<'a> = (&'a AcceptedEvent, Vec<Contribution>);

/// What absorbing a batch gave.
#[derive(Debug, Default)]
pub struct Absorbed<'a> {
    /// The running rows: the stored rows locked for the batch, with what it added.
    pub rows: BTreeMap<AggregateKey, RunningAggregate>,
    /// The rows the batch changed (only these are written).
    pub touched: BTreeSet<AggregateKey>,
    /// The events absorbed.
    pub events: Vec<&'a AcceptedEvent>,
    /// The transactions of percentage charges of the absorbed events.
    pub transactions: Vec<(AggregateKey, Transaction)>,
    /// The events refused, and why.
    pub out_of_range: Vec<(&'a AcceptedEvent, Unrated)>,
}

impl Absorbed<'_> {
    /// The rows to write.
    pub fn changed_rows(&self) -> impl Iterator<Item = (&AggregateKey, &RunningAggregate)> {
        self.rows
            .iter()
            .filter(|(key, _)| self.touched.contains(*key))
    }
}

/// Locks the rows `candidates` feed and absorbs the events into them, in
/// order (see the module documentation).
pub async fn absorb<'a>(
    connection: &mut PgConnection,
    cache: &CatalogCache,
    candidates: &[Candidate<'a>],
) -> Result<Absorbed<'a>, RatingError> {
    let keys: BTreeSet<&AggregateKey> = candidates
        .iter()
        .flat_map(|(_, contributions)| contributions.iter().map(|part| &part.key))
        .collect();
    let mut fast = Absorbed {
        rows: aggregates::lock(&mut *connection, keys.iter().copied()).await?,
        ..Absorbed::default()
    };
    for (event, contributions) in candidates {
        fast.add_merging(event, contributions)?;
    }
    if fast.in_range(cache).await? {
        return Ok(fast);
    }
    // Nothing was written: the locked rows read again are the rows as stored.
    let mut checked = Absorbed {
        rows: aggregates::lock(&mut *connection, keys.iter().copied()).await?,
        ..Absorbed::default()
    };
    for (event, contributions) in candidates {
        checked.add_checking(cache, event, contributions).await?;
    }
    Ok(checked)
}

impl<'a> Absorbed<'a> {
    /// Whether every changed row and every transaction passes checks 2 and 3.
    async fn in_range(&self, cache: &CatalogCache) -> Result<bool, RatingError> {
        for key in &self.touched {
            let Some(row) = self.rows.get(key) else {
                continue;
            };
            let checked = check_line(cache, key, row.segment_end, &row.state, None).await?;
            if checked.is_err() {
                return Ok(false);
            }
        }
        for (key, transaction) in &self.transactions {
            let Some(row) = self.rows.get(key) else {
                continue;
            };
            let checked =
                check_line(cache, key, row.segment_end, &row.state, Some(transaction)).await?;
            if checked.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Adds `event` if every merge it needs is exact (check 1), merging in place.
    fn add_merging(
        &mut self,
        event: &'a AcceptedEvent,
        contributions: &[Contribution],
    ) -> Result<(), RatingError> {
        for contribution in contributions {
            if let Some(row) = self.rows.get(&contribution.key)
                && let Err(error) = row.state.check_merge(&contribution.state)
            {
                let before = row.state.clone();
                self.refuse(event, contribution, &before, &error.to_string());
                return Ok(());
            }
        }
        for contribution in contributions {
            match self.rows.get_mut(&contribution.key) {
                Some(row) => merge(&mut row.state, contribution)?,
                None => {
                    let row = new_row(contribution, contribution.state.clone());
                    self.rows.insert(contribution.key.clone(), row);
                }
            }
            self.record(event, contribution);
        }
        self.events.push(event);
        Ok(())
    }

    /// Adds `event` if checks 1 to 3 pass for every row it feeds.
    async fn add_checking(
        &mut self,
        cache: &CatalogCache,
        event: &'a AcceptedEvent,
        contributions: &[Contribution],
    ) -> Result<(), RatingError> {
        let mut merged = Vec::with_capacity(contributions.len());
        for contribution in contributions {
            let before = self.rows.get(&contribution.key).map(|row| &row.state);
            let state = match before {
                Some(before) => {
                    if let Err(error) = before.check_merge(&contribution.state) {
                        let before = before.clone();
                        self.refuse(event, contribution, &before, &error.to_string());
                        return Ok(());
                    }
                    let mut state = before.clone();
                    merge(&mut state, contribution)?;
                    state
                }
                None => contribution.state.clone(),
            };
            let checked = check_line(
                cache,
                &contribution.key,
                contribution.segment_end,
                &state,
                contribution.transaction.as_ref(),
            )
            .await?;
            if let Err(reason) = checked {
                let before = self
                    .rows
                    .get(&contribution.key)
                    .map_or_else(|| empty_like(&contribution.state), |row| row.state.clone());
                self.refuse(event, contribution, &before, &reason);
                return Ok(());
            }
            merged.push(state);
        }
        for (contribution, state) in contributions.iter().zip(merged) {
            match self.rows.get_mut(&contribution.key) {
                Some(row) => row.state = state,
                None => {
                    self.rows
                        .insert(contribution.key.clone(), new_row(contribution, state));
                }
            }
            self.record(event, contribution);
        }
        self.events.push(event);
        Ok(())
    }

    /// Counts `event` in the row of `contribution` (which exists).
    fn record(&mut self, event: &AcceptedEvent, contribution: &Contribution) {
        if let Some(row) = self.rows.get_mut(&contribution.key) {
            row.event_count += 1;
            row.max_seq = row.max_seq.max(event.sequence_number);
            row.segment_end = contribution.segment_end;
        }
        self.touched.insert(contribution.key.clone());
        if let Some(transaction) = &contribution.transaction {
            self.transactions
                .push((contribution.key.clone(), transaction.clone()));
        }
    }

    fn refuse(
        &mut self,
        event: &'a AcceptedEvent,
        contribution: &Contribution,
        before: &AggregateState,
        reason: &str,
    ) {
        let key = &contribution.key;
        let detail = format!(
            "adding it to charge {} of {} (plan version {}, period from {}{}) would take \
             the aggregate ({}) out of range: {reason}",
            key.charge_code,
            key.subscription_id,
            key.plan_version_id,
            key.period_start.to_rfc3339(),
            if key.group_key.is_empty() {
                String::new()
            } else {
                format!(", group {{{}}}", key.group_key)
            },
            describe(before),
        );
        self.out_of_range.push((
            event,
            Unrated {
                reason: UnratedReason::OutOfRange,
                detail,
            },
        ));
    }
}

fn merge(state: &mut AggregateState, contribution: &Contribution) -> Result<(), RatingError> {
    state.merge(&contribution.state).map_err(|error| {
        RatingError::Corrupt(format!(
            "aggregate {} {} {}: {error}",
            contribution.key.subscription_id,
            contribution.key.charge_code,
            contribution.key.period_start
        ))
    })
}

fn new_row(contribution: &Contribution, state: AggregateState) -> RunningAggregate {
    RunningAggregate {
        period_end: contribution.period_end,
        segment_end: contribution.segment_end,
        state,
        event_count: 0,
        max_seq: 0,
        stored: false,
    }
}

/// The state of the same aggregation with nothing absorbed (what a row holds
/// before its first event), for messages.
fn empty_like(state: &AggregateState) -> AggregateState {
    match state {
        AggregateState::Count { .. } => AggregateState::Count { count: 0 },
        AggregateState::Sum { .. } => AggregateState::Sum { sum: Decimal::ZERO },
        AggregateState::Max { .. } => AggregateState::Max { max: None },
        AggregateState::Min { .. } => AggregateState::Min { min: None },
        AggregateState::UniqueCount { .. } => AggregateState::UniqueCount {
            keys: BTreeSet::new(),
        },
        AggregateState::Latest { .. } => AggregateState::Latest { latest: None },
        AggregateState::TimeWeightedSum { unit, .. } => AggregateState::TimeWeightedSum {
            unit: *unit,
            readings: Vec::new().into(),
        },
    }
}

/// A state in a few words, for the unrated event's detail.
fn describe(state: &AggregateState) -> String {
    match state {
        AggregateState::Count { count } => format!("count {count}"),
        AggregateState::Sum { sum } => format!("sum {sum}"),
        AggregateState::Max { max } => format!("max {}", max.unwrap_or_default()),
        AggregateState::Min { min } => format!("min {}", min.unwrap_or_default()),
        AggregateState::UniqueCount { keys } => format!("unique count {}", keys.len()),
        AggregateState::Latest { latest } => format!(
            "latest {}",
            latest
                .as_ref()
                .map(|latest| latest.value)
                .unwrap_or_default()
        ),
        AggregateState::TimeWeightedSum { readings, .. } => {
            format!(
                "time-weighted sum of {} readings",
                readings.as_slice().len()
            )
        }
    }
}

/// Checks 2 and 3 of the module documentation for `state` (with `transaction`,
/// the event's own, for a percentage charge): `Ok(Err(reason))` when out of
/// range.
async fn check_line(
    cache: &CatalogCache,
    key: &AggregateKey,
    segment_end: DateTime<Utc>,
    state: &AggregateState,
    transaction: Option<&Transaction>,
) -> Result<Result<(), String>, RatingError> {
    let segment = Period::new(key.segment_start, segment_end)
        .map_err(|error| RatingError::Corrupt(format!("aggregate {key:?}: {error}")))?;
    let quantity = match state.value(&segment) {
        Ok(quantity) => quantity,
        Err(error) => return Ok(Err(error.to_string())),
    };
    if let Err(error) = bounds::check_aggregate(quantity) {
        return Ok(Err(format!("its quantity {error}")));
    }
    let Some(entry) = cache.version(&key.plan_version_id).await? else {
        return Ok(Ok(()));
    };
    let Ok(code) = ChargeCode::parse(&key.charge_code) else {
        return Ok(Ok(()));
    };
    let Some(charge) = entry.published.plan.charge(&code) else {
        return Ok(Ok(()));
    };
    let priced = match charge.price.model() {
        PriceModel::Percentage(_) => {
            if let Err(error) = bounds::check_line_amount(quantity) {
                return Ok(Err(format!("its transaction volume {error}")));
            }
            match transaction {
                Some(transaction) => charge
                    .price
                    .price(Usage::Transactions(std::slice::from_ref(transaction))),
                None => return Ok(Ok(())),
            }
        }
        PriceModel::Matrix(_) => charge.price.price_net(Usage::Grouped(&BTreeMap::from([(
            key.group_key.clone(),
            quantity,
        )]))),
        PriceModel::PerUnit(_)
        | PriceModel::Package(_)
        | PriceModel::Graduated(_)
        | PriceModel::Volume(_)
        | PriceModel::Bulk(_)
        | PriceModel::Flat(_) => charge.price.price_net(Usage::Quantity(quantity)),
    };
    Ok(match priced {
        Ok(breakdown) => bounds::check_line_amount(breakdown.total())
            .map_err(|error| format!("its line amount {error}")),
        Err(error) => Err(format!("its line cannot be priced: {error}")),
    })
}
