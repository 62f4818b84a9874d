//! Quotes: a contract offered before it is signed — its status machine, the end of its
//! term, and the preview of what it commits the customer to, priced by [`crate::terms`]
//! (the same code that prices the subscription's invoices once the quote is accepted).
//!
//! # Statuses
//!
//! `draft → open → accepted | declined | expired | canceled`, and a draft may be canceled.
//! An open quote is immutable: a change is a new revision. `expired` is what an open quote
//! whose expiry has passed reads as ([`QuoteStatus::at`]); it can no longer be accepted.
//!
//! # Term
//!
//! A quote's term is a whole number of months that is a whole number of the plan's
//! billing periods (12 months of a monthly or quarterly plan, 24 of a yearly one); plans
//! billed every day or week are not quoted in months. The contract ends on the cycle
//! boundary that many periods after the start ([`contract_end`]), so every period of the
//! preview is a full one and nothing in it needs proration.
//!
//! # Preview ([`preview`])
//!
//! Every period of the contract `[starts_at, ends_at)` priced with no usage: recurring
//! fees after their overrides and discounts, plus the minimum spend (a true-up of zero
//! usage is the whole minimum). That is what the customer is committed to; usage above the
//! minimum is not forecast. `first_period` is the first period's amount, `recurring` the
//! amount of each period after it when they are all the same (the first period's when it is the only one; a ramp or a discount for a
//! few periods makes it `None`: read `periods`), `total_contract_value` the sum.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use rust_decimal_macros::dec;
//! use tally_domain::ids::{ChargeCode, PlanId};
//! use tally_domain::money::{Currency, Money, RoundingMode};
//! use tally_domain::period::BillingInterval;
//! use tally_domain::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
//! use tally_domain::pricing::{ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PriceModel};
//! use tally_domain::quote::{contract_end, preview};
//! use tally_domain::subscription::PlanRef;
//! use tally_domain::terms::*;
//!
//! let plan = Plan::new(PlanSpec {
//!     id: PlanId::parse("plan_ai").unwrap(), version: 1, name: "AI".into(),
//!     currency: Currency::USD, interval: BillingInterval::Month,
//!     anchor: AnchorPolicy::SubscriptionStart, trial_days: 0,
//!     minimum_commitment: Some(dec!(500)),
//!     charges: vec![PlanCharge {
//!         code: ChargeCode::parse("platform").unwrap(), name: "Platform".into(),
//!         kind: ChargeKind::Recurring { timing: BillingTiming::InAdvance },
//!         price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::Flat(
//!             FlatFee::new(FlatFeeSpec { amount: dec!(100) }).unwrap()))).unwrap(),
//!     }],
//! }).unwrap();
//! let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
//! let mut spec = SubscriptionTermsSpec::list_price(PlanRef::from(&plan), Currency::USD, start);
//! spec.base.discounts = vec![Discount {
//!     name: "Launch".into(), starts_at: None, duration: DiscountDuration::Periods { count: 3 },
//!     value: DiscountValue::Percentage { percent: dec!(50) },
//!     applies_to: DiscountTarget::Invoice,
//! }];
//! let terms = SubscriptionTerms::new(spec, &plan).unwrap();
//! let end = contract_end(&terms, 12).unwrap();
//! assert_eq!(end, Utc.with_ymd_and_hms(2028, 1, 1, 0, 0, 0).unwrap());
//! let preview = preview(&terms, end, RoundingMode::HalfEven).unwrap();
//! assert_eq!(preview.first_period.amount(), dec!(550.00)); // 50.00 fee + 500.00 minimum
//! assert_eq!(preview.recurring, None); // 550.00 twice more, then 600.00
//! assert_eq!(preview.total_contract_value.amount(), dec!(7050.00)); // 3 × 550.00 + 9 × 600.00
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyError, RoundingMode};
use crate::period::{BillingInterval, Period, PeriodError};
use crate::terms::{PeriodUsage, PricingScope, SubscriptionTerms, TermsError};
use crate::terms::{price_period, terms_for_period};

/// The most months a quote's term may have (ten years).
pub const MAX_TERM_MONTHS: u32 = 120;

/// A quote that cannot be priced or moved as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The term is not a whole number of the plan's billing periods (or out of range).
    #[error(
        "a term of {months} months is not a whole number of {interval:?} billing periods (1–{MAX_TERM_MONTHS} months)"
    )]
    TermNotWholePeriods {
        /// The term asked for.
        months: u32,
        /// The plan's interval.
        interval: BillingInterval,
    },
    /// The contract's end is not a boundary of the subscription's billing cycle.
    #[error(
        "the contract end {ends_at} is not a billing period boundary (the period is {period:?})"
    )]
    EndNotOnCycle {
        /// The end.
        ends_at: DateTime<Utc>,
        /// The period it falls in.
        period: Period,
    },
    /// The contract ends at or before it starts.
    #[error("the contract ends at {ends_at}, not after its start {starts_at}")]
    EmptyContract {
        /// The start.
        starts_at: DateTime<Utc>,
        /// The end.
        ends_at: DateTime<Utc>,
    },
    /// A move the status machine does not allow.
    #[error("a {from} quote cannot become {to}")]
    Transition {
        /// The status now.
        from: QuoteStatus,
        /// The status asked for.
        to: QuoteStatus,
    },
    /// The terms refuse the period.
    #[error(transparent)]
    Terms(#[from] TermsError),
    /// Period arithmetic out of range.
    #[error(transparent)]
    Period(#[from] PeriodError),
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Where a quote is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuoteStatus {
    /// Being written; may be canceled or finalized.
    Draft,
    /// Sent to the customer, numbered, immutable; waits for a signature until it expires.
    Open,
    /// Signed: the subscription exists.
    Accepted,
    /// The customer said no.
    Declined,
    /// Open past its expiry (never stored as such: read with [`QuoteStatus::at`]).
    Expired,
    /// Withdrawn, or superseded by a later revision.
    Canceled,
}

impl QuoteStatus {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            QuoteStatus::Draft => "draft",
            QuoteStatus::Open => "open",
            QuoteStatus::Accepted => "accepted",
            QuoteStatus::Declined => "declined",
            QuoteStatus::Expired => "expired",
            QuoteStatus::Canceled => "canceled",
        }
    }

    /// Whether the machine allows `self → to`: a draft is finalized (open) or canceled; an
    /// open quote is accepted, declined, canceled, or expires. Nothing leaves the others.
    pub fn can_transition_to(self, to: QuoteStatus) -> bool {
        use QuoteStatus::{Accepted, Canceled, Declined, Draft, Expired, Open};
        match self {
            Draft => matches!(to, Open | Canceled),
            Open => matches!(to, Accepted | Declined | Expired | Canceled),
            Accepted | Declined | Expired | Canceled => false,
        }
    }

    /// `self → to`, or [`QuoteError::Transition`].
    pub fn transition(self, to: QuoteStatus) -> Result<QuoteStatus, QuoteError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(QuoteError::Transition { from: self, to })
        }
    }

    /// The status a quote stored as `self` has at `now`: an open quote whose expiry has
    /// passed (`now ≥ expires_at`) is expired.
    pub fn at(self, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> QuoteStatus {
        match self {
            QuoteStatus::Open if now >= expires_at => QuoteStatus::Expired,
            other => other,
        }
    }
}

impl std::fmt::Display for QuoteStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The end of a contract of `months` from the terms' start: the billing cycle boundary
/// that many periods later (see the module docs for which terms are allowed).
pub fn contract_end(terms: &SubscriptionTerms, months: u32) -> Result<DateTime<Utc>, QuoteError> {
    let cycle = terms.cycle();
    let interval = cycle.interval();
    let per_period = match interval {
        BillingInterval::Month => 1,
        BillingInterval::Quarter => 3,
        BillingInterval::Year => 12,
        BillingInterval::Day | BillingInterval::Week => 0,
    };
    if per_period == 0
        || months == 0
        || months > MAX_TERM_MONTHS
        || !months.is_multiple_of(per_period)
    {
        return Err(QuoteError::TermNotWholePeriods { months, interval });
    }
    let first = cycle.index_of(terms.spec().starts_at)?;
    Ok(cycle.boundary(first + i64::from(months / per_period))?)
}

/// One period of a preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodPreview {
    /// The billing period.
    pub period: Period,
    /// The ramp phase in force, by name.
    pub phase: Option<String>,
    /// What the period bills with no usage.
    pub amount: Money,
}

/// What a quote commits the customer to (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotePreview {
    /// The first period's amount.
    pub first_period: Money,
    /// The amount of every later period, when they are all equal.
    pub recurring: Option<Money>,
    /// The sum over the contract.
    pub total_contract_value: Money,
    /// Every period, in order.
    pub periods: Vec<PeriodPreview>,
}

/// Prices every period of `[terms' start, ends_at)` with no usage (module docs).
/// `ends_at` must be a boundary of the terms' billing cycle after the start.
pub fn preview(
    terms: &SubscriptionTerms,
    ends_at: DateTime<Utc>,
    rounding: RoundingMode,
) -> Result<QuotePreview, QuoteError> {
    let starts_at = terms.spec().starts_at;
    if ends_at <= starts_at {
        return Err(QuoteError::EmptyContract { starts_at, ends_at });
    }
    let cycle = terms.cycle();
    let end_period = cycle.period_containing(ends_at)?;
    if end_period.start() != ends_at {
        return Err(QuoteError::EndNotOnCycle {
            ends_at,
            period: end_period,
        });
    }
    let no_usage = PeriodUsage::new();
    let mut periods = Vec::new();
    let mut start = starts_at;
    while start < ends_at {
        let end = cycle.period_containing(start)?.end().min(ends_at);
        let period = Period::new(start, end)?;
        let effective = terms_for_period(terms, &period)?;
        let priced = price_period(&effective, &no_usage, rounding, PricingScope::WholePeriod)?;
        periods.push(PeriodPreview {
            period,
            phase: effective.phase().map(|phase| phase.value.clone()),
            amount: priced.total()?,
        });
        start = end;
    }
    let currency = terms.currency();
    let first_period = periods
        .first()
        .map_or(Money::zero(currency), |first| first.amount);
    let later = periods.get(1..).unwrap_or_default();
    let recurring = match later.first() {
        None => Some(first_period),
        Some(second) => later
            .iter()
            .all(|period| period.amount == second.amount)
            .then_some(second.amount),
    };
    let total_contract_value = Money::sum(currency, periods.iter().map(|period| &period.amount))?;
    Ok(QuotePreview {
        first_period,
        recurring,
        total_contract_value,
        periods,
    })
}

#[cfg(test)]
#[path = "quote_tests.rs"]
mod tests;
