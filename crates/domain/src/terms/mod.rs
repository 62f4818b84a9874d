//! Contract terms: what a negotiated contract adds on top of a published plan version, and
//! how a period is priced under them. Pure: rating (live cost) and invoicing (invoices)
//! price a subscription's terms with this one code, so they always agree.
//!
//! | item | what it does |
//! |---|---|
//! | [`SubscriptionTermsSpec`] | the terms as written: overrides, added and removed charges, discounts, usage discounts, ramp phases, minimum, maximum, invoicing threshold |
//! | [`SubscriptionTerms`] | the spec checked against its plan version ([`SubscriptionTerms::new`]) |
//! | [`terms_for_period`] | the [`EffectiveTerms`] in force for one billing period |
//! | [`price_period`] | the period's [`TermsLine`]s, each with the [`TermStep`]s that explain it |
//! | [`threshold_invoice`], [`period_end_invoice`] | progressive billing within a period |
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use rust_decimal_macros::dec;
//! use tally_domain::ids::{ChargeCode, MeterCode, PlanId};
//! use tally_domain::money::{Currency, Money, RoundingMode};
//! use tally_domain::period::{BillingInterval, Period};
//! use tally_domain::plan::{AnchorPolicy, ChargeKind, Plan, PlanCharge, PlanSpec};
//! use tally_domain::pricing::{ChargePrice, ChargePriceSpec, PerUnit, PerUnitSpec, PriceModel};
//! use tally_domain::subscription::PlanRef;
//! use tally_domain::terms::*;
//!
//! let tokens = ChargeCode::parse("tokens").unwrap();
//! let plan = Plan::new(PlanSpec {
//!     id: PlanId::parse("plan_ai").unwrap(), version: 1, name: "AI".into(),
//!     currency: Currency::USD, interval: BillingInterval::Month, anchor: AnchorPolicy::Calendar,
//!     trial_days: 0, minimum_commitment: None,
//!     charges: vec![PlanCharge {
//!         code: tokens.clone(), name: "Tokens".into(),
//!         kind: ChargeKind::Usage { meter: MeterCode::parse("tokens").unwrap() },
//!         price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::PerUnit(
//!             PerUnit::new(PerUnitSpec { unit_price: dec!(0.01) }).unwrap()))).unwrap(),
//!     }],
//! }).unwrap();
//! let month = |m| Period::new(
//!     Utc.with_ymd_and_hms(2026, m, 1, 0, 0, 0).unwrap(),
//!     Utc.with_ymd_and_hms(2026, m + 1, 1, 0, 0, 0).unwrap(),
//! ).unwrap();
//! let mut spec = SubscriptionTermsSpec::list_price(PlanRef::from(&plan), Currency::USD, month(1).start());
//! spec.base.discounts = vec![
//!     // Written first, applied second: fixed discounts come after percentages.
//!     Discount {
//!         name: "Credit".into(), starts_at: None, duration: DiscountDuration::Forever,
//!         value: DiscountValue::Amount { amount: Money::new(dec!(30), Currency::USD) },
//!         applies_to: DiscountTarget::Charges { charges: vec![tokens.clone()] },
//!     },
//!     Discount {
//!         name: "Launch".into(), starts_at: None, duration: DiscountDuration::Periods { count: 3 },
//!         value: DiscountValue::Percentage { percent: dec!(20) },
//!         applies_to: DiscountTarget::Invoice,
//!     },
//! ];
//! let terms = SubscriptionTerms::new(spec, &plan).unwrap();
//! let usage = PeriodUsage::from([(tokens.clone(), ChargeUsage::Quantity(dec!(100000)))]);
//! let bill = |m| {
//!     let effective = terms_for_period(&terms, &month(m)).unwrap();
//!     let priced = price_period(&effective, &usage, RoundingMode::HalfEven, PricingScope::WholePeriod).unwrap();
//!     priced.total().unwrap().amount()
//! };
//! assert_eq!(bill(1), dec!(770.00)); // 1 000.00 − 20 % − 30.00
//! assert_eq!(bill(4), dec!(970.00)); // the 20 % lasted 3 periods
//! ```
//!
//! # Validation ([`SubscriptionTerms::new`])
//!
//! The first broken rule is the error; every error names the term by its path
//! (`overrides[0]`, `ramp[1].discounts[2]`, `added_charges[0]`, `invoicing_threshold`):
//! - the terms name the plan version they are checked against, in its currency; every
//!   amount of the terms is in that currency ([`TermsError::CurrencyMismatch`]);
//! - a removed charge is a plan charge, named once; an added charge has a code of its own
//!   and, if recurring, a model priced on a quantity;
//! - an override, or a discount on named charges, names a charge the contract bills (the
//!   plan's less the removed ones, plus the added ones): a removed charge is
//!   [`TermsError::RemovedCharge`], any other [`TermsError::UnknownCharge`];
//! - an override prices the same kind of usage as the list price (a matrix charge may
//!   also take a quantity model, which prices the sum of its groups); a unit-price
//!   override is for a charge priced on one quantity, and keeps the list charge's free
//!   units, minimum and maximum; two overrides of one charge in one term set may not
//!   overlap in time;
//! - a percentage is within 0–100; fixed discounts, minimums, maximums and the threshold
//!   are not negative and are in whole minor units (the threshold is above zero); a
//!   minimum is not above the maximum in force beside it (base, or phase over base);
//! - free units are not negative, and their meter is read by a usage charge priced on
//!   units (a quantity or matrix model: transactions have no units to give away);
//! - ranges are half-open `[starts_at, ends_at)` and not empty; ramp phases do not
//!   overlap; a discount does not start before the contract; `Periods { count }` is ≥ 1.
//!
//! # The terms in force ([`terms_for_period`])
//!
//! Periods are those of the subscription's cycle (the plan's, from the contract start):
//! period 1 starts at the contract start (a stub with a calendar anchor), the others on
//! cycle boundaries; the last may end early. Any other span is
//! [`TermsError::PeriodNotOnCycle`]. Everything is decided by the **period's start**:
//! - the ramp phase is the one whose range contains it; a phase's terms apply **on top
//!   of** the base terms: both sets of discounts and free units apply (base first); a
//!   phase's override of a charge wins over a base override of it; a phase's minimum or
//!   maximum replaces the base one;
//! - an override is in force when its range contains the period's start (its start
//!   defaults to the contract's or phase's), so it prices whole periods;
//! - a discount applies to the periods starting at or after its start (default: the
//!   contract's or phase's start): `Forever`; `Periods { count }`: the first `count` such
//!   periods (a stub at the contract start counts as one); `Until { ends_at }`: those
//!   starting before `ends_at`;
//! - the minimum is the phase's, else the base terms', else the plan version's minimum
//!   commitment; the maximum is the phase's, else the base terms'. For a stub period
//!   both are the stub's share by whole UTC days of the full cycle period, in whole minor
//!   units by [`prorate`](crate::proration::prorate) (16 of 31 days of 1 000.00 is
//!   516.13); a minimum above the maximum is lowered to it.
//!
//! # Pricing order ([`price_period`])
//!
//! **usage discount → pricing (override or list price) → percentage discount → fixed
//! discount → minimum / maximum**, each step recorded on the line it changes:
//! 1. *Usage discounts* take free units off the usage of the charges reading their meter,
//!    once per period: charges in contract order, groups in key order, discounts in order.
//! 2. *Pricing*: the override in force, else the list [`ChargePrice`](crate::pricing::ChargePrice),
//!    with [`ChargePrice::price_net`](crate::pricing::ChargePrice::price_net) as rating
//!    does (a net quantity below zero prices as zero). The step keeps the catalog's
//!    [`PriceBreakdown`](crate::pricing::PriceBreakdown); an override's step also states
//!    the list amount it replaced. A recurring charge absent from the usage has quantity 1.
//! 3. *Percentage discounts*, in order, each a percentage of what the line has left
//!    (so 20 % then 10 % is 28 %); on the invoice, the same percentage of every line.
//! 4. *Fixed discounts*, in order, each an amount per period spread over the lines it
//!    covers in proportion to what each has left, in whole minor units (largest remainder,
//!    [`Money::allocate`](crate::money::Money::allocate)) and never more than a line has
//!    left (each line's weight is its amount rounded down); what no line can absorb is not
//!    given (a discount never pays out). Fixed amounts are not prorated for a stub.
//! 5. Each charge line is **rounded once** with the invoice's [`RoundingMode`](crate::money::RoundingMode)
//!    ([`Money::round`](crate::money::Money::round), as [`InvoiceLine::new`](crate::invoice::InvoiceLine::new)).
//! 6. *Minimum / maximum* count the usage lines' rounded amounts (the plan's minimum
//!    commitment counts usage charges; recurring fees are neither counted nor capped):
//!    below the minimum, a [`TermsLineKind::MinimumTrueUp`] line tops up to it; above the
//!    maximum, a [`TermsLineKind::MaximumAdjustment`] line takes the excess off. Both are
//!    whole minor units, so the period bills the minimum or the cap to the cent.
//!
//! No charge line is negative: discounts stop at zero and the true-up is ≥ 0; only the cap
//! adjustment and the deduction of earlier threshold invoices take money off.
//!
//! # Progressive billing ([`threshold_invoice`], [`period_end_invoice`])
//!
//! Every invoice of a period prices the period's usage **from its start** and deducts what
//! the period's earlier threshold invoices billed, on one
//! [`TermsLineKind::BilledEarlier`] line. Free units are therefore used once per period,
//! tiers see the period's whole volume, and the invoices of a period add up to the one
//! invoice it would get without a threshold, to the minor unit. A threshold invoice prices
//! usage charges only, applies the cap but not the minimum (the period is not over), and
//! is due when what it bills (its total) reaches the threshold; the period-end invoice
//! prices everything (so an invoice-wide fixed discount is spread over the usage lines on
//! a threshold invoice, and over every line at the period's end: the deduction keeps the
//! sum right either way).
//!
//! # Left to the services
//!
//! Storing terms with the subscription and publishing them to rating; deciding when a
//! threshold is checked; prepaid commits (credit grants); quotes; prorating recurring fees
//! of a stub (invoicing's proration); invoicing a mid-period change immediately.

mod contract;
mod effective;
mod line;
mod price;
mod progressive;
mod spec;

#[cfg(test)]
mod charges_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod validation_tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use contract::SubscriptionTerms;
pub use effective::{
    Commitment, EffectiveCharge, EffectiveTerms, InForce, PeriodShare, terms_for_period,
};
pub use line::{PricedPeriod, TermStep, TermsLine, TermsLineKind};
pub use price::{ChargeUsage, PeriodUsage, PricingScope, price_period};
pub use progressive::{period_end_invoice, threshold_invoice};
pub use spec::{
    Discount, DiscountDuration, DiscountTarget, DiscountValue, OverridePrice, PriceOverride,
    RampPhase, SubscriptionTermsSpec, TermSet, UsageDiscount,
};

use crate::ids::{ChargeCode, MeterCode};
use crate::invoice::InvoiceError;
use crate::money::{Currency, Money, MoneyError};
use crate::period::{Period, PeriodError};
use crate::pricing::PricingError;
use crate::proration::ProrationError;
use crate::subscription::PlanRef;

/// Terms that break a rule, or a period that cannot be priced under them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    /// The terms name another plan version than the one given.
    #[error("the terms are for {terms:?}, not {plan:?}")]
    PlanMismatch {
        /// The version the terms name.
        terms: PlanRef,
        /// The version given.
        plan: PlanRef,
    },
    /// An amount, or the terms, in another currency than the plan's.
    #[error("{term}: expected {expected}, found {found}")]
    CurrencyMismatch {
        /// The term.
        term: String,
        /// The plan's currency.
        expected: Currency,
        /// The currency given.
        found: Currency,
    },
    /// A term names a charge the plan does not have (or removes one twice).
    #[error("{term}: the plan has no charge {charge}")]
    UnknownCharge {
        /// The term.
        term: String,
        /// The charge.
        charge: ChargeCode,
    },
    /// A term names a plan charge the contract removes.
    #[error("{term}: charge {charge} is removed by the contract")]
    RemovedCharge {
        /// The term.
        term: String,
        /// The charge.
        charge: ChargeCode,
    },
    /// An added charge reuses a code of the plan or of another added charge.
    #[error("{term}: charge code {charge} is already used")]
    DuplicateCharge {
        /// The term.
        term: String,
        /// The charge.
        charge: ChargeCode,
    },
    /// A recurring charge (added, or overridden) priced on something other than a quantity.
    #[error("{term}: a recurring charge cannot use {model} pricing")]
    RecurringChargeNeedsQuantityModel {
        /// The term.
        term: String,
        /// The model's name.
        model: &'static str,
    },
    /// An override prices another kind of usage than the charge's list price.
    #[error("{term}: charge {charge} is priced {list_model}, which {model} cannot replace")]
    OverrideUsageMismatch {
        /// The term.
        term: String,
        /// The charge.
        charge: ChargeCode,
        /// The list model.
        list_model: &'static str,
        /// The override's model.
        model: &'static str,
    },
    /// Two overrides of one charge in force at the same time.
    #[error("{term} and {other} both override {charge} at the same time")]
    OverlappingOverrides {
        /// The later override.
        term: String,
        /// The earlier one.
        other: String,
        /// The charge.
        charge: ChargeCode,
    },
    /// An override's price is invalid.
    #[error("{term}: {source}")]
    InvalidPrice {
        /// The term.
        term: String,
        /// Why.
        source: PricingError,
    },
    /// A percentage outside 0–100.
    #[error("{term}: percentage {percent} is outside 0–100")]
    PercentageOutOfRange {
        /// The term.
        term: String,
        /// The percentage.
        percent: Decimal,
    },
    /// A negative amount.
    #[error("{term}: {amount} is negative")]
    NegativeAmount {
        /// The term.
        term: String,
        /// The amount.
        amount: Money,
    },
    /// An amount that must be above zero.
    #[error("{term}: {amount} must be above zero")]
    NotPositive {
        /// The term.
        term: String,
        /// The amount.
        amount: Money,
    },
    /// An amount with more decimal places than its currency's minor unit.
    #[error("{term}: {amount} is not in whole minor units")]
    NotInMinorUnits {
        /// The term.
        term: String,
        /// The amount.
        amount: Money,
    },
    /// Negative free units.
    #[error("{term}: free units {quantity} are negative")]
    NegativeQuantity {
        /// The term.
        term: String,
        /// The quantity.
        quantity: Decimal,
    },
    /// Free units of a meter no usage charge prices on units.
    #[error("{term}: no usage charge prices meter {meter} on units")]
    MeterNotPricedOnUnits {
        /// The term.
        term: String,
        /// The meter.
        meter: MeterCode,
    },
    /// A minimum above the maximum in force beside it.
    #[error("{term}: minimum {minimum} is above maximum {maximum}")]
    MinimumAboveMaximum {
        /// The term set (`base` or `ramp[i]`).
        term: String,
        /// The minimum.
        minimum: Money,
        /// The maximum.
        maximum: Money,
    },
    /// A range that ends at or before its start.
    #[error("{term}: range {starts_at} .. {ends_at} is empty")]
    EmptyRange {
        /// The term.
        term: String,
        /// Start.
        starts_at: DateTime<Utc>,
        /// End.
        ends_at: DateTime<Utc>,
    },
    /// A discount that starts before the contract.
    #[error("{term}: starts at {at}, before the contract starts at {contract_start}")]
    BeforeContractStart {
        /// The term.
        term: String,
        /// Its start.
        at: DateTime<Utc>,
        /// The contract's start.
        contract_start: DateTime<Utc>,
    },
    /// A discount for zero periods.
    #[error("{term}: a discount must last at least one period")]
    ZeroPeriods {
        /// The term.
        term: String,
    },
    /// Two ramp phases share an instant.
    #[error("ramp phases {first} and {second} overlap")]
    OverlappingPhases {
        /// The earlier phase's position.
        first: usize,
        /// The later phase's position.
        second: usize,
    },
    /// A span that is not a period of the subscription's cycle from the contract start.
    #[error("{period} is not a billing period of the contract starting at {contract_start}")]
    PeriodNotOnCycle {
        /// The span.
        period: Period,
        /// The contract's start.
        contract_start: DateTime<Utc>,
    },
    /// What an earlier threshold invoice billed must be a non-negative rounded amount in
    /// the terms' currency.
    #[error(
        "billed_earlier[{index}]: {amount} is not a rounded, non-negative amount in the terms' currency"
    )]
    InvalidBilledEarlier {
        /// Its position.
        index: usize,
        /// The amount.
        amount: Money,
    },
    /// A charge's usage could not be priced.
    #[error("charge {charge}: {source}")]
    Pricing {
        /// The charge.
        charge: ChargeCode,
        /// Why.
        source: PricingError,
    },
    /// An amount does not fit a 28-digit decimal exactly.
    #[error("arithmetic overflow while pricing terms")]
    Overflow,
    /// Period arithmetic failed.
    #[error(transparent)]
    Period(#[from] PeriodError),
    /// Proration failed (a plan minimum not in whole minor units, for a stub).
    #[error(transparent)]
    Proration(#[from] ProrationError),
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// An invoice line could not be built.
    #[error(transparent)]
    Invoice(#[from] InvoiceError),
}
