//! The configuration of a contract's terms, as sales writes it (before validation).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{ChargeCode, MeterCode};
use crate::money::{Currency, Money};
use crate::plan::PlanCharge;
use crate::pricing::ChargePrice;
use crate::subscription::PlanRef;

/// Everything a contract adds on top of a published plan version, before validation
/// (see [`SubscriptionTerms::new`](super::SubscriptionTerms::new) for the rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionTermsSpec {
    /// The plan version the terms sit on.
    pub plan: PlanRef,
    /// The plan's currency; every amount of the terms is in it.
    pub currency: Currency,
    /// When the contract starts: the subscription's start. Period 1 is the period that
    /// starts here (a stub, with a calendar anchor).
    pub starts_at: DateTime<Utc>,
    /// The terms in force for the whole contract, under every ramp phase.
    #[serde(default)]
    pub base: TermSet,
    /// Charges the contract adds to the plan's, for the whole contract.
    #[serde(default)]
    pub added_charges: Vec<PlanCharge>,
    /// Plan charges the contract does not bill.
    #[serde(default)]
    pub removed_charges: Vec<ChargeCode>,
    /// Ramp phases: date ranges with terms of their own, on top of `base`.
    #[serde(default)]
    pub ramp: Vec<RampPhase>,
    /// Progressive billing: invoice the period's usage so far whenever what is not yet
    /// billed reaches this amount.
    #[serde(default)]
    pub invoicing_threshold: Option<Money>,
}

impl SubscriptionTermsSpec {
    /// No terms: the plan version as published, from `starts_at`.
    pub fn list_price(
        plan: PlanRef,
        currency: Currency,
        starts_at: DateTime<Utc>,
    ) -> SubscriptionTermsSpec {
        SubscriptionTermsSpec {
            plan,
            currency,
            starts_at,
            base: TermSet::default(),
            added_charges: Vec::new(),
            removed_charges: Vec::new(),
            ramp: Vec::new(),
            invoicing_threshold: None,
        }
    }
}

/// Terms that can be in force for the whole contract or for one ramp phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSet {
    /// Prices that replace a charge's list price for a time range.
    #[serde(default)]
    pub overrides: Vec<PriceOverride>,
    /// Percentage and fixed discounts, applied in the documented order.
    #[serde(default)]
    pub discounts: Vec<Discount>,
    /// Free units of a meter per period.
    #[serde(default)]
    pub usage_discounts: Vec<UsageDiscount>,
    /// The least the period's usage bills (a true-up line tops it up).
    #[serde(default)]
    pub minimum: Option<Money>,
    /// The most the period's usage bills (a cap adjustment line takes off the excess).
    #[serde(default)]
    pub maximum: Option<Money>,
}

/// A price that replaces a charge's list price while its range contains a period's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceOverride {
    /// The charge (of the plan, or added by the contract).
    pub charge: ChargeCode,
    /// The replacement.
    pub price: OverridePrice,
    /// In force from (inclusive); `None`: from the start of the contract or phase.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// In force until (exclusive); `None`: open-ended.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
}

/// What an override replaces the list price with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OverridePrice {
    /// A whole charge price: its own model, free units, minimum and maximum.
    Price {
        /// The replacement price.
        price: ChargePrice,
    },
    /// A per-unit price in place of the list model, keeping the list charge's free units,
    /// minimum and maximum. Only for charges priced on one quantity.
    UnitPrice {
        /// Price per unit.
        unit_price: Decimal,
    },
}

/// A discount on the invoice or on named charges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// What the invoice line says ("Launch discount").
    pub name: String,
    /// How much.
    pub value: DiscountValue,
    /// On which lines.
    pub applies_to: DiscountTarget,
    /// Applies to the periods starting at or after this; `None`: the start of the contract
    /// or phase.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// For how long.
    pub duration: DiscountDuration,
}

/// How much a discount takes off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountValue {
    /// A percentage (0–100) of what each line it applies to has left.
    Percentage {
        /// The percentage (`20` is 20 %).
        percent: Decimal,
    },
    /// A fixed amount per period, spread over the lines it applies to.
    Amount {
        /// The amount, in whole minor units.
        amount: Money,
    },
}

/// Which lines a discount applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountTarget {
    /// Every charge line of the invoice.
    Invoice,
    /// The lines of these charges.
    Charges {
        /// The charges.
        charges: Vec<ChargeCode>,
    },
}

impl DiscountTarget {
    /// Whether the line of `charge` is discounted.
    pub fn covers(&self, charge: &ChargeCode) -> bool {
        match self {
            DiscountTarget::Invoice => true,
            DiscountTarget::Charges { charges } => charges.contains(charge),
        }
    }
}

/// How long a discount lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountDuration {
    /// Every period from its start.
    Forever,
    /// The first `count` periods starting at or after its start.
    Periods {
        /// How many periods; at least 1.
        count: u32,
    },
    /// The periods starting before this instant (and at or after its start).
    Until {
        /// The first instant at which a period no longer gets it.
        ends_at: DateTime<Utc>,
    },
}

/// Free units of a meter every period, taken off its usage before pricing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDiscount {
    /// What the invoice line says ("10k tokens included").
    pub name: String,
    /// The meter.
    pub meter: MeterCode,
    /// Free units per period.
    pub free_units: Decimal,
}

/// A ramp phase: its terms apply, on top of the contract's base terms, to the periods that
/// start inside `[starts_at, ends_at)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RampPhase {
    /// What the invoice says ("Year 1, months 1–3").
    pub name: String,
    /// First instant of the phase.
    pub starts_at: DateTime<Utc>,
    /// First instant after the phase; `None`: until the contract ends.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The phase's terms.
    #[serde(default)]
    pub terms: TermSet,
}

impl RampPhase {
    /// Whether `instant` falls in the phase.
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        in_range(self.starts_at, self.ends_at, instant)
    }
}

/// Whether `instant` is in `[starts_at, ends_at)`; a missing end is open.
pub(crate) fn in_range(
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    instant: DateTime<Utc>,
) -> bool {
    starts_at <= instant && ends_at.is_none_or(|end| instant < end)
}

/// Whether two half-open ranges share an instant; a missing end is open.
pub(crate) fn ranges_overlap(
    first: (DateTime<Utc>, Option<DateTime<Utc>>),
    second: (DateTime<Utc>, Option<DateTime<Utc>>),
) -> bool {
    let first_before_second_ends = second.1.is_none_or(|end| first.0 < end);
    let second_before_first_ends = first.1.is_none_or(|end| second.0 < end);
    first_before_second_ends && second_before_first_ends
}
