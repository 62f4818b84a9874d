//! Monthly recurring revenue: normalisation, what a subscription and a customer contribute,
//! movements between a customer's MRR states, and the rates built on them.
//!
//! MRR is kept at full `Decimal` precision; only [`round_for_report`] rounds (see the
//! [module docs](super) for the rules). Every rate is a fraction (0.2 = 20 %), or `None`
//! when its denominator is zero.

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{FinanceError, RecognitionDay};
use crate::money::{Currency, Money, MoneyError, RoundingMode};
use crate::period::BillingInterval;
use crate::subscription::SubscriptionStatus;

/// How often a recurring fee bills, for normalising it to a month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "unit", content = "count", rename_all = "snake_case")]
pub enum MrrInterval {
    /// Every N days: × 365 ÷ 12 ÷ N.
    Days(u32),
    /// Every N weeks: × 52 ÷ 12 ÷ N.
    Weeks(u32),
    /// Every N months: ÷ N (quarterly is 3, yearly 12).
    Months(u32),
}

impl From<BillingInterval> for MrrInterval {
    fn from(interval: BillingInterval) -> MrrInterval {
        match interval {
            BillingInterval::Day => MrrInterval::Days(1),
            BillingInterval::Week => MrrInterval::Weeks(1),
            BillingInterval::Month => MrrInterval::Months(1),
            BillingInterval::Quarter => MrrInterval::Months(3),
            BillingInterval::Year => MrrInterval::Months(12),
        }
    }
}

/// `fee` billed every `interval`, as a monthly amount (full precision).
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::finance::mrr::{normalise_to_month, MrrInterval};
/// use tally_domain::money::{Currency, Money};
///
/// // Stripe: "an annual subscription for $1,200 counts $100 towards MRR".
/// let annual = Money::new(dec!(1200.00), Currency::USD);
/// assert_eq!(normalise_to_month(annual, MrrInterval::Months(12)).unwrap().amount(), dec!(100));
/// let weekly = Money::new(dec!(12.00), Currency::USD);
/// assert_eq!(normalise_to_month(weekly, MrrInterval::Weeks(1)).unwrap().amount(), dec!(52));
/// ```
pub fn normalise_to_month(fee: Money, interval: MrrInterval) -> Result<Money, FinanceError> {
    // Multiply before dividing, so whole results (1200 ÷ 12) stay exact.
    let (per_year_or_month, divisor) = match interval {
        MrrInterval::Days(count) => (Decimal::from(365), 12 * u64::from(count)),
        MrrInterval::Weeks(count) => (Decimal::from(52), 12 * u64::from(count)),
        MrrInterval::Months(count) => (Decimal::ONE, u64::from(count)),
    };
    if divisor == 0 {
        return Err(FinanceError::ZeroInterval);
    }
    let scaled = fee.checked_mul(per_year_or_month)?;
    let monthly = scaled
        .amount()
        .checked_div(Decimal::from(divisor))
        .ok_or(MoneyError::Overflow)?;
    Ok(Money::new(monthly, fee.currency()))
}

/// A discount on a subscription's recurring fee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Discount {
    /// A percentage (0–100) off the fee.
    Percent {
        /// The percentage.
        percent: Decimal,
    },
    /// A fixed amount off each billing of the fee (normalised like the fee).
    Amount {
        /// The amount per interval.
        amount: Money,
    },
}

/// How long a discount lasts; only forever discounts reduce MRR (a limited one would make
/// MRR jump when it ends, with no customer action behind the movement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscountDuration {
    /// For the life of the subscription.
    Forever,
    /// For some periods only.
    Limited,
}

/// What MRR needs to know of a subscription at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionMrrInput {
    /// Its status.
    pub status: SubscriptionStatus,
    /// The recurring fee per interval (price × quantity), before discounts.
    pub fee: Money,
    /// How often the fee bills.
    pub interval: MrrInterval,
    /// Discounts, applied in order, each to what the ones before left.
    pub discounts: Vec<(Discount, DiscountDuration)>,
}

/// The subscription's MRR: its normalised fee less its forever discounts (never below zero)
/// while it is active or past due (still billing while dunning runs); zero while trialing,
/// paused or canceled.
pub fn subscription_mrr(subscription: &SubscriptionMrrInput) -> Result<Money, FinanceError> {
    let currency = subscription.fee.currency();
    match subscription.status {
        SubscriptionStatus::Active | SubscriptionStatus::PastDue => {}
        SubscriptionStatus::Trialing
        | SubscriptionStatus::Paused
        | SubscriptionStatus::Canceled => {
            return Ok(Money::zero(currency));
        }
    }
    let mut fee = subscription.fee;
    for (discount, duration) in &subscription.discounts {
        if *duration == DiscountDuration::Limited {
            continue;
        }
        let off = match discount {
            Discount::Percent { percent } => {
                if *percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    return Err(FinanceError::InvalidPercentage { percent: *percent });
                }
                fee.checked_mul(*percent / Decimal::ONE_HUNDRED)?
            }
            Discount::Amount { amount } => *amount,
        };
        fee = fee.checked_sub(&off)?;
        if fee.is_negative() {
            fee = Money::zero(currency);
        }
    }
    normalise_to_month(fee, subscription.interval)
}

/// A customer's MRR in `currency`: the sum of their subscriptions' MRR.
pub fn customer_mrr(
    currency: Currency,
    subscriptions: &[SubscriptionMrrInput],
) -> Result<Money, FinanceError> {
    let mut total = Money::zero(currency);
    for subscription in subscriptions {
        total = total.checked_add(&subscription_mrr(subscription)?)?;
    }
    Ok(total)
}

/// `mrr` rounded half-even to its currency's minor units: for display and reports only.
pub fn round_for_report(mrr: Money) -> Money {
    mrr.round(RoundingMode::HalfEven)
}

/// ARR: MRR × 12.
pub fn arr(mrr: Money) -> Result<Money, FinanceError> {
    Ok(mrr.checked_mul(Decimal::from(12))?)
}

/// ARPA: MRR ÷ paying customers; `None` without paying customers.
pub fn arpa(mrr: Money, paying_customers: u64) -> Option<Money> {
    if paying_customers == 0 {
        return None;
    }
    let average = mrr.amount().checked_div(Decimal::from(paying_customers))?;
    Some(Money::new(average, mrr.currency()))
}

/// Days in the usage run-rate's trailing window.
pub const USAGE_RUN_RATE_DAYS: u64 = 30;

/// The usage run-rate: usage recognised on the [`USAGE_RUN_RATE_DAYS`] days ending with
/// `last_day` (inclusive), from the daily recognised usage. It stands beside MRR, which
/// leaves usage out, because for a usage-based business MRR alone understates revenue.
///
/// ```
/// use chrono::NaiveDate;
/// use rust_decimal_macros::dec;
/// use tally_domain::finance::RecognitionDay;
/// use tally_domain::finance::mrr::usage_run_rate;
/// use tally_domain::money::{Currency, Money};
///
/// let day = |d| NaiveDate::from_ymd_opt(2025, 3, d).unwrap();
/// let usage = |d, amount| RecognitionDay { day: day(d), amount: Money::new(amount, Currency::USD) };
/// let days = [usage(1, dec!(5.00)), usage(2, dec!(7.50)), usage(31, dec!(1.25))];
/// // 31 March: 2 to 31 March are the 30 days; 1 March is out.
/// assert_eq!(usage_run_rate(Currency::USD, &days, day(31)).unwrap().amount(), dec!(8.75));
/// ```
pub fn usage_run_rate(
    currency: Currency,
    recognised_usage: &[RecognitionDay],
    last_day: NaiveDate,
) -> Result<Money, FinanceError> {
    let first_day = last_day
        .checked_sub_days(Days::new(USAGE_RUN_RATE_DAYS - 1))
        .unwrap_or(NaiveDate::MIN);
    let in_window = recognised_usage
        .iter()
        .filter(|recognised| first_day <= recognised.day && recognised.day <= last_day)
        .map(|recognised| &recognised.amount);
    Ok(Money::sum(currency, in_window)?)
}

/// A customer's MRR from `at` on (until the next change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrrChange {
    /// When the MRR changed.
    pub at: DateTime<Utc>,
    /// The customer's MRR from then on (≥ 0).
    pub mrr: Money,
}

/// A customer's MRR just before `at` (changes at `at` not applied), from their
/// `changes` ordered by time.
pub fn mrr_before(currency: Currency, changes: &[MrrChange], at: DateTime<Utc>) -> Money {
    changes
        .iter()
        .take_while(|change| change.at < at)
        .last()
        .map_or(Money::zero(currency), |change| change.mrr)
}

/// The kind of an MRR movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// 0 → x, the first time the customer pays.
    New,
    /// x → y with y > x > 0.
    Expansion,
    /// x → y with x > y > 0.
    Contraction,
    /// x → 0: the customer's last paid subscription ended.
    Churn,
    /// 0 → x after the customer paid before and churned.
    Reactivation,
}

/// One movement of one customer's MRR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrrMovement {
    /// When it happened: the last change of its group.
    pub at: DateTime<Utc>,
    /// Its kind.
    pub kind: MovementKind,
    /// MRR before the group's first change.
    pub from_mrr: Money,
    /// MRR after the group's last change.
    pub to_mrr: Money,
}

impl MrrMovement {
    /// The signed change, `to_mrr − from_mrr`.
    pub fn amount(&self) -> Result<Money, FinanceError> {
        Ok(self.to_mrr.checked_sub(&self.from_mrr)?)
    }
}

/// Checks order, currency and sign of a history; returns its currency.
fn check_history(history: &[MrrChange]) -> Result<Option<Currency>, FinanceError> {
    let Some(first) = history.first() else {
        return Ok(None);
    };
    let currency = first.mrr.currency();
    for (index, change) in history.iter().enumerate() {
        let context = format!("MRR change {index} at {}", change.at);
        if change.mrr.currency() != currency {
            return Err(FinanceError::CurrencyMismatch {
                context,
                expected: currency,
                found: change.mrr.currency(),
            });
        }
        if change.mrr.is_negative() {
            return Err(FinanceError::WrongSign {
                context,
                amount: change.mrr,
            });
        }
        if index > 0 && change.at <= history[index - 1].at {
            return Err(FinanceError::UnorderedHistory { index });
        }
    }
    Ok(Some(currency))
}

fn classify(from: &Money, to: &Money, paid_before: bool) -> Option<MovementKind> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (
        from.is_zero(),
        to.is_zero(),
        to.amount().cmp(&from.amount()),
    ) {
        (_, _, Equal) => None,
        (true, false, _) if paid_before => Some(MovementKind::Reactivation),
        (true, false, _) => Some(MovementKind::New),
        (false, true, _) => Some(MovementKind::Churn),
        (_, _, Greater) => Some(MovementKind::Expansion),
        (_, _, Less) => Some(MovementKind::Contraction),
    }
}

/// The movements of one customer's MRR `history` (strictly ascending in time, one currency,
/// MRR zero before the first change).
///
/// Changes within `window` of a group's first change form one group; the group is one
/// movement from the MRR before its first change to the MRR after its last, dated at its
/// last change, and no movement when they are equal (a downgrade undone the same day). With
/// a zero window every change is its own group. So the movements chain (each one's
/// `from_mrr` is the previous one's `to_mrr`) and their sum over any range is the change of
/// the grouped MRR over it.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::finance::mrr::{mrr_movements, MovementKind, MrrChange};
/// use tally_domain::money::{Currency, Money};
///
/// let day = |d| Utc.with_ymd_and_hms(2025, 1, d, 0, 0, 0).unwrap();
/// let usd = |amount| Money::new(amount, Currency::USD);
/// let history = [
///     MrrChange { at: day(1), mrr: usd(dec!(50)) },
///     MrrChange { at: day(2), mrr: usd(dec!(80)) }, // upgraded the next day
///     MrrChange { at: day(20), mrr: usd(dec!(0)) },
/// ];
/// let movements = mrr_movements(&history, Duration::days(3)).unwrap();
/// let kinds: Vec<_> = movements.iter().map(|m| (m.kind, m.to_mrr.amount())).collect();
/// assert_eq!(kinds, [(MovementKind::New, dec!(80)), (MovementKind::Churn, dec!(0))]);
/// ```
pub fn mrr_movements(
    history: &[MrrChange],
    window: TimeDelta,
) -> Result<Vec<MrrMovement>, FinanceError> {
    let Some(currency) = check_history(history)? else {
        return Ok(Vec::new());
    };
    let mut movements = Vec::new();
    let mut current = Money::zero(currency);
    let mut paid_before = false;
    let mut next = 0;
    while next < history.len() {
        let group_start = history[next].at;
        let mut last = next;
        while last + 1 < history.len() && history[last + 1].at - group_start <= window {
            last += 1;
        }
        let to_mrr = history[last].mrr;
        if let Some(kind) = classify(&current, &to_mrr, paid_before) {
            movements.push(MrrMovement {
                at: history[last].at,
                kind,
                from_mrr: current,
                to_mrr,
            });
        }
        paid_before |= to_mrr.is_positive();
        current = to_mrr;
        next = last + 1;
    }
    Ok(movements)
}

/// Movement totals by kind, each a magnitude (≥ 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementTotals {
    /// New MRR.
    pub new: Money,
    /// Expansion MRR.
    pub expansion: Money,
    /// Contraction MRR (as a positive amount).
    pub contraction: Money,
    /// Churned MRR (as a positive amount).
    pub churn: Money,
    /// Reactivation MRR.
    pub reactivation: Money,
}

impl MovementTotals {
    /// All zero.
    pub fn zero(currency: Currency) -> MovementTotals {
        let zero = Money::zero(currency);
        MovementTotals {
            new: zero,
            expansion: zero,
            contraction: zero,
            churn: zero,
            reactivation: zero,
        }
    }

    /// The totals of `movements` (of any customers, one currency).
    pub fn of<'a>(
        currency: Currency,
        movements: impl IntoIterator<Item = &'a MrrMovement>,
    ) -> Result<MovementTotals, FinanceError> {
        let mut totals = MovementTotals::zero(currency);
        for movement in movements {
            let amount = movement.amount()?;
            let magnitude = Money::new(amount.amount().abs(), amount.currency());
            let total = match movement.kind {
                MovementKind::New => &mut totals.new,
                MovementKind::Expansion => &mut totals.expansion,
                MovementKind::Contraction => &mut totals.contraction,
                MovementKind::Churn => &mut totals.churn,
                MovementKind::Reactivation => &mut totals.reactivation,
            };
            *total = total.checked_add(&magnitude)?;
        }
        Ok(totals)
    }

    /// new + expansion + reactivation − contraction − churn: ending minus starting MRR.
    pub fn net_change(&self) -> Result<Money, FinanceError> {
        Ok(self
            .gains()?
            .checked_sub(&self.contraction.checked_add(&self.churn)?)?)
    }

    fn gains(&self) -> Result<Money, MoneyError> {
        self.new
            .checked_add(&self.expansion)?
            .checked_add(&self.reactivation)
    }
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    if denominator.is_zero() {
        return None;
    }
    numerator.checked_div(denominator)
}

/// Gross MRR churn rate: (churn + contraction) ÷ starting MRR.
pub fn gross_mrr_churn_rate(totals: &MovementTotals, starting_mrr: Money) -> Option<Decimal> {
    let lost = totals.churn.checked_add(&totals.contraction).ok()?;
    ratio(lost.amount(), starting_mrr.amount())
}

/// Net MRR churn rate: (churn + contraction − expansion − reactivation) ÷ starting MRR;
/// negative when existing customers grew more than they shrank.
pub fn net_mrr_churn_rate(totals: &MovementTotals, starting_mrr: Money) -> Option<Decimal> {
    let lost = totals.churn.checked_add(&totals.contraction).ok()?;
    let regained = totals.expansion.checked_add(&totals.reactivation).ok()?;
    ratio(
        lost.checked_sub(&regained).ok()?.amount(),
        starting_mrr.amount(),
    )
}

/// Quick ratio: (new + expansion + reactivation) ÷ (churn + contraction).
pub fn quick_ratio(totals: &MovementTotals) -> Option<Decimal> {
    let lost = totals.churn.checked_add(&totals.contraction).ok()?;
    ratio(totals.gains().ok()?.amount(), lost.amount())
}

/// One customer of a cohort: MRR at the cohort's start and at the end of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortMember {
    /// MRR at the cohort's start (customers not paying then are not in the cohort).
    pub starting_mrr: Money,
    /// MRR at the end of the range.
    pub ending_mrr: Money,
}

/// Revenue retention of a cohort, as fractions of its starting MRR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Σ min(ending, starting) ÷ Σ starting: what stayed, expansion not counted (≤ 1).
    pub gross: Decimal,
    /// Σ ending ÷ Σ starting: expansion counted (can exceed 1).
    pub net: Decimal,
}

/// Gross and net revenue retention of a cohort; `None` when its starting MRR is zero.
/// Members with zero starting MRR are not part of a cohort and are ignored.
pub fn revenue_retention(
    currency: Currency,
    members: &[CohortMember],
) -> Result<Option<Retention>, FinanceError> {
    let mut starting = Money::zero(currency);
    let mut kept = Money::zero(currency);
    let mut ending = Money::zero(currency);
    for member in members
        .iter()
        .filter(|member| member.starting_mrr.is_positive())
    {
        starting = starting.checked_add(&member.starting_mrr)?;
        kept = kept.checked_add(&member.ending_mrr.min(&member.starting_mrr)?)?;
        ending = ending.checked_add(&member.ending_mrr)?;
    }
    let (Some(gross), Some(net)) = (
        ratio(kept.amount(), starting.amount()),
        ratio(ending.amount(), starting.amount()),
    ) else {
        return Ok(None);
    };
    Ok(Some(Retention { gross, net }))
}
