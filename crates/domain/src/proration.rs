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
}
