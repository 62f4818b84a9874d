//! Retention by monthly cohort: of the MRR a cohort of customers brought in,
//! how much they still pay one, two, … months later.
//!
//! - A customer's **cohort** is the calendar month (UTC) in which their MRR
//!   first rose above zero.
//! - The cohort's **starting MRR** is its customers' MRR at the end of that
//!   month (just before the next month starts): a customer who joined and left
//!   within the month starts at zero and changes no rate.
//! - At the end of month `k` after the cohort's month (month 0 is the cohort's
//!   own): **net MRR retention** = the cohort's MRR ÷ its starting MRR
//!   (expansion counts, above 1 when the cohort grew); **gross MRR retention**
//!   = Σ per customer min(MRR now, their starting MRR) ÷ starting MRR (never
//!   above 1: expansion does not hide churn and contraction). Customers
//!   retained: those still paying. Rates are exact fractions, `None` for a
//!   cohort that starts at zero.
//! - Only month ends at or before `as_of` are reported: a month not over yet
//!   has no retention.
//!
//! ```
//! use chrono::{NaiveDate, TimeZone, Utc};
//! use rust_decimal_macros::dec;
//! use tally_domain::finance::mrr::MrrChange;
//! use tally_domain::finance::retention::cohort_retention;
//! use tally_domain::money::{Currency, Money};
//!
//! let usd = |amount| Money::new(amount, Currency::USD);
//! let at = |month, day| Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap();
//! // Two January customers at 100.00 each; in February one doubles, in March the other leaves.
//! let grows = vec![
//!     MrrChange { at: at(1, 5), mrr: usd(dec!(100)) },
//!     MrrChange { at: at(2, 10), mrr: usd(dec!(200)) },
//! ];
//! let leaves = vec![
//!     MrrChange { at: at(1, 20), mrr: usd(dec!(100)) },
//!     MrrChange { at: at(3, 3), mrr: usd(dec!(0)) },
//! ];
//! let january = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
//! let cohorts = cohort_retention(Currency::USD, &[grows, leaves], january, january, at(4, 1)).unwrap();
//! let march = &cohorts[0].months[2];
//! assert_eq!(march.mrr.amount(), dec!(200));
//! assert_eq!(march.net_retention, Some(dec!(1)));    // 200 of 200: expansion offsets churn
//! assert_eq!(march.gross_retention, Some(dec!(0.5))); // 100 of 200: churn shows
//! assert_eq!(march.retained_customers, 1);
//! ```

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::FinanceError;
use super::mrr::{MrrChange, mrr_before};
use crate::money::{Currency, Money};

/// One cohort's retention, month by month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CohortRetention {
    /// The first day of the cohort's month.
    pub cohort: NaiveDate,
    /// Customers whose MRR first rose above zero in that month.
    pub customers: u64,
    /// Their MRR at the end of the month.
    pub starting_mrr: Money,
    /// Month 0 (the cohort's own) onwards, up to the last month ended by `as_of`.
    pub months: Vec<RetentionMonth>,
}

/// A cohort at the end of one month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionMonth {
    /// Months after the cohort's month (0 = its own).
    pub offset: u32,
    /// The first day of the month.
    pub month: NaiveDate,
    /// Cohort customers still paying at its end.
    pub retained_customers: u64,
    /// The cohort's MRR at its end.
    pub mrr: Money,
    /// MRR ÷ starting MRR.
    pub net_retention: Option<Decimal>,
    /// Σ min(customer's MRR, their starting MRR) ÷ starting MRR.
    pub gross_retention: Option<Decimal>,
}

/// The first day of `instant`'s month (UTC).
fn month_of(instant: DateTime<Utc>) -> NaiveDate {
    instant.date_naive().with_day(1).unwrap_or(NaiveDate::MIN)
}

/// The first instant after the month that starts on `month`.
fn end_of(month: NaiveDate) -> Option<DateTime<Utc>> {
    month
        .checked_add_months(Months::new(1))
        .map(|next| next.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    if denominator.is_zero() {
        return None;
    }
    numerator
        .checked_div(denominator)
        .map(|value| value.normalize())
}

/// The cohorts whose month lies in `[first_cohort, last_cohort]` (months, by
/// their first day), each customer given by their MRR changes in `currency`
/// (ordered by time), measured at every month end up to `as_of`.
pub fn cohort_retention(
    currency: Currency,
    customers: &[Vec<MrrChange>],
    first_cohort: NaiveDate,
    last_cohort: NaiveDate,
    as_of: DateTime<Utc>,
) -> Result<Vec<CohortRetention>, FinanceError> {
    let mut cohorts: std::collections::BTreeMap<NaiveDate, Vec<&[MrrChange]>> =
        std::collections::BTreeMap::new();
    for changes in customers {
        let Some(first_paid) = changes.iter().find(|change| change.mrr.is_positive()) else {
            continue;
        };
        let cohort = month_of(first_paid.at);
        if first_cohort <= cohort && cohort <= last_cohort {
            cohorts.entry(cohort).or_default().push(changes);
        }
    }
    cohorts
        .into_iter()
        .filter_map(|(cohort, members)| {
            let cohort_end = end_of(cohort)?;
            (cohort_end <= as_of).then_some((cohort, cohort_end, members))
        })
        .map(|(cohort, cohort_end, members)| {
            let starting: Vec<Money> = members
                .iter()
                .map(|changes| mrr_before(currency, changes, cohort_end))
                .collect();
            let starting_mrr = Money::sum(currency, starting.iter())?;
            let mut months = Vec::new();
            let mut offset = 0;
            while let Some(month) = cohort.checked_add_months(Months::new(offset)) {
                let Some(month_end) = end_of(month).filter(|end| *end <= as_of) else {
                    break;
                };
                months.push(measure(
                    currency,
                    &members,
                    &starting,
                    starting_mrr,
                    (offset, month, month_end),
                )?);
                offset += 1;
            }
            Ok(CohortRetention {
                cohort,
                customers: members.len() as u64,
                starting_mrr,
                months,
            })
        })
        .collect()
}

/// The cohort at the end of one month.
fn measure(
    currency: Currency,
    members: &[&[MrrChange]],
    starting: &[Money],
    starting_mrr: Money,
    (offset, month, month_end): (u32, NaiveDate, DateTime<Utc>),
) -> Result<RetentionMonth, FinanceError> {
    let now: Vec<Money> = members
        .iter()
        .map(|changes| mrr_before(currency, changes, month_end))
        .collect();
    let mrr = Money::sum(currency, now.iter())?;
    let kept: Vec<Money> = now
        .iter()
        .zip(starting)
        .map(|(now, start)| {
            if now.amount() < start.amount() {
                *now
            } else {
                *start
            }
        })
        .collect();
    let kept = Money::sum(currency, kept.iter())?;
    Ok(RetentionMonth {
        offset,
        month,
        retained_customers: now.iter().filter(|mrr| mrr.is_positive()).count() as u64,
        mrr,
        net_retention: ratio(mrr.amount(), starting_mrr.amount()),
        gross_retention: ratio(kept.amount(), starting_mrr.amount()),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use super::*;

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn at(month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, day, 12, 0, 0).unwrap()
    }

    fn month(month: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, month, 1).unwrap()
    }

    fn change(month: u32, day: u32, mrr: Decimal) -> MrrChange {
        MrrChange {
            at: at(month, day),
            mrr: usd(mrr),
        }
    }

    /// ChartMogul's churn example recast as a cohort: four January customers
    /// at 25.00 (100.00); in February one churns (−25), one contracts by 10
    /// and one expands by 10: net 75.00 of 100.00 (−25 − 10 + 10), gross
    /// 65.00 of 100.00 (the expansion does not count).
    #[test]
    fn a_cohort_of_four_with_churn_contraction_and_expansion() {
        let customers = vec![
            vec![change(1, 2, dec!(25))],
            vec![change(1, 3, dec!(25)), change(2, 10, dec!(0))],
            vec![change(1, 4, dec!(25)), change(2, 11, dec!(15))],
            vec![change(1, 5, dec!(25)), change(2, 12, dec!(35))],
        ];
        let cohorts =
            cohort_retention(Currency::USD, &customers, month(1), month(12), at(3, 2)).unwrap();
        assert_eq!(cohorts.len(), 1);
        let january = &cohorts[0];
        assert_eq!(
            (
                january.cohort,
                january.customers,
                january.starting_mrr.amount()
            ),
            (month(1), 4, dec!(100))
        );
        let expected = [
            // offset, retained, MRR, net, gross
            (0, 4, dec!(100), dec!(1), dec!(1)),
            (1, 3, dec!(75), dec!(0.75), dec!(0.65)),
        ];
        assert_eq!(january.months.len(), expected.len(), "March is not over");
        for (measured, (offset, retained, mrr, net, gross)) in january.months.iter().zip(expected) {
            assert_eq!(measured.offset, offset);
            assert_eq!(measured.retained_customers, retained);
            assert_eq!(measured.mrr.amount(), mrr);
            assert_eq!(measured.net_retention, Some(net));
            assert_eq!(measured.gross_retention, Some(gross));
        }
    }

    #[test]
    fn cohorts_are_by_first_paid_month_and_a_same_month_churn_starts_at_zero() {
        let customers = vec![
            // A trial (0.00) in January, paying from February: a February customer.
            vec![change(1, 20, dec!(0)), change(2, 1, dec!(50))],
            // Joins and leaves in January: in the cohort, starting at zero.
            vec![change(1, 2, dec!(30)), change(1, 28, dec!(0))],
            // Never pays: in no cohort.
            vec![change(1, 2, dec!(0))],
        ];
        let cohorts =
            cohort_retention(Currency::USD, &customers, month(1), month(12), at(4, 1)).unwrap();
        let summary: Vec<_> = cohorts
            .iter()
            .map(|cohort| {
                (
                    cohort.cohort,
                    cohort.customers,
                    cohort.starting_mrr.amount(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![(month(1), 1, dec!(0)), (month(2), 1, dec!(50))]
        );
        assert_eq!(cohorts[0].months[0].net_retention, None, "no MRR to retain");
        assert_eq!(cohorts[1].months.len(), 2, "February and March are over");
    }

    #[test]
    fn a_reactivated_customer_counts_again_and_cohorts_outside_the_range_are_left_out() {
        let customers = vec![
            vec![
                change(1, 2, dec!(40)),
                change(2, 2, dec!(0)),
                change(3, 2, dec!(40)),
            ],
            vec![change(3, 5, dec!(10))],
        ];
        let cohorts =
            cohort_retention(Currency::USD, &customers, month(1), month(2), at(4, 1)).unwrap();
        assert_eq!(cohorts.len(), 1, "March's cohort is outside the range");
        let retained: Vec<_> = cohorts[0]
            .months
            .iter()
            .map(|month| (month.retained_customers, month.net_retention))
            .collect();
        assert_eq!(
            retained,
            vec![(1, Some(dec!(1))), (0, Some(dec!(0))), (1, Some(dec!(1)))]
        );
    }

    proptest! {
        /// Gross retention never exceeds net retention nor 1; both are ≥ 0.
        #[test]
        fn gross_is_at_most_net_and_at_most_one(
            histories in prop::collection::vec(
                prop::collection::vec((1u32..12, 1u32..28, 0u32..500), 1..5),
                1..8,
            )
        ) {
            let customers: Vec<Vec<MrrChange>> = histories
                .into_iter()
                .map(|mut steps| {
                    steps.sort();
                    steps
                        .into_iter()
                        .map(|(month, day, mrr)| change(month, day, Decimal::from(mrr)))
                        .collect()
                })
                .collect();
            let as_of = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
            for cohort in cohort_retention(Currency::USD, &customers, month(1), month(12), as_of).unwrap() {
                for measured in cohort.months {
                    if let (Some(net), Some(gross)) = (measured.net_retention, measured.gross_retention) {
                        prop_assert!(gross >= Decimal::ZERO && gross <= Decimal::ONE);
                        prop_assert!(gross <= net);
                    }
                }
            }
        }
    }
}
