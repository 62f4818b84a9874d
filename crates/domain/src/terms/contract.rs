//! [`SubscriptionTerms`]: a [`SubscriptionTermsSpec`] checked against its plan version.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::TermsError;
use super::spec::{
    DiscountDuration, DiscountTarget, DiscountValue, OverridePrice, SubscriptionTermsSpec, TermSet,
    ranges_overlap,
};
use crate::ids::ChargeCode;
use crate::money::{Currency, Money};
use crate::period::BillingCycle;
use crate::plan::{ChargeKind, Plan, PlanCharge};
use crate::pricing::{ChargePrice, ChargePriceSpec, PerUnit, PerUnitSpec, PriceModel, UsageKind};
use crate::subscription::PlanRef;

/// A contract's terms, valid for the plan version they were checked against.
///
/// Built only by [`SubscriptionTerms::new`], which resolves everything the plan decides
/// (the charges billed, unit-price overrides, the billing cycle), so that pricing a period
/// needs nothing but the terms. Serialises as its spec; to read terms back, deserialise the
/// [`SubscriptionTermsSpec`] and call [`SubscriptionTerms::new`] with the plan version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "SubscriptionTermsSpec")]
pub struct SubscriptionTerms {
    spec: SubscriptionTermsSpec,
    cycle: BillingCycle,
    charges: Vec<PlanCharge>,
    plan_minimum: Option<Decimal>,
    base_prices: Vec<ChargePrice>,
    phase_prices: Vec<Vec<ChargePrice>>,
}

impl From<SubscriptionTerms> for SubscriptionTermsSpec {
    fn from(terms: SubscriptionTerms) -> SubscriptionTermsSpec {
        terms.spec
    }
}

impl SubscriptionTerms {
    /// Checks `spec` against `plan` (the version it names) and resolves it.
    ///
    /// The first broken rule is the error, naming the term by its path (`ramp[1].discounts[0]`).
    pub fn new(spec: SubscriptionTermsSpec, plan: &Plan) -> Result<SubscriptionTerms, TermsError> {
        let named = PlanRef::from(plan);
        if spec.plan != named {
            return Err(TermsError::PlanMismatch {
                terms: spec.plan.clone(),
                plan: named,
            });
        }
        let currency = plan.currency();
        check_currency("currency", currency, spec.currency)?;
        let charges = contract_charges(&spec, plan)?;
        let checker = Checker {
            plan,
            charges: &charges,
            currency,
            contract_start: spec.starts_at,
        };
        let base_prices = checker.term_set("", &spec.base, spec.starts_at)?;
        let mut phase_prices = Vec::with_capacity(spec.ramp.len());
        for (index, phase) in spec.ramp.iter().enumerate() {
            let path = format!("ramp[{index}].");
            check_range(&format!("ramp[{index}]"), phase.starts_at, phase.ends_at)?;
            phase_prices.push(checker.term_set(&path, &phase.terms, phase.starts_at)?);
            let minimum = phase.terms.minimum.or(spec.base.minimum);
            let maximum = phase.terms.maximum.or(spec.base.maximum);
            check_limits(&format!("ramp[{index}]"), minimum, maximum)?;
            if let Some(earlier) = spec.ramp[..index].iter().position(|other| {
                ranges_overlap(
                    (other.starts_at, other.ends_at),
                    (phase.starts_at, phase.ends_at),
                )
            }) {
                return Err(TermsError::OverlappingPhases {
                    first: earlier,
                    second: index,
                });
            }
        }
        if let Some(threshold) = spec.invoicing_threshold {
            check_money("invoicing_threshold", currency, threshold)?;
            if !threshold.is_positive() {
                return Err(TermsError::NotPositive {
                    term: "invoicing_threshold".into(),
                    amount: threshold,
                });
            }
        }
        Ok(SubscriptionTerms {
            cycle: plan.cycle_for(spec.starts_at),
            charges,
            plan_minimum: plan.spec().minimum_commitment,
            base_prices,
            phase_prices,
            spec,
        })
    }

    /// The validated configuration.
    pub fn spec(&self) -> &SubscriptionTermsSpec {
        &self.spec
    }

    /// The currency of every amount.
    pub fn currency(&self) -> Currency {
        self.spec.currency
    }

    /// The subscription's billing cycle (the plan's, from the contract start).
    pub fn cycle(&self) -> BillingCycle {
        self.cycle
    }

    /// The charges the contract bills, in order: the plan's (less the removed ones), then
    /// the added ones.
    pub fn charges(&self) -> &[PlanCharge] {
        &self.charges
    }

    /// The plan version's minimum commitment, used when no term sets a minimum.
    pub fn plan_minimum(&self) -> Option<Decimal> {
        self.plan_minimum
    }

    /// The resolved price of each override of `base` (`phase: None`) or of a ramp phase,
    /// in the order of the overrides.
    pub(crate) fn override_prices(&self, phase: Option<usize>) -> &[ChargePrice] {
        match phase {
            None => &self.base_prices,
            Some(index) => self.phase_prices.get(index).map_or(&[], Vec::as_slice),
        }
    }
}

/// The plan's charges less the removed ones, then the added ones.
fn contract_charges(
    spec: &SubscriptionTermsSpec,
    plan: &Plan,
) -> Result<Vec<PlanCharge>, TermsError> {
    for (index, code) in spec.removed_charges.iter().enumerate() {
        if plan.charge(code).is_none() || spec.removed_charges[..index].contains(code) {
            return Err(TermsError::UnknownCharge {
                term: format!("removed_charges[{index}]"),
                charge: code.clone(),
            });
        }
    }
    let mut charges: Vec<PlanCharge> = plan
        .charges()
        .iter()
        .filter(|charge| !spec.removed_charges.contains(&charge.code))
        .cloned()
        .collect();
    for (index, added) in spec.added_charges.iter().enumerate() {
        let term = format!("added_charges[{index}]");
        if plan.charge(&added.code).is_some()
            || spec.added_charges[..index]
                .iter()
                .any(|earlier| earlier.code == added.code)
        {
            return Err(TermsError::DuplicateCharge {
                term,
                charge: added.code.clone(),
            });
        }
        let model = added.price.model();
        if matches!(added.kind, ChargeKind::Recurring { .. })
            && model.usage_kind() != UsageKind::Quantity
        {
            return Err(TermsError::RecurringChargeNeedsQuantityModel {
                term,
                model: model.name(),
            });
        }
        charges.push(added.clone());
    }
    Ok(charges)
}

/// Checks one [`TermSet`] against the contract's charges.
struct Checker<'a> {
    plan: &'a Plan,
    charges: &'a [PlanCharge],
    currency: Currency,
    contract_start: DateTime<Utc>,
}

impl Checker<'_> {
    /// Checks `set` (at `path`, `""` or `ramp[i].`, whose terms start by default at
    /// `default_start`) and resolves its override prices.
    fn term_set(
        &self,
        path: &str,
        set: &TermSet,
        default_start: DateTime<Utc>,
    ) -> Result<Vec<ChargePrice>, TermsError> {
        let prices = self.overrides(path, set)?;
        for (index, discount) in set.discounts.iter().enumerate() {
            let term = format!("{path}discounts[{index}]");
            self.discount_value(&term, &discount.value)?;
            if let DiscountTarget::Charges { charges } = &discount.applies_to {
                for charge in charges {
                    self.charge(&term, charge)?;
                }
            }
            if let Some(starts_at) = discount.starts_at {
                self.not_before_contract(&term, starts_at)?;
            }
            match discount.duration {
                DiscountDuration::Forever => {}
                DiscountDuration::Periods { count } => {
                    if count == 0 {
                        return Err(TermsError::ZeroPeriods { term });
                    }
                }
                DiscountDuration::Until { ends_at } => {
                    let starts_at = discount.starts_at.unwrap_or(default_start);
                    check_range(&term, starts_at, Some(ends_at))?;
                }
            }
        }
        for (index, usage_discount) in set.usage_discounts.iter().enumerate() {
            let term = format!("{path}usage_discounts[{index}]");
            if usage_discount.free_units < Decimal::ZERO {
                return Err(TermsError::NegativeQuantity {
                    term,
                    quantity: usage_discount.free_units,
                });
            }
            let priced_on_units = self.charges.iter().any(|charge| {
                matches!(&charge.kind, ChargeKind::Usage { meter } if *meter == usage_discount.meter)
                    && charge.price.model().usage_kind() != UsageKind::Transactions
            });
            if !priced_on_units {
                return Err(TermsError::MeterNotPricedOnUnits {
                    term,
                    meter: usage_discount.meter.clone(),
                });
            }
        }
        for (field, limit) in [("minimum", set.minimum), ("maximum", set.maximum)] {
            if let Some(amount) = limit {
                check_money(&format!("{path}{field}"), self.currency, amount)?;
            }
        }
        check_limits(path.trim_end_matches('.'), set.minimum, set.maximum)?;
        Ok(prices)
    }

    fn overrides(&self, path: &str, set: &TermSet) -> Result<Vec<ChargePrice>, TermsError> {
        let mut prices = Vec::with_capacity(set.overrides.len());
        for (index, price_override) in set.overrides.iter().enumerate() {
            let term = format!("{path}overrides[{index}]");
            let charge = self.charge(&term, &price_override.charge)?;
            let starts_at = price_override.starts_at.unwrap_or(DateTime::<Utc>::MIN_UTC);
            check_range(&term, starts_at, price_override.ends_at)?;
            if let Some(earlier) = set.overrides[..index].iter().position(|other| {
                other.charge == price_override.charge
                    && ranges_overlap(
                        (
                            other.starts_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
                            other.ends_at,
                        ),
                        (starts_at, price_override.ends_at),
                    )
            }) {
                return Err(TermsError::OverlappingOverrides {
                    term,
                    other: format!("{path}overrides[{earlier}]"),
                    charge: charge.code.clone(),
                });
            }
            prices.push(resolve_override(&term, charge, &price_override.price)?);
        }
        Ok(prices)
    }

    /// The contract charge `code`; a removed plan charge is named as such.
    fn charge(&self, term: &str, code: &ChargeCode) -> Result<&PlanCharge, TermsError> {
        if let Some(charge) = self.charges.iter().find(|charge| charge.code == *code) {
            return Ok(charge);
        }
        if self.plan.charge(code).is_some() {
            return Err(TermsError::RemovedCharge {
                term: term.into(),
                charge: code.clone(),
            });
        }
        Err(TermsError::UnknownCharge {
            term: term.into(),
            charge: code.clone(),
        })
    }

    fn discount_value(&self, term: &str, value: &DiscountValue) -> Result<(), TermsError> {
        match value {
            DiscountValue::Percentage { percent } => {
                if *percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    return Err(TermsError::PercentageOutOfRange {
                        term: term.into(),
                        percent: *percent,
                    });
                }
                Ok(())
            }
            DiscountValue::Amount { amount } => check_money(term, self.currency, *amount),
        }
    }

    fn not_before_contract(&self, term: &str, at: DateTime<Utc>) -> Result<(), TermsError> {
        if at < self.contract_start {
            return Err(TermsError::BeforeContractStart {
                term: term.into(),
                at,
                contract_start: self.contract_start,
            });
        }
        Ok(())
    }
}

/// The price an override bills `charge` with.
fn resolve_override(
    term: &str,
    charge: &PlanCharge,
    price: &OverridePrice,
) -> Result<ChargePrice, TermsError> {
    let pricing_error = |source| TermsError::InvalidPrice {
        term: term.into(),
        source,
    };
    match price {
        OverridePrice::Price { price } => {
            let list_kind = charge.price.model().usage_kind();
            let kind = price.model().usage_kind();
            // A grouped (matrix) charge may take a quantity model, which prices the sum of
            // its groups; anything else must be priced on the same kind of usage.
            let fits = kind == list_kind
                || (list_kind == UsageKind::Grouped && kind == UsageKind::Quantity);
            if !fits {
                return Err(TermsError::OverrideUsageMismatch {
                    term: term.into(),
                    charge: charge.code.clone(),
                    list_model: charge.price.model().name(),
                    model: price.model().name(),
                });
            }
            Ok(price.clone())
        }
        OverridePrice::UnitPrice { unit_price } => {
            let list = charge.price.spec();
            if list.model.usage_kind() != UsageKind::Quantity {
                return Err(TermsError::OverrideUsageMismatch {
                    term: term.into(),
                    charge: charge.code.clone(),
                    list_model: list.model.name(),
                    model: "per_unit",
                });
            }
            let model = PerUnit::new(PerUnitSpec {
                unit_price: *unit_price,
            })
            .map_err(pricing_error)?;
            ChargePrice::new(ChargePriceSpec {
                model: PriceModel::PerUnit(model),
                ..list.clone()
            })
            .map_err(pricing_error)
        }
    }
}

/// An amount of the terms: in the plan's currency, not negative, in whole minor units.
fn check_money(term: &str, currency: Currency, amount: Money) -> Result<(), TermsError> {
    check_currency(term, currency, amount.currency())?;
    if amount.is_negative() {
        return Err(TermsError::NegativeAmount {
            term: term.into(),
            amount,
        });
    }
    if !amount.is_rounded() {
        return Err(TermsError::NotInMinorUnits {
            term: term.into(),
            amount,
        });
    }
    Ok(())
}

fn check_currency(term: &str, expected: Currency, found: Currency) -> Result<(), TermsError> {
    if expected != found {
        return Err(TermsError::CurrencyMismatch {
            term: term.into(),
            expected,
            found,
        });
    }
    Ok(())
}

fn check_range(
    term: &str,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
) -> Result<(), TermsError> {
    match ends_at {
        Some(ends_at) if ends_at <= starts_at => Err(TermsError::EmptyRange {
            term: term.into(),
            starts_at,
            ends_at,
        }),
        Some(_) | None => Ok(()),
    }
}

fn check_limits(
    term: &str,
    minimum: Option<Money>,
    maximum: Option<Money>,
) -> Result<(), TermsError> {
    if let (Some(minimum), Some(maximum)) = (minimum, maximum)
        && minimum.amount() > maximum.amount()
    {
        return Err(TermsError::MinimumAboveMaximum {
            term: if term.is_empty() { "base" } else { term }.into(),
            minimum,
            maximum,
        });
    }
    Ok(())
}
