//! [`terms_for_period`]: the terms in force for one billing period.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TermsError;
use super::contract::SubscriptionTerms;
use super::spec::{Discount, DiscountDuration, RampPhase, TermSet, UsageDiscount, in_range};
use crate::money::{Currency, Money};
use crate::period::Period;
use crate::plan::PlanCharge;
use crate::pricing::ChargePrice;
use crate::proration::{ProrationPolicy, prorate};

/// A term in force, with the path of the term it comes from (`ramp[1].discounts[0]`), which
/// is what an explanation step cites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce<T> {
    /// Where the term is in the contract.
    pub term: String,
    /// The term.
    pub value: T,
}

/// A charge billed in the period, with the override that prices it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveCharge {
    /// The charge, with its list price.
    pub charge: PlanCharge,
    /// The price that replaces the list price this period.
    pub price_override: Option<InForce<ChargePrice>>,
}

/// A period's share of a full cycle period, in whole UTC days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodShare {
    /// Days of the period.
    pub days: i64,
    /// Days of the full cycle period it is part of.
    pub of_days: i64,
}

/// A minimum or maximum in force, prorated for a stub period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// The term (`minimum`, `ramp[0].maximum`, or `plan.minimum_commitment`).
    pub term: String,
    /// The amount for a full period.
    pub per_period: Money,
    /// The amount for this period: `per_period`, or its stub share.
    pub amount: Money,
    /// The stub's share, when the period is shorter than a full cycle period.
    pub share: Option<PeriodShare>,
}

/// The terms in force for one billing period: what [`price_period`](super::price_period)
/// prices with. Built only by [`terms_for_period`] (serialisable for display, not
/// deserialisable: a service that receives terms validates the spec again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EffectiveTerms {
    period: Period,
    period_number: u32,
    phase: Option<InForce<String>>,
    currency: Currency,
    charges: Vec<EffectiveCharge>,
    usage_discounts: Vec<InForce<UsageDiscount>>,
    discounts: Vec<InForce<Discount>>,
    minimum: Option<Commitment>,
    maximum: Option<Commitment>,
    invoicing_threshold: Option<Money>,
}

impl EffectiveTerms {
    /// The billing period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The period's number in the contract: 1 for the period starting at the contract start.
    pub fn period_number(&self) -> u32 {
        self.period_number
    }

    /// The ramp phase in force (`ramp[i]` and its name), if any.
    pub fn phase(&self) -> Option<&InForce<String>> {
        self.phase.as_ref()
    }

    /// The currency of every amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The charges billed, in order, with their overrides.
    pub fn charges(&self) -> &[EffectiveCharge] {
        &self.charges
    }

    /// Free units in force: the base terms' then the phase's.
    pub fn usage_discounts(&self) -> &[InForce<UsageDiscount>] {
        &self.usage_discounts
    }

    /// Discounts in force, in the order they apply within their kind: the base terms' then
    /// the phase's, each in the order written.
    pub fn discounts(&self) -> &[InForce<Discount>] {
        &self.discounts
    }

    /// The minimum spend in force (the phase's, else the base terms', else the plan's).
    pub fn minimum(&self) -> Option<&Commitment> {
        self.minimum.as_ref()
    }

    /// The maximum spend in force (the phase's, else the base terms').
    pub fn maximum(&self) -> Option<&Commitment> {
        self.maximum.as_ref()
    }

    /// The progressive billing threshold.
    pub fn invoicing_threshold(&self) -> Option<Money> {
        self.invoicing_threshold
    }
}

/// The terms in force for `period`, a period of the subscription's cycle at or after the
/// contract start (the first may be a stub that starts at the contract start; the last may
/// end early).
///
/// Rules (module docs): the ramp phase is the one whose range contains the period's start;
/// an override is in force when its range contains the period's start (a phase's override
/// for a charge wins over a base override for it); a discount applies to the periods that
/// start at or after its start, for its duration counted in periods; the phase's minimum
/// and maximum replace the base terms'; a stub period's minimum and maximum are the stub's
/// share by UTC day of a full period's ([`prorate`], whole minor units).
pub fn terms_for_period(
    terms: &SubscriptionTerms,
    period: &Period,
) -> Result<EffectiveTerms, TermsError> {
    let spec = terms.spec();
    let clock = ContractClock::new(terms, period)?;
    let phase = spec
        .ramp
        .iter()
        .position(|phase| phase.contains(period.start()));
    let phase_spec = phase.and_then(|index| spec.ramp.get(index));
    let charges = effective_charges(terms, phase, phase_spec, period.start());
    let mut usage_discounts = in_force_usage_discounts("", &spec.base);
    let mut discounts = clock.in_force_discounts("", &spec.base, spec.starts_at)?;
    if let (Some(index), Some(phase_spec)) = (phase, phase_spec) {
        let path = format!("ramp[{index}].");
        usage_discounts.extend(in_force_usage_discounts(&path, &phase_spec.terms));
        discounts.extend(clock.in_force_discounts(
            &path,
            &phase_spec.terms,
            phase_spec.starts_at,
        )?);
    }
    let (minimum, maximum) = clock.limits(terms, phase, phase_spec)?;
    Ok(EffectiveTerms {
        period: *period,
        period_number: clock.number,
        phase: phase.zip(phase_spec).map(|(index, phase_spec)| InForce {
            term: format!("ramp[{index}]"),
            value: phase_spec.name.clone(),
        }),
        currency: terms.currency(),
        charges,
        usage_discounts,
        discounts,
        minimum,
        maximum,
        invoicing_threshold: spec.invoicing_threshold,
    })
}

/// Each contract charge with the override in force at `instant`.
fn effective_charges(
    terms: &SubscriptionTerms,
    phase: Option<usize>,
    phase_spec: Option<&RampPhase>,
    instant: DateTime<Utc>,
) -> Vec<EffectiveCharge> {
    let spec = terms.spec();
    terms
        .charges()
        .iter()
        .map(|charge| {
            let from_phase = phase.zip(phase_spec).and_then(|(index, phase_spec)| {
                override_in_force(
                    terms,
                    Some(index),
                    &phase_spec.terms,
                    phase_spec.starts_at,
                    charge,
                    instant,
                )
            });
            let price_override = from_phase.or_else(|| {
                override_in_force(terms, None, &spec.base, spec.starts_at, charge, instant)
            });
            EffectiveCharge {
                charge: charge.clone(),
                price_override,
            }
        })
        .collect()
}

fn override_in_force(
    terms: &SubscriptionTerms,
    phase: Option<usize>,
    set: &TermSet,
    default_start: DateTime<Utc>,
    charge: &PlanCharge,
    instant: DateTime<Utc>,
) -> Option<InForce<ChargePrice>> {
    let prices = terms.override_prices(phase);
    let path = phase.map_or(String::new(), |index| format!("ramp[{index}]."));
    set.overrides
        .iter()
        .zip(prices)
        .enumerate()
        .find(|(_, (price_override, _))| {
            price_override.charge == charge.code
                && in_range(
                    price_override.starts_at.unwrap_or(default_start),
                    price_override.ends_at,
                    instant,
                )
        })
        .map(|(index, (_, price))| InForce {
            term: format!("{path}overrides[{index}]"),
            value: price.clone(),
        })
}

fn in_force_usage_discounts(path: &str, set: &TermSet) -> Vec<InForce<UsageDiscount>> {
    set.usage_discounts
        .iter()
        .enumerate()
        .map(|(index, usage_discount)| InForce {
            term: format!("{path}usage_discounts[{index}]"),
            value: usage_discount.clone(),
        })
        .collect()
}

/// Where a period sits in the contract's cycle.
struct ContractClock<'a> {
    terms: &'a SubscriptionTerms,
    period: Period,
    /// The period's cycle index.
    index: i64,
    /// The contract start's cycle index.
    start_index: i64,
    /// 1 for the period that starts at the contract start.
    number: u32,
}

impl<'a> ContractClock<'a> {
    fn new(terms: &'a SubscriptionTerms, period: &Period) -> Result<ContractClock<'a>, TermsError> {
        let cycle = terms.cycle();
        let contract_start = terms.spec().starts_at;
        let not_on_cycle = || TermsError::PeriodNotOnCycle {
            period: *period,
            contract_start,
        };
        if period.start() < contract_start {
            return Err(not_on_cycle());
        }
        let index = cycle.index_of(period.start())?;
        let starts_on_cycle =
            period.start() == contract_start || cycle.boundary(index)? == period.start();
        if !starts_on_cycle || period.end() > cycle.boundary(index + 1)? {
            return Err(not_on_cycle());
        }
        let start_index = cycle.index_of(contract_start)?;
        let number = u32::try_from(index - start_index + 1).map_err(|_| not_on_cycle())?;
        Ok(ContractClock {
            terms,
            period: *period,
            index,
            start_index,
            number,
        })
    }

    /// The number of the first period that starts at or after `instant`.
    fn first_period_at_or_after(&self, instant: DateTime<Utc>) -> Result<i64, TermsError> {
        if instant <= self.terms.spec().starts_at {
            return Ok(1);
        }
        let cycle = self.terms.cycle();
        let index = cycle.index_of(instant)?;
        let number = index - self.start_index + 1;
        Ok(if cycle.boundary(index)? == instant {
            number
        } else {
            number + 1
        })
    }

    fn discount_in_force(
        &self,
        discount: &Discount,
        default_start: DateTime<Utc>,
    ) -> Result<bool, TermsError> {
        let starts_at = discount.starts_at.unwrap_or(default_start);
        if self.period.start() < starts_at {
            return Ok(false);
        }
        Ok(match discount.duration {
            DiscountDuration::Forever => true,
            DiscountDuration::Until { ends_at } => self.period.start() < ends_at,
            DiscountDuration::Periods { count } => {
                let first = self.first_period_at_or_after(starts_at)?;
                i64::from(self.number) < first + i64::from(count)
            }
        })
    }

    fn in_force_discounts(
        &self,
        path: &str,
        set: &TermSet,
        default_start: DateTime<Utc>,
    ) -> Result<Vec<InForce<Discount>>, TermsError> {
        let mut in_force = Vec::new();
        for (index, discount) in set.discounts.iter().enumerate() {
            if self.discount_in_force(discount, default_start)? {
                in_force.push(InForce {
                    term: format!("{path}discounts[{index}]"),
                    value: discount.clone(),
                });
            }
        }
        Ok(in_force)
    }

    /// The minimum and maximum in force, prorated for a stub.
    fn limits(
        &self,
        terms: &SubscriptionTerms,
        phase: Option<usize>,
        phase_spec: Option<&RampPhase>,
    ) -> Result<(Option<Commitment>, Option<Commitment>), TermsError> {
        let base = &terms.spec().base;
        let pick = |field: &str, from_phase: Option<Money>, from_base: Option<Money>| match (
            phase.zip(from_phase),
            from_base,
        ) {
            (Some((index, amount)), _) => Some((format!("ramp[{index}].{field}"), amount)),
            (None, Some(amount)) => Some((field.to_owned(), amount)),
            (None, None) => None,
        };
        let phase_terms = phase_spec.map(|phase_spec| &phase_spec.terms);
        let minimum = pick(
            "minimum",
            phase_terms.and_then(|set| set.minimum),
            base.minimum,
        )
        .or_else(|| {
            terms.plan_minimum().map(|amount| {
                (
                    "plan.minimum_commitment".to_owned(),
                    Money::new(amount, terms.currency()),
                )
            })
        });
        let maximum = pick(
            "maximum",
            phase_terms.and_then(|set| set.maximum),
            base.maximum,
        );
        let mut minimum = minimum.map(|limit| self.prorated(limit)).transpose()?;
        let maximum = maximum.map(|limit| self.prorated(limit)).transpose()?;
        // The maximum wins: a plan minimum above the terms' maximum, or a stub's shares a
        // minor unit apart, never make the minimum exceed it.
        if let (Some(minimum), Some(maximum)) = (&mut minimum, &maximum)
            && minimum.amount.amount() > maximum.amount.amount()
        {
            minimum.amount = maximum.amount;
        }
        Ok((minimum, maximum))
    }

    /// A per-period amount for this period: its stub share by UTC day, in whole minor units
    /// (the [`prorate`] allocation, so the shares of a split period sum to the amount).
    fn prorated(&self, (term, per_period): (String, Money)) -> Result<Commitment, TermsError> {
        let full = self.terms.cycle().period(self.index)?;
        if full == self.period {
            return Ok(Commitment {
                term,
                per_period,
                amount: per_period,
                share: None,
            });
        }
        let policy = ProrationPolicy::ByDay;
        let mut cuts = Vec::with_capacity(2);
        if self.period.start() > full.start() {
            cuts.push(self.period.start());
        }
        if self.period.end() < full.end() {
            cuts.push(self.period.end());
        }
        let parts = prorate(per_period, &full, &cuts, policy)?;
        let part = usize::from(self.period.start() > full.start());
        let amount = parts
            .get(part)
            .copied()
            .unwrap_or(Money::zero(per_period.currency()));
        Ok(Commitment {
            term,
            per_period,
            amount,
            share: Some(PeriodShare {
                days: policy.measure(self.period.start(), self.period.end()),
                of_days: policy.measure(full.start(), full.end()),
            }),
        })
    }
}
