//! `tally.invoicing.v1.SubscriptionTerms` ↔ the domain's
//! [`SubscriptionTermsSpec`](tally_domain::terms::SubscriptionTermsSpec).
//!
//! The wire carries what the contract adds; the plan version, currency and contract
//! start are the subscription's and are passed in. Reading checks the wire shapes
//! (decimals, money in the subscription's currency, codes, instants, one-ofs) and stops at
//! the first broken rule; the rules between terms and against the plan version are the
//! domain's ([`SubscriptionTerms::new`](tally_domain::terms::SubscriptionTerms::new)),
//! reported by [`terms_violation`] on the same paths: the wire's field paths are the
//! domain's term paths (`terms.overrides[0]`, `terms.ramp[1].discounts[0]`).

use chrono::{DateTime, Utc};
use tally_domain::ids::{ChargeCode, MeterCode};
use tally_domain::money::{Currency, Money};
use tally_domain::subscription::PlanRef;
use tally_domain::terms::{
    Discount, DiscountDuration, DiscountTarget, DiscountValue, OverridePrice, PriceOverride,
    RampPhase, SubscriptionTermsSpec, TermSet, TermsError, UsageDiscount,
};

use super::catalog::{PriceLimits, charge_price, plan_charge, plan_charge_value, price_value};
use super::{
    Violation, code, decimal_value, maybe_timestamp, money_in, money_value, optional_instant,
    required_decimal, required_instant, rule, violation,
};
use crate::invoicing as wire;

/// What the terms sit on: the subscription's plan version, currency and start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermsContext {
    /// The plan version.
    pub plan: PlanRef,
    /// The subscription's currency (every amount must be in it).
    pub currency: Currency,
    /// The contract start (the subscription's start).
    pub starts_at: DateTime<Utc>,
}

/// Reads terms at `field` (`terms`); see the module docs for what is checked here.
pub fn subscription_terms(
    terms: &wire::SubscriptionTerms,
    context: TermsContext,
    field: &str,
) -> Result<SubscriptionTermsSpec, Violation> {
    let currency = context.currency;
    let added_charges = terms
        .added_charges
        .iter()
        .enumerate()
        .map(|(index, charge)| {
            plan_charge(charge, currency, &format!("{field}.added_charges[{index}]"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let removed_charges = terms
        .removed_charges
        .iter()
        .enumerate()
        .map(|(index, key)| {
            code(
                key,
                &format!("{field}.removed_charges[{index}]"),
                ChargeCode::parse,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let base = term_set(
        WireTermSet {
            overrides: &terms.overrides,
            discounts: &terms.discounts,
            usage_discounts: &terms.usage_discounts,
            minimum: terms.minimum.as_ref(),
            maximum: terms.maximum.as_ref(),
        },
        currency,
        field,
    )?;
    let mut ramp = Vec::with_capacity(terms.ramp.len());
    for (index, phase) in terms.ramp.iter().enumerate() {
        let path = format!("{field}.ramp[{index}]");
        ramp.push(RampPhase {
            name: phase.name.clone(),
            starts_at: required_instant(phase.starts_at.as_ref(), &format!("{path}.starts_at"))?,
            ends_at: optional_instant(phase.ends_at.as_ref(), &format!("{path}.ends_at"))?,
            terms: term_set(
                WireTermSet {
                    overrides: &phase.overrides,
                    discounts: &phase.discounts,
                    usage_discounts: &phase.usage_discounts,
                    minimum: phase.minimum.as_ref(),
                    maximum: phase.maximum.as_ref(),
                },
                currency,
                &path,
            )?,
        });
    }
    let invoicing_threshold = terms
        .invoicing_threshold
        .as_ref()
        .map(|threshold| {
            money_in(
                Some(threshold),
                currency,
                &format!("{field}.invoicing_threshold"),
            )
        })
        .transpose()?;
    Ok(SubscriptionTermsSpec {
        plan: context.plan,
        currency,
        starts_at: context.starts_at,
        base,
        added_charges,
        removed_charges,
        ramp,
        invoicing_threshold,
    })
}

/// The fields a term set has on the wire (the contract's, or a ramp phase's).
struct WireTermSet<'a> {
    overrides: &'a [wire::PriceOverride],
    discounts: &'a [wire::Discount],
    usage_discounts: &'a [wire::UsageDiscount],
    minimum: Option<&'a crate::common::Money>,
    maximum: Option<&'a crate::common::Money>,
}

fn term_set(set: WireTermSet<'_>, currency: Currency, field: &str) -> Result<TermSet, Violation> {
    let mut overrides = Vec::with_capacity(set.overrides.len());
    for (index, price_override) in set.overrides.iter().enumerate() {
        overrides.push(override_of(
            price_override,
            currency,
            &format!("{field}.overrides[{index}]"),
        )?);
    }
    let mut discounts = Vec::with_capacity(set.discounts.len());
    for (index, discount) in set.discounts.iter().enumerate() {
        discounts.push(discount_of(
            discount,
            currency,
            &format!("{field}.discounts[{index}]"),
        )?);
    }
    let mut usage_discounts = Vec::with_capacity(set.usage_discounts.len());
    for (index, usage_discount) in set.usage_discounts.iter().enumerate() {
        let path = format!("{field}.usage_discounts[{index}]");
        usage_discounts.push(UsageDiscount {
            name: not_empty(&usage_discount.name, &format!("{path}.name"))?,
            meter: code(
                &usage_discount.meter_code,
                &format!("{path}.meter_code"),
                MeterCode::parse,
            )?,
            free_units: required_decimal(
                usage_discount.free_units.as_ref(),
                &format!("{path}.free_units"),
            )?,
        });
    }
    let limit = |value: Option<&crate::common::Money>, name: &str| {
        value
            .map(|value| money_in(Some(value), currency, &format!("{field}.{name}")))
            .transpose()
    };
    Ok(TermSet {
        overrides,
        discounts,
        usage_discounts,
        minimum: limit(set.minimum, "minimum")?,
        maximum: limit(set.maximum, "maximum")?,
    })
}

fn override_of(
    price_override: &wire::PriceOverride,
    currency: Currency,
    field: &str,
) -> Result<PriceOverride, Violation> {
    use wire::price_override::Price;
    let price = match price_override.price.as_ref() {
        Some(Price::UnitPrice(unit_price)) => OverridePrice::UnitPrice {
            unit_price: required_decimal(Some(unit_price), &format!("{field}.unit_price"))?,
        },
        Some(Price::ChargePrice(charge)) => OverridePrice::Price {
            price: charge_price(
                charge.price.as_ref(),
                PriceLimits {
                    included_quantity: charge.included_quantity.as_ref(),
                    minimum_amount: charge.minimum_amount.as_ref(),
                    maximum_amount: charge.maximum_amount.as_ref(),
                },
                currency,
                &format!("{field}.charge_price"),
            )?,
        },
        None => {
            return Err(violation(
                field,
                rule::REQUIRED,
                "needs unit_price or charge_price".to_owned(),
            ));
        }
    };
    Ok(PriceOverride {
        charge: code(
            &price_override.charge_key,
            &format!("{field}.charge_key"),
            ChargeCode::parse,
        )?,
        price,
        starts_at: optional_instant(
            price_override.starts_at.as_ref(),
            &format!("{field}.starts_at"),
        )?,
        ends_at: optional_instant(price_override.ends_at.as_ref(), &format!("{field}.ends_at"))?,
    })
}

fn discount_of(
    discount: &wire::Discount,
    currency: Currency,
    field: &str,
) -> Result<Discount, Violation> {
    use wire::discount::{Duration, Value};
    let value = match discount.value.as_ref() {
        Some(Value::Percent(percent)) => DiscountValue::Percentage {
            percent: required_decimal(Some(percent), &format!("{field}.percent"))?,
        },
        Some(Value::Amount(amount)) => DiscountValue::Amount {
            amount: money_in(Some(amount), currency, &format!("{field}.amount"))?,
        },
        None => {
            return Err(violation(
                field,
                rule::REQUIRED,
                "needs percent or amount".to_owned(),
            ));
        }
    };
    let applies_to = if discount.charge_keys.is_empty() {
        DiscountTarget::Invoice
    } else {
        let charges = discount
            .charge_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                code(
                    key,
                    &format!("{field}.charge_keys[{index}]"),
                    ChargeCode::parse,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        DiscountTarget::Charges { charges }
    };
    let duration = match discount.duration.as_ref() {
        None => DiscountDuration::Forever,
        Some(Duration::Periods(count)) => DiscountDuration::Periods { count: *count },
        Some(Duration::Until(until)) => DiscountDuration::Until {
            ends_at: required_instant(Some(until), &format!("{field}.until"))?,
        },
    };
    Ok(Discount {
        name: not_empty(&discount.name, &format!("{field}.name"))?,
        value,
        applies_to,
        starts_at: optional_instant(discount.starts_at.as_ref(), &format!("{field}.starts_at"))?,
        duration,
    })
}

fn not_empty(text: &str, field: &str) -> Result<String, Violation> {
    if text.trim().is_empty() {
        return Err(violation(field, rule::REQUIRED, "is required".to_owned()));
    }
    Ok(text.to_owned())
}

/// Terms on the wire (what a subscription's read API and `subscription-events` carry).
pub fn subscription_terms_value(spec: &SubscriptionTermsSpec) -> wire::SubscriptionTerms {
    let currency = spec.currency;
    let set = term_set_value(&spec.base, currency);
    wire::SubscriptionTerms {
        added_charges: spec
            .added_charges
            .iter()
            .map(|charge| plan_charge_value(charge, currency))
            .collect(),
        removed_charges: spec
            .removed_charges
            .iter()
            .map(|charge| charge.as_str().to_owned())
            .collect(),
        ramp: spec
            .ramp
            .iter()
            .map(|phase| {
                let set = term_set_value(&phase.terms, currency);
                wire::RampPhase {
                    name: phase.name.clone(),
                    starts_at: maybe_timestamp(Some(phase.starts_at)),
                    ends_at: maybe_timestamp(phase.ends_at),
                    overrides: set.overrides,
                    discounts: set.discounts,
                    usage_discounts: set.usage_discounts,
                    minimum: set.minimum,
                    maximum: set.maximum,
                }
            })
            .collect(),
        invoicing_threshold: spec.invoicing_threshold.map(|amount| money(&amount)),
        overrides: set.overrides,
        discounts: set.discounts,
        usage_discounts: set.usage_discounts,
        minimum: set.minimum,
        maximum: set.maximum,
    }
}

/// A term set's fields on the wire.
struct TermSetValue {
    overrides: Vec<wire::PriceOverride>,
    discounts: Vec<wire::Discount>,
    usage_discounts: Vec<wire::UsageDiscount>,
    minimum: Option<crate::common::Money>,
    maximum: Option<crate::common::Money>,
}

fn money(amount: &Money) -> crate::common::Money {
    money_value(amount.amount(), amount.currency())
}

fn term_set_value(set: &TermSet, currency: Currency) -> TermSetValue {
    use wire::discount::{Duration, Value};
    use wire::price_override::Price;
    let overrides = set
        .overrides
        .iter()
        .map(|price_override| wire::PriceOverride {
            charge_key: price_override.charge.as_str().to_owned(),
            price: Some(match &price_override.price {
                OverridePrice::UnitPrice { unit_price } => {
                    Price::UnitPrice(decimal_value(*unit_price))
                }
                OverridePrice::Price { price } => {
                    let spec = price.spec();
                    Price::ChargePrice(wire::OverrideChargePrice {
                        price: Some(price_value(&spec.model, currency)),
                        included_quantity: (!spec.free_units.is_zero())
                            .then(|| decimal_value(spec.free_units)),
                        minimum_amount: spec.minimum.map(|amount| money_value(amount, currency)),
                        maximum_amount: spec.maximum.map(|amount| money_value(amount, currency)),
                    })
                }
            }),
            starts_at: maybe_timestamp(price_override.starts_at),
            ends_at: maybe_timestamp(price_override.ends_at),
        })
        .collect();
    let discounts = set
        .discounts
        .iter()
        .map(|discount| wire::Discount {
            name: discount.name.clone(),
            value: Some(match &discount.value {
                DiscountValue::Percentage { percent } => Value::Percent(decimal_value(*percent)),
                DiscountValue::Amount { amount } => Value::Amount(money(amount)),
            }),
            charge_keys: match &discount.applies_to {
                DiscountTarget::Invoice => Vec::new(),
                DiscountTarget::Charges { charges } => charges
                    .iter()
                    .map(|charge| charge.as_str().to_owned())
                    .collect(),
            },
            starts_at: maybe_timestamp(discount.starts_at),
            duration: match discount.duration {
                DiscountDuration::Forever => None,
                DiscountDuration::Periods { count } => Some(Duration::Periods(count)),
                DiscountDuration::Until { ends_at } => {
                    Some(Duration::Until(super::timestamp(ends_at)))
                }
            },
        })
        .collect();
    let usage_discounts = set
        .usage_discounts
        .iter()
        .map(|usage_discount| wire::UsageDiscount {
            name: usage_discount.name.clone(),
            meter_code: usage_discount.meter.as_str().to_owned(),
            free_units: Some(decimal_value(usage_discount.free_units)),
        })
        .collect();
    TermSetValue {
        overrides,
        discounts,
        usage_discounts,
        minimum: set.minimum.as_ref().map(money),
        maximum: set.maximum.as_ref().map(money),
    }
}

/// A domain verdict on terms as a violation on `{field}.{term path}` (`terms.overrides[0]`):
/// rule `currency_mismatch` for an amount in another currency, `invalid_terms` for every
/// other rule between the terms and the plan version. Errors that name no term (the plan
/// version, a period) are on `field` itself.
pub fn terms_violation(error: &TermsError, field: &str) -> Violation {
    let term = match error {
        TermsError::CurrencyMismatch { term, .. }
        | TermsError::UnknownCharge { term, .. }
        | TermsError::RemovedCharge { term, .. }
        | TermsError::DuplicateCharge { term, .. }
        | TermsError::RecurringChargeNeedsQuantityModel { term, .. }
        | TermsError::OverrideUsageMismatch { term, .. }
        | TermsError::OverlappingOverrides { term, .. }
        | TermsError::InvalidPrice { term, .. }
        | TermsError::PercentageOutOfRange { term, .. }
        | TermsError::NegativeAmount { term, .. }
        | TermsError::NotPositive { term, .. }
        | TermsError::NotInMinorUnits { term, .. }
        | TermsError::NegativeQuantity { term, .. }
        | TermsError::MeterNotPricedOnUnits { term, .. }
        | TermsError::MinimumAboveMaximum { term, .. }
        | TermsError::EmptyRange { term, .. }
        | TermsError::BeforeContractStart { term, .. }
        | TermsError::ZeroPeriods { term } => Some(term.clone()),
        TermsError::OverlappingPhases { second, .. } => Some(format!("ramp[{second}]")),
        TermsError::PlanMismatch { .. }
        | TermsError::PeriodNotOnCycle { .. }
        | TermsError::InvalidBilledEarlier { .. }
        | TermsError::Pricing { .. }
        | TermsError::Overflow
        | TermsError::Period(_)
        | TermsError::Proration(_)
        | TermsError::Money(_)
        | TermsError::Invoice(_) => None,
    };
    let rule = match error {
        TermsError::CurrencyMismatch { .. } => rule::CURRENCY_MISMATCH,
        _ => rule::INVALID_TERMS,
    };
    let path = match term.as_deref() {
        None | Some("") => field.to_owned(),
        Some(term) => format!("{field}.{term}"),
    };
    violation(&path, rule, error.to_string())
}
