//! Proration: splitting a period's charge between parts of the period, exactly.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyError};
use crate::period::{Period, utc_day_number};

/// What can go wrong while prorating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProrationError {
    /// A cut point is not strictly inside the period, or cut points are not ascending.
    #[error("cut point {at} is not strictly inside {period} after the previous cut")]
    CutOutsidePeriod {
        /// The cut point.
        at: DateTime<Utc>,
        /// The period.
        period: Period,
    },
    /// Under the policy, the period measures zero (e.g. by day within a single day).
    #[error("{period} has no length under {policy:?} proration")]
    ZeroLengthPeriod {
        /// The period.
        period: Period,
        /// The policy.
        policy: ProrationPolicy,
    },
    /// Money arithmetic failed (unrounded amount, currency mismatch, overflow).
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// How the used share of a period is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProrationPolicy {
    /// Exact seconds: a part is worth `seconds in part / seconds in period`.
    BySecond,
    /// Whole UTC days: each instant is truncated to its UTC midnight, so the day on which
    /// a change happens belongs to the part that starts on it.
    ByDay,
}

impl ProrationPolicy {
    /// The size of `[from, to)` in this policy's unit (seconds or days).
    pub fn measure(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        match self {
            ProrationPolicy::BySecond => (to - from).num_seconds(),
            ProrationPolicy::ByDay => utc_day_number(to) - utc_day_number(from),
        }
    }

    /// The share of `period` that `part` represents, exact to 28 digits (informational; use
    /// [`prorate`] to split money, which sums exactly).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use rust_decimal_macros::dec;
    /// use tally_domain::period::Period;
    /// use tally_domain::proration::ProrationPolicy;
    ///
    /// let at = |d, h| Utc.with_ymd_and_hms(2025, 4, d, h, 0, 0).unwrap();
    /// let april = Period::new(at(1, 0), Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap()).unwrap();
    /// let rest = Period::new(at(16, 12), april.end()).unwrap();
    /// assert_eq!(ProrationPolicy::BySecond.factor(&april, &rest).unwrap(), dec!(0.4833333333333333333333333333));
    /// // By day, the change day (the 16th) counts in full: 15 of 30 days.
    /// assert_eq!(ProrationPolicy::ByDay.factor(&april, &rest).unwrap(), dec!(0.5));
    /// ```
    pub fn factor(self, period: &Period, part: &Period) -> Result<Decimal, ProrationError> {
        let whole = self.measure(period.start(), period.end());
        if whole <= 0 {
            return Err(ProrationError::ZeroLengthPeriod {
                period: *period,
                policy: self,
            });
        }
        let used = self.measure(part.start(), part.end());
        Decimal::from(used)
            .checked_div(Decimal::from(whole))
            .ok_or(ProrationError::Money(MoneyError::Overflow))
    }
}

/// Splits `amount`, the charge for the whole `period`, into the parts between `cuts`.
///
/// `cuts` must be strictly ascending and strictly inside the period; `n` cuts give `n + 1`
/// parts. The amount must be rounded to its currency; the parts are whole minor units
/// allocated by largest remainder in proportion to each part's measure, so they **always
/// sum to the amount**.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::money::{Currency, Money};
/// use tally_domain::period::Period;
/// use tally_domain::proration::{prorate, ProrationPolicy};
///
/// let day = |d| Utc.with_ymd_and_hms(2025, 2, d, 0, 0, 0).unwrap();
/// let february = Period::new(day(1), Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()).unwrap();
/// let fee = Money::new(dec!(100.00), Currency::USD);
/// let parts = prorate(fee, &february, &[day(11), day(21)], ProrationPolicy::ByDay).unwrap();
/// let amounts: Vec<_> = parts.iter().map(|part| part.amount()).collect();
/// assert_eq!(amounts, [dec!(35.72), dec!(35.71), dec!(28.57)]); // 10, 10 and 8 of 28 days
/// ```
pub fn prorate(
    amount: Money,
    period: &Period,
    cuts: &[DateTime<Utc>],
    policy: ProrationPolicy,
) -> Result<Vec<Money>, ProrationError> {
    let mut weights = Vec::with_capacity(cuts.len() + 1);
    let mut from = period.start();
    for cut in cuts {
        if *cut <= from || *cut >= period.end() {
            return Err(ProrationError::CutOutsidePeriod {
                at: *cut,
                period: *period,
            });
        }
        weights.push(Decimal::from(policy.measure(from, *cut)));
        from = *cut;
    }
    weights.push(Decimal::from(policy.measure(from, period.end())));
    if policy.measure(period.start(), period.end()) <= 0 {
        return Err(ProrationError::ZeroLengthPeriod {
            period: *period,
            policy,
        });
    }
    Ok(amount.allocate(&weights)?)
}

/// The proration of a plan change at an instant inside a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChangeProration {
    /// Credit for the unused part of the old plan (zero or negative).
    pub credit: Money,
    /// Charge for the rest of the period on the new plan (zero or positive).
    pub charge: Money,
}

impl PlanChangeProration {
    /// `charge + credit`: what the customer owes (or is owed) for the change.
    pub fn net(&self) -> Result<Money, MoneyError> {
        self.charge.checked_add(&self.credit)
    }
}

/// Prorates a change from a plan costing `old_amount` per period to one costing `new_amount`
/// at instant `at` inside `period` (both amounts already paid in advance / rounded).
///
/// The credit is exactly the part of `old_amount` that [`prorate`] gives to `[at, end)`,
/// so used part + credit = old amount to the minor unit; likewise for the new charge.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::money::{Currency, Money};
/// use tally_domain::period::Period;
/// use tally_domain::proration::{plan_change, ProrationPolicy};
///
/// // $10 → $20 monthly, halfway through a 30-day month: −$5 credit, +$10 charge, net +$5.
/// let april = Period::new(
///     Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
///     Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap(),
/// ).unwrap();
/// let halfway = Utc.with_ymd_and_hms(2025, 4, 16, 0, 0, 0).unwrap();
/// let change = plan_change(
///     &april, halfway,
///     Money::new(dec!(10.00), Currency::USD),
///     Money::new(dec!(20.00), Currency::USD),
///     ProrationPolicy::BySecond,
/// ).unwrap();
/// assert_eq!(change.credit.amount(), dec!(-5.00));
/// assert_eq!(change.charge.amount(), dec!(10.00));
/// assert_eq!(change.net().unwrap().amount(), dec!(5.00));
/// ```
pub fn plan_change(
    period: &Period,
    at: DateTime<Utc>,
    old_amount: Money,
    new_amount: Money,
    policy: ProrationPolicy,
) -> Result<PlanChangeProration, ProrationError> {
    if old_amount.currency() != new_amount.currency() {
        return Err(MoneyError::CurrencyMismatch {
            left: old_amount.currency(),
            right: new_amount.currency(),
        }
        .into());
    }
    let remaining = |amount: Money| -> Result<Money, ProrationError> {
        if at == period.start() {
            return Ok(amount);
        }
        let parts = prorate(amount, period, &[at], policy)?;
        Ok(parts
            .last()
            .copied()
            .unwrap_or(Money::zero(amount.currency())))
    };
    Ok(PlanChangeProration {
        credit: remaining(old_amount)?.negated(),
        charge: remaining(new_amount)?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::money::Currency;

    fn day(month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, month, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn cuts_must_be_inside_and_ascending() {
        let period = Period::new(day(1, 1), day(2, 1)).unwrap();
        let fee = Money::new(dec!(31.00), Currency::USD);
        for cuts in [
            vec![day(1, 1)],
            vec![day(2, 1)],
            vec![day(1, 20), day(1, 10)],
        ] {
            assert!(matches!(
                prorate(fee, &period, &cuts, ProrationPolicy::BySecond),
                Err(ProrationError::CutOutsidePeriod { .. })
            ));
        }
        let daily = prorate(fee, &period, &[day(1, 11)], ProrationPolicy::ByDay).unwrap();
        assert_eq!(daily[0].amount(), dec!(10.00));
        assert_eq!(daily[1].amount(), dec!(21.00));
    }

    #[test]
    fn by_day_within_one_day_has_no_length() {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 1, 0, 0).unwrap();
        let period = Period::new(start, start + chrono::Duration::hours(2)).unwrap();
        let fee = Money::new(dec!(1.00), Currency::USD);
        assert!(matches!(
            prorate(fee, &period, &[], ProrationPolicy::ByDay),
            Err(ProrationError::ZeroLengthPeriod { .. })
        ));
    }

    #[test]
    fn downgrade_and_change_at_period_start() {
        let period = Period::new(day(4, 1), day(5, 1)).unwrap();
        let old = Money::new(dec!(20.00), Currency::USD);
        let new = Money::new(dec!(10.00), Currency::USD);
        let at_start =
            plan_change(&period, day(4, 1), old, new, ProrationPolicy::BySecond).unwrap();
        assert_eq!(at_start.net().unwrap().amount(), dec!(-10.00));
        // 10 of 30 days left: credit 20 × 1/3 = 6.67 (largest remainder), charge 10 × 1/3 = 3.33.
        let late = plan_change(&period, day(4, 21), old, new, ProrationPolicy::ByDay).unwrap();
        assert_eq!(late.credit.amount(), dec!(-6.67));
        assert_eq!(late.charge.amount(), dec!(3.33));
    }
}
