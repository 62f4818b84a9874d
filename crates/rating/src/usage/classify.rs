//! Classification of one event: where it counts (the aggregate rows and the
//! reading each absorbs), or why it cannot be rated. Reads only the phases
//! already loaded and the immutable catalog; writes nothing.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::event::UsageEvent;
use tally_domain::meter::{AggregateState, GroupKey, Measure};
use tally_domain::period::BillingCycle;
use tally_domain::plan::PlanCharge;
use tally_domain::pricing::{PriceModel, PricingError, Transaction, Usage};
use tally_proto::rating::UnratedReason;

use super::store::{Coverage, PhaseRow};
use super::{AcceptedEvent, AggregateDelta, AggregateKey, Unrated};
use crate::cache::CatalogCache;
use crate::error::RatingError;

/// One aggregate row an event feeds, with the event's reading absorbed.
#[derive(Clone, Debug)]
pub struct Contribution {
    pub(super) key: AggregateKey,
    pub(super) period_end: DateTime<Utc>,
    pub(super) segment_end: DateTime<Utc>,
    pub(super) state: AggregateState,
    /// The event as a transaction, for percentage charges (priced per transaction).
    pub(super) transaction: Option<Transaction>,
}

impl Contribution {
    /// Whether this feeds `subscription_id` in a period ending after `instant`.
    pub fn belongs_to(&self, subscription_id: &str, instant: DateTime<Utc>) -> bool {
        self.key.subscription_id == subscription_id && self.period_end > instant
    }
}

fn unrated(reason: UnratedReason, detail: impl Into<String>) -> Result<Vec<Contribution>, Unrated> {
    Err(Unrated {
        reason,
        detail: detail.into(),
    })
}

/// Where `accepted` counts, or why it cannot be rated yet.
///
/// Every subscription of the customer whose phase covers the timestamp and
/// whose plan version has a usage charge on the event type gets the event
/// (a customer with two overlapping subscriptions charging the same meter is
/// billed on both; invoicing does not create such pairs today). An event the
/// meter's filters reject is rated with no contribution: it is accepted usage
/// that does not count.
pub async fn classify(
    cache: &CatalogCache,
    coverage: &Coverage,
    accepted: &AcceptedEvent,
) -> Result<Result<Vec<Contribution>, Unrated>, RatingError> {
    let event = match &accepted.event {
        Ok(event) => event,
        Err(detail) => return Ok(unrated(UnratedReason::InvalidProperty, detail.clone())),
    };
    let customer = accepted.customer_id.as_str();
    if !coverage.is_known(customer) {
        return Ok(unrated(
            UnratedReason::UnknownCustomer,
            format!("rating has seen no subscription of {customer}"),
        ));
    }
    let timestamp = event.timestamp();
    let covering: Vec<&PhaseRow> = coverage
        .phases(customer)
        .filter(|phase| phase.covers(timestamp))
        .collect();
    if covering.is_empty() {
        return Ok(unrated(
            UnratedReason::NoSubscription,
            format!(
                "no subscription of {customer} covers {}",
                timestamp.to_rfc3339()
            ),
        ));
    }
    let (paused, covering): (Vec<&PhaseRow>, Vec<&PhaseRow>) = covering
        .into_iter()
        .partition(|phase| phase.paused_at(timestamp));
    if covering.is_empty() {
        let paused: Vec<&str> = paused
            .iter()
            .map(|phase| phase.subscription_id.as_str())
            .collect();
        return Ok(unrated(
            UnratedReason::NoSubscription,
            format!(
                "paused at {}: {}",
                timestamp.to_rfc3339(),
                paused.join(", ")
            ),
        ));
    }
    let mut contributions = Vec::new();
    let mut charged = false;
    let mut misses = Vec::new();
    for phase in covering {
        match phase_contributions(cache, phase, event).await? {
            PhaseOutcome::NoCharge(detail) => misses.push(detail),
            PhaseOutcome::Unrated(reason) => return Ok(Err(reason)),
            PhaseOutcome::Rated(mut found) => {
                charged = true;
                contributions.append(&mut found);
            }
        }
    }
    if !charged {
        return Ok(unrated(UnratedReason::NoMatchingCharge, misses.join("; ")));
    }
    Ok(Ok(contributions))
}

enum PhaseOutcome {
    NoCharge(String),
    Unrated(Unrated),
    Rated(Vec<Contribution>),
}

async fn phase_contributions(
    cache: &CatalogCache,
    phase: &PhaseRow,
    event: &UsageEvent,
) -> Result<PhaseOutcome, RatingError> {
    let event_type = event.event_type();
    let Some(version) = cache.version(&phase.plan_version_id).await? else {
        return Ok(PhaseOutcome::NoCharge(format!(
            "plan version {} of {} is not published in the catalog",
            phase.plan_version_id, phase.subscription_id
        )));
    };
    let plan = &version.published.plan;
    let charges: Vec<&PlanCharge> = plan.usage_charges(event_type).collect();
    if charges.is_empty() {
        return Ok(PhaseOutcome::NoCharge(format!(
            "plan version {} has no usage charge on meter {event_type}",
            phase.plan_version_id
        )));
    }
    let Some(meter) = cache.meter(event_type.as_str()).await? else {
        return Ok(PhaseOutcome::NoCharge(format!(
            "no meter has the code {event_type}"
        )));
    };
    let reading = match meter.reading(event) {
        Ok(Some(reading)) => reading,
        Ok(None) => return Ok(PhaseOutcome::Rated(Vec::new())),
        Err(error) => return Ok(invalid(error.to_string())),
    };
    let mut state = AggregateState::new(meter.aggregation());
    if let Err(error) = state.absorb(&reading) {
        return Ok(invalid(error.to_string()));
    }
    let cycle = BillingCycle::new(phase.billing_anchor_at, plan.interval());
    let Ok(period) = cycle.period_containing(event.timestamp()) else {
        return Ok(PhaseOutcome::Unrated(Unrated {
            reason: UnratedReason::NoSubscription,
            detail: format!("no billing period contains {}", event.timestamp()),
        }));
    };
    let Some(segment) = phase.segment(&period) else {
        return Ok(PhaseOutcome::NoCharge(format!(
            "phase of {} does not overlap its period {period}",
            phase.subscription_id
        )));
    };
    let group = meter.group_key(event);
    let mut found = Vec::with_capacity(charges.len());
    for charge in charges {
        if let Some(missing) = missing_matrix_price(charge, &group) {
            return Ok(PhaseOutcome::Unrated(missing));
        }
        let transaction = match charge.price.model() {
            PriceModel::Percentage(_) => match &reading.measure {
                Measure::Number(amount) if *amount >= Decimal::ZERO => Some(Transaction {
                    event_id: event.id().clone(),
                    timestamp: event.timestamp(),
                    amount: *amount,
                }),
                Measure::Number(_) | Measure::One | Measure::Key(_) => {
                    return Ok(invalid(format!(
                        "charge {} prices transactions: the meter's property must be a \
                         non-negative amount",
                        charge.code
                    )));
                }
            },
            PriceModel::PerUnit(_)
            | PriceModel::Package(_)
            | PriceModel::Graduated(_)
            | PriceModel::Volume(_)
            | PriceModel::Bulk(_)
            | PriceModel::Matrix(_)
            | PriceModel::Flat(_) => None,
        };
        found.push(Contribution {
            key: AggregateKey {
                subscription_id: phase.subscription_id.clone(),
                period_start: period.start(),
                segment_start: segment.start(),
                plan_version_id: phase.plan_version_id.clone(),
                charge_code: charge.code.as_str().to_owned(),
                group_key: group.clone(),
            },
            period_end: period.end(),
            segment_end: segment.end(),
            state: state.clone(),
            transaction,
        });
    }
    Ok(PhaseOutcome::Rated(found))
}

fn invalid(detail: String) -> PhaseOutcome {
    PhaseOutcome::Unrated(Unrated {
        reason: UnratedReason::InvalidProperty,
        detail,
    })
}

/// NO_MATCHING_PRICE when a matrix charge has no cell for `group` and no default.
fn missing_matrix_price(charge: &PlanCharge, group: &GroupKey) -> Option<Unrated> {
    if !matches!(charge.price.model(), PriceModel::Matrix(_)) {
        return None;
    }
    let probe = BTreeMap::from([(group.clone(), Decimal::ZERO)]);
    match charge.price.price(Usage::Grouped(&probe)) {
        Err(PricingError::NoPriceForGroup { key }) => Some(Unrated {
            reason: UnratedReason::NoMatchingPrice,
            detail: format!(
                "charge {} has no matrix price for {{{key}}} and no default",
                charge.code
            ),
        }),
        Ok(_) | Err(_) => None,
    }
}

/// Adds one contribution of the event with sequence number `seq` to `deltas`
/// (and its transaction, if any, to `transactions`).
pub fn add(
    deltas: &mut BTreeMap<AggregateKey, AggregateDelta>,
    transactions: &mut Vec<(AggregateKey, Transaction)>,
    contribution: Contribution,
    seq: i64,
) -> Result<(), RatingError> {
    if let Some(transaction) = contribution.transaction {
        transactions.push((contribution.key.clone(), transaction));
    }
    match deltas.entry(contribution.key) {
        Entry::Vacant(vacant) => {
            vacant.insert(AggregateDelta {
                period_end: contribution.period_end,
                segment_end: contribution.segment_end,
                state: contribution.state,
                event_count: 1,
                max_seq: seq,
            });
        }
        Entry::Occupied(mut occupied) => {
            let delta = occupied.get_mut();
            delta
                .state
                .merge(&contribution.state)
                .map_err(|error| RatingError::Corrupt(error.to_string()))?;
            delta.event_count += 1;
            delta.max_seq = delta.max_seq.max(seq);
        }
    }
    Ok(())
}
