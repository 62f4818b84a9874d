//! Tally's billing domain, pure: no I/O, no async, no clocks (instants are passed in).
//!
//! | module | what it holds |
//! |---|---|
//! | [`exact`] | decimal sums and products that are exact or refused, never silently rounded |
//! | [`bounds`] | the bounds on prices, aggregates and line amounts that keep them exact |
//! | [`money`] | ISO 4217 [`Currency`](money::Currency), [`Money`](money::Money) with checked arithmetic, [`RoundingMode`](money::RoundingMode) and the one [`LINE_ROUNDING`](money::LINE_ROUNDING), largest-remainder allocation |
//! | [`ids`] | prefixed, validated ids (`cus_…`, `sub_…`, `inv_…`, `plan_…`), meter codes, event ids |
//! | [`event`] | [`UsageEvent`](event::UsageEvent) and its validation, one [`FieldError`](event::FieldError) per broken rule |
//! | [`meter`] | [`Meter`](meter::Meter), [`Aggregation`](meter::Aggregation), filters, group keys, the order-independent [`AggregateState`](meter::AggregateState) |
//! | [`pricing`] | the exhaustive [`PriceModel`](pricing::PriceModel), [`ChargePrice`](pricing::ChargePrice) (free units, minimum, maximum), [`PriceBreakdown`](pricing::PriceBreakdown) |
//! | [`plan`] | versioned [`Plan`](plan::Plan)s with recurring and usage charges, trial, minimum commitment |
//! | [`period`] | [`BillingCycle`](period::BillingCycle) and [`Period`](period::Period) arithmetic in UTC with month-end anchors |
//! | [`proration`] | [`prorate`](proration::prorate): a fee split over parts of a period, exact to the minor unit |
//! | [`quote`] | the quote [`QuoteStatus`](quote::QuoteStatus) machine, a contract's end, the [`preview`](quote::preview) of what it commits to |
//! | [`subscription`] | the [`SubscriptionStatus`](subscription::SubscriptionStatus) state machine and [`PlanRef`](subscription::PlanRef) |
//! | [`invoice`] | [`Invoice`](invoice::Invoice) lines (precise and rounded), totals, status machine, credit notes |
//! | [`credit`] | prepaid [`CreditGrant`](credit::CreditGrant)s and their burn-down order |
//! | [`ledger`] | double-entry [`Transaction`](ledger::Transaction)s that balance per currency, reversals, the [`Fact`](ledger::Fact)s they record |
//!
//! Every module has one error enum; every constructor that can be given a bad value
//! validates it, so a value of a domain type is a valid one.

#![deny(missing_docs)]

pub mod bounds;
pub mod credit;
pub mod event;
pub mod exact;
pub mod finance;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod meter;
pub mod money;
pub mod period;
pub mod plan;
pub mod pricing;
pub mod proration;
pub mod quote;
pub mod subscription;
pub mod terms;

#[cfg(test)]
mod test_support;
