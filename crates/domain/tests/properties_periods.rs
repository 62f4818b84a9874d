//! Property tests: month-end anchors clamp and return; periods tile time; prorated parts
//! always sum to the whole charge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use tally_domain::money::{Currency, Money};
use tally_domain::period::{BillingCycle, BillingInterval};
use tally_domain::proration::{ProrationPolicy, prorate};

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2060-01-01
    (946_684_800_i64..2_840_140_800).prop_map(|seconds| Utc.timestamp_opt(seconds, 0).unwrap())
}

fn interval() -> impl Strategy<Value = BillingInterval> {
    prop::sample::select(vec![
        BillingInterval::Day,
        BillingInterval::Week,
        BillingInterval::Month,
        BillingInterval::Quarter,
        BillingInterval::Year,
    ])
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap();
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap()
    };
    u32::try_from((next - first).num_days()).unwrap()
}

proptest! {
    #[test]
    fn month_boundaries_clamp_to_month_end_and_keep_the_anchor_day(
        anchor in instant(), n in -40_i64..=40,
        interval in prop::sample::select(vec![BillingInterval::Month, BillingInterval::Quarter, BillingInterval::Year]),
    ) {
        let cycle = BillingCycle::new(anchor, interval);
        let boundary = cycle.boundary(n).unwrap();
        let expected_day = anchor.day().min(days_in_month(boundary.year(), boundary.month()));
        prop_assert_eq!(boundary.day(), expected_day);
        prop_assert_eq!(boundary.time(), anchor.time());
        let months = i64::from(boundary.year() - anchor.year()) * 12 + i64::from(boundary.month()) - i64::from(anchor.month());
        let per_interval = match interval {
            BillingInterval::Month => 1,
            BillingInterval::Quarter => 3,
            BillingInterval::Year => 12,
            BillingInterval::Day | BillingInterval::Week => unreachable!("not generated"),
        };
        prop_assert_eq!(months, n * per_interval);
    }

    #[test]
    fn periods_tile_time_and_contain_what_they_are_asked_for(
        anchor in instant(), probe in instant(), interval in interval(),
    ) {
        let cycle = BillingCycle::new(anchor, interval);
        let index = cycle.index_of(probe).unwrap();
        let period = cycle.period(index).unwrap();
        prop_assert!(period.contains(probe));
        prop_assert_eq!(period.end(), cycle.period(index + 1).unwrap().start());
        prop_assert_eq!(cycle.period_containing(probe).unwrap(), period);
    }

    #[test]
    fn prorated_parts_sum_to_the_whole_charge(
        anchor in instant(), interval in interval(), index in -5_i64..=5,
        fractions in prop::collection::vec(0.0_f64..1.0, 0..5),
        minor_units in 0_i64..=100_000_000,
        currency in prop::sample::select(vec![Currency::USD, Currency::JPY, Currency::KWD]),
        by_day in any::<bool>(),
    ) {
        let policy = if by_day { ProrationPolicy::ByDay } else { ProrationPolicy::BySecond };
        let period = BillingCycle::new(anchor, interval).period(index).unwrap();
        let seconds = period.duration().num_seconds();
        // Test data only: fractions pick cut points; money never touches a float.
        let mut offsets: Vec<i64> = fractions.iter().map(|fraction| (fraction * seconds as f64) as i64).filter(|offset| *offset > 0).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let cuts: Vec<_> = offsets.iter().map(|offset| period.start() + Duration::seconds(*offset)).collect();
        let charge = Money::from_minor_units(minor_units.into(), currency).unwrap();
        let parts = prorate(charge, &period, &cuts, policy).unwrap();
        prop_assert_eq!(parts.len(), cuts.len() + 1);
        prop_assert_eq!(Money::sum(currency, &parts).unwrap(), charge);
    }
}
