//! Revenue recognition (ASC 606 / IFRS 15, ratable): a fee billed for a service period is
//! earned day by day over that period. The remainder rule is in the [module docs](super).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::facts::{FinalizedLine, InvoiceFinalized};
use super::ids::derived_transaction_id;
use super::{FinanceError, LedgerAccount, RevenueLine};
use crate::ledger::{Transaction, TransactionBuilder};
use crate::money::Money;
use crate::period::Period;

/// How a service period's fee is spread over its days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecognitionPolicy {
    /// Whole UTC days: every day from the start's date up to (not including) the end's date
    /// weighs the same, like [`ProrationPolicy::ByDay`](crate::proration::ProrationPolicy::ByDay).
    /// A period inside one UTC day is recognised on that day.
    ByDay,
    /// Each UTC day weighs the seconds of the period that fall in it, so partial first and
    /// last days get partial shares.
    BySecond,
}

/// The amount recognised on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecognitionDay {
    /// The day.
    pub day: NaiveDate,
    /// The amount (negative for a proration credit's schedule).
    pub amount: Money,
}

/// A revenue schedule: the days of a service period with a non-zero share, in date order,
/// summing exactly to the amount scheduled.
///
/// It serialises for reports but does not deserialise: a schedule is recomputed from its
/// line (deterministically), so a stored one can never disagree with the rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevenueSchedule {
    total: Money,
    days: Vec<RecognitionDay>,
}

impl RevenueSchedule {
    /// Spreads `amount` (rounded to its currency) over `period` with `policy`, by largest
    /// remainder so the days sum exactly to `amount`.
    ///
    /// Stripe's example: a monthly 31.00 fee from 15 January 00:00 UTC has 17.00 recognised
    /// by the end of January and 14.00 still deferred.
    ///
    /// ```
    /// use chrono::{NaiveDate, TimeZone, Utc};
    /// use rust_decimal_macros::dec;
    /// use tally_domain::finance::{RecognitionPolicy, RevenueSchedule};
    /// use tally_domain::money::{Currency, Money};
    /// use tally_domain::period::Period;
    ///
    /// let period = Period::new(
    ///     Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0).unwrap(),
    ///     Utc.with_ymd_and_hms(2025, 2, 15, 0, 0, 0).unwrap(),
    /// ).unwrap();
    /// let fee = Money::new(dec!(31.00), Currency::USD);
    /// let schedule = RevenueSchedule::new(fee, &period, RecognitionPolicy::ByDay).unwrap();
    /// let january_end = NaiveDate::from_ymd_opt(2025, 1, 31).unwrap();
    /// assert_eq!(schedule.recognised_through(january_end).unwrap().amount(), dec!(17.00));
    /// assert_eq!(schedule.deferred_after(january_end).unwrap().amount(), dec!(14.00));
    /// ```
    pub fn new(
        amount: Money,
        period: &Period,
        policy: RecognitionPolicy,
    ) -> Result<RevenueSchedule, FinanceError> {
        let weighted_days = match policy {
            RecognitionPolicy::ByDay => whole_days(period),
            RecognitionPolicy::BySecond => seconds_per_day(period),
        };
        let weights: Vec<Decimal> = weighted_days
            .iter()
            .map(|(_, weight)| Decimal::from(*weight))
            .collect();
        let shares = if weights.iter().all(Decimal::is_zero) {
            // A period shorter than a second: all of it on its one day.
            amount.to_minor_units()?; // the same refusal of an unrounded amount as `allocate`
            let mut shares = vec![Money::zero(amount.currency()); weights.len()];
            shares[0] = amount;
            shares
        } else {
            amount.allocate(&weights)?
        };
        let days = weighted_days
            .iter()
            .zip(shares)
            .filter(|(_, share)| !share.is_zero())
            .map(|((day, _), amount)| RecognitionDay { day: *day, amount })
            .collect();
        Ok(RevenueSchedule {
            total: amount,
            days,
        })
    }

    /// The amount scheduled.
    pub fn total(&self) -> Money {
        self.total
    }

    /// The days with a non-zero share, in date order.
    pub fn days(&self) -> &[RecognitionDay] {
        &self.days
    }

    /// What is recognised on the days up to and including `last_day`.
    pub fn recognised_through(&self, last_day: NaiveDate) -> Result<Money, FinanceError> {
        let recognised = self
            .days
            .iter()
            .filter(|scheduled| scheduled.day <= last_day)
            .map(|scheduled| &scheduled.amount);
        Ok(Money::sum(self.total.currency(), recognised)?)
    }

    /// What is still deferred after `last_day`: the total less
    /// [`recognised_through`](Self::recognised_through).
    pub fn deferred_after(&self, last_day: NaiveDate) -> Result<Money, FinanceError> {
        Ok(self
            .total
            .checked_sub(&self.recognised_through(last_day)?)?)
    }
}

fn start_of_day(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The days of `[start's date, end's date)` with weight 1 each; one day if that is empty.
fn whole_days(period: &Period) -> Vec<(NaiveDate, i64)> {
    let first = period.start().date_naive();
    let end = period.end().date_naive();
    let days: Vec<(NaiveDate, i64)> = first
        .iter_days()
        .take_while(|day| *day < end)
        .map(|day| (day, 1))
        .collect();
    if days.is_empty() {
        return vec![(first, 1)];
    }
    days
}

/// Every day the period touches, with the seconds of the period inside it.
fn seconds_per_day(period: &Period) -> Vec<(NaiveDate, i64)> {
    let mut days = Vec::new();
    for day in period.start().date_naive().iter_days() {
        let day_start = start_of_day(day);
        if day_start >= period.end() {
            break;
        }
        let from = day_start.max(period.start());
        let to = (day_start + Duration::days(1)).min(period.end());
        days.push((day, (to - from).num_seconds()));
    }
    days
}

/// The schedule of a finalized invoice line whose fee is recognised ratably (recurring fee,
/// proration charge or credit), or `None` for any other line.
pub fn line_schedule(
    line: &FinalizedLine,
    policy: RecognitionPolicy,
) -> Result<Option<RevenueSchedule>, FinanceError> {
    line.kind
        .deferred_service_period()
        .map(|period| RevenueSchedule::new(line.amount, period, policy))
        .transpose()
}

/// The recognition of one scheduled day of an invoice line: Dr deferred revenue, Cr revenue
/// (recurring fees); a negative day (proration credit) the reverse. Dated at the start of the
/// day (UTC); the id derives from the invoice, the line and the day. Empty for a zero amount.
pub fn recognition_transactions(
    invoice: &InvoiceFinalized,
    line: &FinalizedLine,
    scheduled: &RecognitionDay,
) -> Result<Vec<Transaction>, FinanceError> {
    if scheduled.amount.is_zero() {
        return Ok(Vec::new());
    }
    let day = scheduled.day.format("%Y-%m-%d").to_string();
    let currency = scheduled.amount.currency();
    let magnitude = Money::new(scheduled.amount.amount().abs(), currency);
    let mut deferred = LedgerAccount::DeferredRevenue.id(currency)?;
    let mut revenue = LedgerAccount::Revenue(RevenueLine::RecurringFees).id(currency)?;
    if scheduled.amount.is_negative() {
        std::mem::swap(&mut deferred, &mut revenue);
    }
    let transaction = TransactionBuilder::new(
        derived_transaction_id(
            "rec",
            &[invoice.invoice.as_str(), line.line_id.as_str(), &day],
        )?,
        start_of_day(scheduled.day),
        format!(
            "revenue_recognition invoice={} line={} kind={} customer={} day={day}",
            invoice.invoice,
            line.line_id,
            line.kind.name(),
            invoice.customer
        ),
    )
    .debit(deferred, magnitude)
    .credit(revenue, magnitude)
    .build()?;
    Ok(vec![transaction])
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::money::Currency;

    fn at(year: i32, month: u32, day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, hour, 0, 0).unwrap()
    }

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn schedule(
        amount: Decimal,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        policy: RecognitionPolicy,
    ) -> RevenueSchedule {
        RevenueSchedule::new(usd(amount), &Period::new(start, end).unwrap(), policy).unwrap()
    }

    /// The amounts recognised per calendar month, in month order.
    fn by_month(schedule: &RevenueSchedule) -> Vec<(u32, Decimal)> {
        let mut months: Vec<(u32, Decimal)> = Vec::new();
        for scheduled in schedule.days() {
            let month = scheduled.day.month();
            match months.last_mut() {
                Some((last, sum)) if *last == month => *sum += scheduled.amount.amount(),
                _ => months.push((month, scheduled.amount.amount())),
            }
        }
        months
    }

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).unwrap()
    }

    #[test]
    fn stripe_monthly_subscription_from_15_january() {
        for policy in [RecognitionPolicy::ByDay, RecognitionPolicy::BySecond] {
            let monthly = schedule(dec!(31.00), at(2025, 1, 15, 0), at(2025, 2, 15, 0), policy);
            assert_eq!(monthly.days().len(), 31);
            assert!(monthly.days().iter().all(|d| d.amount == usd(dec!(1.00))));
            assert_eq!(by_month(&monthly), [(1, dec!(17.00)), (2, dec!(14.00))]);
            let january = date(2025, 1, 31);
            assert_eq!(
                monthly.recognised_through(january).unwrap(),
                usd(dec!(17.00))
            );
            assert_eq!(monthly.deferred_after(january).unwrap(), usd(dec!(14.00)));
        }
    }

    #[test]
    fn stripe_annual_subscription_from_1_january_2025() {
        let annual = schedule(
            dec!(365.00),
            at(2025, 1, 1, 0),
            at(2026, 1, 1, 0),
            RecognitionPolicy::ByDay,
        );
        let months = by_month(&annual);
        assert_eq!(months.len(), 12);
        assert_eq!(
            months[..3],
            [(1, dec!(31.00)), (2, dec!(28.00)), (3, dec!(31.00))]
        );
        assert_eq!(months[11], (12, dec!(31.00)));
    }

    #[test]
    fn leap_year_annual_subscription_spreads_over_366_days() {
        // 366.00 over 2024's 366 days: 1.00 a day, February gets 29.00.
        let leap = schedule(
            dec!(366.00),
            at(2024, 1, 1, 0),
            at(2025, 1, 1, 0),
            RecognitionPolicy::ByDay,
        );
        assert_eq!(
            by_month(&leap)[..3],
            [(1, dec!(31.00)), (2, dec!(29.00)), (3, dec!(31.00))]
        );
        let short = schedule(
            dec!(365.00),
            at(2024, 1, 1, 0),
            at(2025, 1, 1, 0),
            RecognitionPolicy::ByDay,
        );
        // 36500 cents / 366 days = 99.726… → 99 each (36234), 266 leftover cents go to the
        // first 266 days (equal remainders, earlier first): 1.00 until 22 September, then 0.99.
        assert_eq!(short.days().len(), 366);
        assert_eq!(
            short.days()[265],
            RecognitionDay {
                day: date(2024, 9, 22),
                amount: usd(dec!(1.00))
            }
        );
        assert_eq!(
            short.days()[266],
            RecognitionDay {
                day: date(2024, 9, 23),
                amount: usd(dec!(0.99))
            }
        );
        assert_eq!(by_month(&short)[1], (2, dec!(29.00)));
        assert_eq!(by_month(&short)[11], (12, dec!(30.69)));
    }

    #[test]
    fn by_second_gives_partial_days_partial_shares_and_a_remainder() {
        // 10.00 from 1 March 18:00 to 3 March 06:00: 6 h, 24 h, 6 h = weights 1 : 4 : 1.
        // Exact shares 1.666…, 6.666…, 1.666… → 1.66, 6.66, 1.66 + two leftover cents to the
        // largest remainders (all .666…, earlier first): 1.67, 6.67, 1.66.
        let by_second = schedule(
            dec!(10.00),
            at(2025, 3, 1, 18),
            at(2025, 3, 3, 6),
            RecognitionPolicy::BySecond,
        );
        let amounts: Vec<_> = by_second
            .days()
            .iter()
            .map(|d| (d.day, d.amount.amount()))
            .collect();
        assert_eq!(
            amounts,
            [
                (date(2025, 3, 1), dec!(1.67)),
                (date(2025, 3, 2), dec!(6.67)),
                (date(2025, 3, 3), dec!(1.66)),
            ]
        );
        // By day the same period is 1 March and 2 March only (the end's day is excluded).
        let by_day = schedule(
            dec!(10.00),
            at(2025, 3, 1, 18),
            at(2025, 3, 3, 6),
            RecognitionPolicy::ByDay,
        );
        assert_eq!(by_month(&by_day), [(3, dec!(10.00))]);
        assert_eq!(by_day.days()[1].amount, usd(dec!(5.00)));
    }

    #[test]
    fn negative_schedules_and_tiny_periods() {
        // A proration credit: -10.00 over 3 days, symmetric with the positive split.
        let credit = schedule(
            dec!(-10.00),
            at(2025, 4, 1, 0),
            at(2025, 4, 4, 0),
            RecognitionPolicy::ByDay,
        );
        let amounts: Vec<_> = credit.days().iter().map(|d| d.amount.amount()).collect();
        assert_eq!(amounts, [dec!(-3.34), dec!(-3.33), dec!(-3.33)]);
        // One hour inside one day: everything on that day, by either policy.
        for policy in [RecognitionPolicy::ByDay, RecognitionPolicy::BySecond] {
            let hour = schedule(dec!(2.50), at(2025, 4, 1, 9), at(2025, 4, 1, 10), policy);
            assert_eq!(
                hour.days(),
                [RecognitionDay {
                    day: date(2025, 4, 1),
                    amount: usd(dec!(2.50))
                }]
            );
        }
        // Less than one cent a day: zero days are left out, the total still holds.
        let thin = schedule(
            dec!(0.02),
            at(2025, 4, 1, 0),
            at(2025, 4, 6, 0),
            RecognitionPolicy::ByDay,
        );
        assert_eq!(thin.days().len(), 2);
        assert_eq!(thin.days()[0].day, date(2025, 4, 1));
        assert_eq!(thin.days()[1].day, date(2025, 4, 2));
        let unrounded = RevenueSchedule::new(
            usd(dec!(1.005)),
            &Period::new(at(2025, 4, 1, 0), at(2025, 4, 2, 0)).unwrap(),
            RecognitionPolicy::ByDay,
        );
        assert!(matches!(unrounded, Err(FinanceError::Money(_))));
    }

    proptest! {
        #[test]
        fn schedules_sum_exactly_and_stay_inside_the_period(
            cents in 0i64..=100_000_000,
            start_offset_seconds in 0i64..(400 * 86_400),
            length_seconds in 3_600i64..=(400 * 86_400),
            by_second in any::<bool>(),
        ) {
            let start = at(2024, 1, 1, 0) + Duration::seconds(start_offset_seconds);
            let end = start + Duration::seconds(length_seconds);
            let amount = Money::from_minor_units(i128::from(cents), Currency::USD).unwrap();
            let policy = if by_second { RecognitionPolicy::BySecond } else { RecognitionPolicy::ByDay };
            let schedule = RevenueSchedule::new(amount, &Period::new(start, end).unwrap(), policy).unwrap();
            let sum = Money::sum(Currency::USD, schedule.days().iter().map(|d| &d.amount)).unwrap();
            prop_assert_eq!(sum, amount);
            for scheduled in schedule.days() {
                prop_assert!(!scheduled.amount.is_negative());
                prop_assert!(scheduled.day >= start.date_naive());
                // The day overlaps the period: it starts before the period ends.
                prop_assert!(start_of_day(scheduled.day) < end);
            }
            prop_assert!(schedule.days().windows(2).all(|pair| pair[0].day < pair[1].day));
        }
    }
}
