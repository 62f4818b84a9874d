//! Tests of the MRR rules: vendors' worked examples, one table row per movement kind, rates,
//! and a property test that movements add up to the change in MRR.

use chrono::{DateTime, Duration, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::mrr::{
    CohortMember, Discount, DiscountDuration, MovementKind, MovementTotals, MrrChange, MrrInterval,
    MrrMovement, Retention, SubscriptionMrrInput, arpa, arr, customer_mrr, gross_mrr_churn_rate,
    mrr_movements, net_mrr_churn_rate, normalise_to_month, quick_ratio, revenue_retention,
    round_for_report, subscription_mrr, usage_run_rate,
};
use super::*;
use crate::subscription::SubscriptionStatus;

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn day(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, month, day, 0, 0, 0).unwrap()
}

fn monthly(status: SubscriptionStatus, fee: Decimal) -> SubscriptionMrrInput {
    SubscriptionMrrInput {
        status,
        fee: usd(fee),
        interval: MrrInterval::Months(1),
        discounts: Vec::new(),
    }
}

fn change(at: DateTime<Utc>, mrr: Decimal) -> MrrChange {
    MrrChange { at, mrr: usd(mrr) }
}

/// `(kind, from, to)` of each movement.
fn summary(movements: &[MrrMovement]) -> Vec<(MovementKind, Decimal, Decimal)> {
    movements
        .iter()
        .map(|movement| {
            (
                movement.kind,
                movement.from_mrr.amount(),
                movement.to_mrr.amount(),
            )
        })
        .collect()
}

#[test]
fn stripe_an_annual_subscription_for_1200_counts_100_towards_mrr() {
    let annual = SubscriptionMrrInput {
        interval: MrrInterval::Months(12),
        ..monthly(SubscriptionStatus::Active, dec!(1200.00))
    };
    assert_eq!(subscription_mrr(&annual).unwrap(), usd(dec!(100)));
}

#[test]
fn every_interval_normalises_to_a_month() {
    let cases = [
        (dec!(49.00), MrrInterval::Months(1), dec!(49.00)),
        (dec!(300.00), MrrInterval::Months(3), dec!(100)),
        (dec!(600.00), MrrInterval::Months(6), dec!(100)),
        (dec!(1188.00), MrrInterval::Months(12), dec!(99)),
        // 52 weeks ÷ 12 months: 10.00 a week is 43.333… a month, kept to 28 digits.
        (
            dec!(10.00),
            MrrInterval::Weeks(1),
            dec!(43.333333333333333333333333333),
        ),
        (dec!(12.00), MrrInterval::Weeks(2), dec!(26)),
        (dec!(1.20), MrrInterval::Days(1), dec!(36.5)),
    ];
    for (fee, interval, expected) in cases {
        let monthly = normalise_to_month(usd(fee), interval).unwrap();
        assert_eq!(monthly.amount(), expected, "{fee} every {interval:?}");
    }
    assert_eq!(
        MrrInterval::from(crate::period::BillingInterval::Quarter),
        MrrInterval::Months(3)
    );
    assert_eq!(
        normalise_to_month(usd(dec!(1)), MrrInterval::Months(0)),
        Err(FinanceError::ZeroInterval)
    );
    let weekly = normalise_to_month(usd(dec!(10.00)), MrrInterval::Weeks(1)).unwrap();
    assert_eq!(round_for_report(weekly), usd(dec!(43.33)));
    assert_eq!(round_for_report(weekly).to_string(), "43.33 USD");
}

#[test]
fn status_and_discounts_decide_what_a_subscription_contributes() {
    let cases = [
        (
            "active",
            monthly(SubscriptionStatus::Active, dec!(100)),
            dec!(100),
        ),
        (
            "past due still bills",
            monthly(SubscriptionStatus::PastDue, dec!(100)),
            dec!(100),
        ),
        (
            "trial excluded",
            monthly(SubscriptionStatus::Trialing, dec!(100)),
            dec!(0),
        ),
        (
            "paused excluded",
            monthly(SubscriptionStatus::Paused, dec!(100)),
            dec!(0),
        ),
        (
            "canceled excluded",
            monthly(SubscriptionStatus::Canceled, dec!(100)),
            dec!(0),
        ),
    ];
    for (name, subscription, expected) in cases {
        assert_eq!(
            subscription_mrr(&subscription).unwrap(),
            usd(expected),
            "{name}"
        );
    }
    let discounted = |discounts: Vec<(Discount, DiscountDuration)>| SubscriptionMrrInput {
        discounts,
        ..monthly(SubscriptionStatus::Active, dec!(100.00))
    };
    let twenty_percent = Discount::Percent { percent: dec!(20) };
    let ten_off = Discount::Amount {
        amount: usd(dec!(10.00)),
    };
    let discount_cases = [
        (
            vec![(twenty_percent, DiscountDuration::Forever)],
            dec!(80.00),
        ),
        (
            vec![(twenty_percent, DiscountDuration::Limited)],
            dec!(100.00),
        ),
        (vec![(ten_off, DiscountDuration::Forever)], dec!(90.00)),
        // In order: 10.00 off, then 20 % of the 90.00 left.
        (
            vec![
                (ten_off, DiscountDuration::Forever),
                (twenty_percent, DiscountDuration::Forever),
            ],
            dec!(72.00),
        ),
        (
            vec![(
                Discount::Amount {
                    amount: usd(dec!(150)),
                },
                DiscountDuration::Forever,
            )],
            dec!(0),
        ),
    ];
    for (discounts, expected) in discount_cases {
        assert_eq!(
            subscription_mrr(&discounted(discounts)).unwrap(),
            usd(expected)
        );
    }
    let too_much = discounted(vec![(
        Discount::Percent { percent: dec!(101) },
        DiscountDuration::Forever,
    )]);
    assert_eq!(
        subscription_mrr(&too_much),
        Err(FinanceError::InvalidPercentage { percent: dec!(101) })
    );
    // A yearly plan with a forever 25 % discount: 1,200 × 0.75 ÷ 12 = 75.
    let yearly = SubscriptionMrrInput {
        interval: MrrInterval::Months(12),
        discounts: vec![(
            Discount::Percent { percent: dec!(25) },
            DiscountDuration::Forever,
        )],
        ..monthly(SubscriptionStatus::Active, dec!(1200.00))
    };
    assert_eq!(subscription_mrr(&yearly).unwrap(), usd(dec!(75)));
}

/// One customer's subscriptions at successive instants → their MRR history → movements.
fn movements_of(states: &[(DateTime<Utc>, Vec<SubscriptionMrrInput>)]) -> Vec<MrrMovement> {
    let history: Vec<MrrChange> = states
        .iter()
        .map(|(at, subscriptions)| MrrChange {
            at: *at,
            mrr: customer_mrr(Currency::USD, subscriptions).unwrap(),
        })
        .collect();
    mrr_movements(&history, TimeDelta::zero()).unwrap()
}

#[test]
fn one_table_row_per_movement_kind() {
    use MovementKind::{Churn, Contraction, Expansion, New, Reactivation};
    use SubscriptionStatus::{Active, Canceled, Trialing};
    let pro = |status| monthly(status, dec!(49.00));
    let business = |status| monthly(status, dec!(99.00));
    let yearly_business = SubscriptionMrrInput {
        interval: MrrInterval::Months(12),
        ..monthly(Active, dec!(1188.00))
    };
    let forever_half_off = SubscriptionMrrInput {
        discounts: vec![(
            Discount::Percent { percent: dec!(50) },
            DiscountDuration::Forever,
        )],
        ..pro(Active)
    };
    type Row = (
        &'static str,
        Vec<(DateTime<Utc>, Vec<SubscriptionMrrInput>)>,
        Vec<(MovementKind, Decimal, Decimal)>,
    );
    let rows: Vec<Row> = vec![
        (
            "new",
            vec![(day(1, 1), vec![pro(Active)])],
            vec![(New, dec!(0), dec!(49.00))],
        ),
        (
            "expansion by upgrade",
            vec![
                (day(1, 1), vec![pro(Active)]),
                (day(1, 10), vec![business(Active)]),
            ],
            vec![
                (New, dec!(0), dec!(49.00)),
                (Expansion, dec!(49.00), dec!(99.00)),
            ],
        ),
        (
            "contraction by downgrade",
            vec![
                (day(1, 1), vec![business(Active)]),
                (day(2, 1), vec![pro(Active)]),
            ],
            vec![
                (New, dec!(0), dec!(99.00)),
                (Contraction, dec!(99.00), dec!(49.00)),
            ],
        ),
        (
            "churn at period end",
            vec![
                (day(1, 1), vec![pro(Active)]),
                (day(2, 1), vec![pro(Canceled)]),
            ],
            vec![(New, dec!(0), dec!(49.00)), (Churn, dec!(49.00), dec!(0))],
        ),
        (
            "reactivation",
            vec![
                (day(1, 1), vec![pro(Active)]),
                (day(2, 1), vec![pro(Canceled)]),
                (day(3, 5), vec![pro(Canceled), business(Active)]),
            ],
            vec![
                (New, dec!(0), dec!(49.00)),
                (Churn, dec!(49.00), dec!(0)),
                (Reactivation, dec!(0), dec!(99.00)),
            ],
        ),
        (
            "a forever discount added later is a contraction",
            vec![
                (day(1, 1), vec![pro(Active)]),
                (day(1, 15), vec![forever_half_off]),
            ],
            vec![
                (New, dec!(0), dec!(49.00)),
                (Contraction, dec!(49.00), dec!(24.50)),
            ],
        ),
        (
            "a yearly plan counts ÷ 12",
            vec![(day(1, 1), vec![yearly_business])],
            vec![(New, dec!(0), dec!(99))],
        ),
        (
            "a trial is excluded until it converts",
            vec![
                (day(1, 1), vec![pro(Trialing)]),
                (day(1, 15), vec![pro(Active)]),
            ],
            vec![(New, dec!(0), dec!(49.00))],
        ),
        (
            "a second subscription is expansion",
            vec![
                (day(1, 1), vec![pro(Active)]),
                (day(1, 20), vec![pro(Active), pro(Active)]),
            ],
            vec![
                (New, dec!(0), dec!(49.00)),
                (Expansion, dec!(49.00), dec!(98.00)),
            ],
        ),
    ];
    for (name, states, expected) in rows {
        assert_eq!(summary(&movements_of(&states)), expected, "{name}");
    }
    // The trial's movement is dated at the conversion, not at the trial's start.
    let trial = movements_of(&[
        (day(1, 1), vec![pro(Trialing)]),
        (day(1, 15), vec![pro(Active)]),
    ]);
    assert_eq!(trial[0].at, day(1, 15));
}

#[test]
fn changes_inside_the_window_are_one_movement() {
    let history = [
        change(day(1, 1), dec!(49)),
        change(day(3, 1), dec!(99)),
        change(day(3, 1) + Duration::hours(2), dec!(49)), // upgrade undone two hours later
        change(day(4, 1), dec!(0)),
        change(day(4, 2), dec!(20)), // churned and came back the next day, smaller
    ];
    let grouped = mrr_movements(&history, Duration::days(1)).unwrap();
    assert_eq!(
        summary(&grouped),
        [
            (MovementKind::New, dec!(0), dec!(49)),
            (MovementKind::Contraction, dec!(49), dec!(20)),
        ]
    );
    assert_eq!(grouped[1].at, day(4, 2), "dated at the group's last change");
    let ungrouped = mrr_movements(&history, TimeDelta::zero()).unwrap();
    assert_eq!(
        ungrouped.iter().map(|m| m.kind).collect::<Vec<_>>(),
        [
            MovementKind::New,
            MovementKind::Expansion,
            MovementKind::Contraction,
            MovementKind::Churn,
            MovementKind::Reactivation,
        ]
    );
}

#[test]
fn bad_histories_are_refused() {
    let unordered = [change(day(1, 2), dec!(1)), change(day(1, 2), dec!(2))];
    assert_eq!(
        mrr_movements(&unordered, TimeDelta::zero()),
        Err(FinanceError::UnorderedHistory { index: 1 })
    );
    let euros = [
        change(day(1, 1), dec!(1)),
        MrrChange {
            at: day(1, 2),
            mrr: Money::new(dec!(1), Currency::EUR),
        },
    ];
    assert!(matches!(
        mrr_movements(&euros, TimeDelta::zero()),
        Err(FinanceError::CurrencyMismatch { .. })
    ));
    let negative = [change(day(1, 1), dec!(-1))];
    assert!(matches!(
        mrr_movements(&negative, TimeDelta::zero()),
        Err(FinanceError::WrongSign { .. })
    ));
    assert!(mrr_movements(&[], TimeDelta::zero()).unwrap().is_empty());
}

/// ChartMogul: $100 MRR at the start of the month, $10 lost to churn and $10 to
/// contraction, one customer +$10 → gross MRR churn 20 %, net MRR churn 10 %.
#[test]
fn chartmogul_churn_rate_example() {
    let start = day(1, 1);
    let customers = [
        vec![change(start, dec!(40))],
        vec![change(start, dec!(30)), change(day(1, 12), dec!(40))], // +10 expansion
        vec![change(start, dec!(20)), change(day(1, 20), dec!(10))], // −10 contraction
        vec![change(start, dec!(10)), change(day(1, 31), dec!(0))],  // −10 churn
    ];
    let mut in_month = Vec::new();
    for history in &customers {
        let movements = mrr_movements(history, TimeDelta::zero()).unwrap();
        in_month.extend(movements.into_iter().filter(|m| m.at > start));
    }
    let totals = MovementTotals::of(Currency::USD, &in_month).unwrap();
    assert_eq!(
        totals,
        MovementTotals {
            new: usd(dec!(0)),
            expansion: usd(dec!(10)),
            contraction: usd(dec!(10)),
            churn: usd(dec!(10)),
            reactivation: usd(dec!(0)),
        }
    );
    let starting = usd(dec!(100));
    assert_eq!(gross_mrr_churn_rate(&totals, starting), Some(dec!(0.2)));
    assert_eq!(net_mrr_churn_rate(&totals, starting), Some(dec!(0.1)));
    assert_eq!(quick_ratio(&totals), Some(dec!(0.5)));
    assert_eq!(totals.net_change().unwrap(), usd(dec!(-10)));
    assert_eq!(gross_mrr_churn_rate(&totals, usd(dec!(0))), None);
    assert_eq!(quick_ratio(&MovementTotals::zero(Currency::USD)), None);
}

#[test]
fn arr_arpa_and_retention() {
    let mrr = usd(dec!(1000.00));
    assert_eq!(arr(mrr).unwrap(), usd(dec!(12000.00)));
    assert_eq!(arpa(mrr, 8), Some(usd(dec!(125))));
    assert_eq!(arpa(mrr, 0), None);
    // 100.00 over 3 customers: 33.333…, shown as 33.33.
    assert_eq!(
        round_for_report(arpa(usd(dec!(100.00)), 3).unwrap()),
        usd(dec!(33.33))
    );
    let member = |starting, ending| CohortMember {
        starting_mrr: usd(starting),
        ending_mrr: usd(ending),
    };
    // Started at 100 + 50 + 50 = 200; kept 100 + 0 + 40 = 140; ended at 120 + 0 + 40 = 160.
    let cohort = [
        member(dec!(100), dec!(120)),
        member(dec!(50), dec!(0)),
        member(dec!(50), dec!(40)),
        member(dec!(0), dec!(80)), // not paying at the start: not in the cohort
    ];
    assert_eq!(
        revenue_retention(Currency::USD, &cohort).unwrap(),
        Some(Retention {
            gross: dec!(0.7),
            net: dec!(0.8)
        })
    );
    assert_eq!(revenue_retention(Currency::USD, &[]).unwrap(), None);
}

#[test]
fn usage_run_rate_sums_the_trailing_30_days() {
    let recognised = |month, day_of_month, amount| RecognitionDay {
        day: chrono::NaiveDate::from_ymd_opt(2025, month, day_of_month).unwrap(),
        amount: usd(amount),
    };
    let days = [
        recognised(1, 31, dec!(100.00)), // 31 days before 2 March: outside
        recognised(2, 1, dec!(10.00)),   // the window's first day
        recognised(2, 14, dec!(2.35)),
        recognised(3, 2, dec!(0.65)),  // its last day
        recognised(3, 3, dec!(50.00)), // after it
    ];
    let last_day = chrono::NaiveDate::from_ymd_opt(2025, 3, 2).unwrap();
    assert_eq!(
        usage_run_rate(Currency::USD, &days, last_day).unwrap(),
        usd(dec!(13.00))
    );
    assert!(matches!(
        usage_run_rate(Currency::EUR, &days, last_day),
        Err(FinanceError::Money(_))
    ));
}

/// The customer's MRR at `at` by the history itself (zero before its first change).
fn raw_mrr_at(history: &[MrrChange], at: DateTime<Utc>) -> Decimal {
    history
        .iter()
        .rev()
        .find(|change| change.at <= at)
        .map_or(Decimal::ZERO, |change| change.mrr.amount())
}

fn sum_between(movements: &[MrrMovement], from: DateTime<Utc>, to: DateTime<Utc>) -> Decimal {
    movements
        .iter()
        .filter(|movement| from < movement.at && movement.at <= to)
        .map(|movement| movement.amount().unwrap().amount())
        .sum()
}

proptest! {
    #[test]
    fn movements_add_up_to_the_change_in_mrr(
        steps in proptest::collection::vec((1i64..=(20 * 86_400), prop_oneof![Just(0i64), 1i64..=1_000_000]), 0..25),
        window_seconds in 0i64..=(5 * 86_400),
        range in (0i64..=(300 * 86_400), 0i64..=(300 * 86_400)),
    ) {
        let mut at = day(1, 1);
        let mut history = Vec::new();
        for (gap_seconds, cents) in steps {
            at += Duration::seconds(gap_seconds);
            history.push(MrrChange { at, mrr: Money::from_minor_units(i128::from(cents), Currency::USD).unwrap() });
        }
        let (from, to) = (day(1, 1) + Duration::seconds(range.0.min(range.1)), day(1, 1) + Duration::seconds(range.0.max(range.1)));

        // Ungrouped: over any range, the movements sum to the change of the MRR itself.
        let each = mrr_movements(&history, TimeDelta::zero()).unwrap();
        prop_assert_eq!(sum_between(&each, from, to), raw_mrr_at(&history, to) - raw_mrr_at(&history, from));

        // Grouped: over the whole history they sum to the final MRR; over any range to the
        // change of the grouped MRR; they chain; each kind has its sign.
        let grouped = mrr_movements(&history, Duration::seconds(window_seconds)).unwrap();
        let final_mrr = history.last().map_or(Decimal::ZERO, |change| change.mrr.amount());
        prop_assert_eq!(sum_between(&grouped, day(1, 1) - Duration::days(1), at), final_mrr);
        let totals = MovementTotals::of(Currency::USD, &grouped).unwrap();
        prop_assert_eq!(totals.net_change().unwrap().amount(), final_mrr);
        let grouped_at = |instant: DateTime<Utc>| grouped.iter().rev().find(|m| m.at <= instant).map_or(Decimal::ZERO, |m| m.to_mrr.amount());
        prop_assert_eq!(sum_between(&grouped, from, to), grouped_at(to) - grouped_at(from));
        let mut previous = Decimal::ZERO;
        let mut news = 0;
        for movement in &grouped {
            prop_assert_eq!(movement.from_mrr.amount(), previous);
            previous = movement.to_mrr.amount();
            let amount = movement.amount().unwrap().amount();
            match movement.kind {
                MovementKind::New => { news += 1; prop_assert!(amount > Decimal::ZERO && movement.from_mrr.is_zero()); }
                MovementKind::Reactivation => prop_assert!(amount > Decimal::ZERO && movement.from_mrr.is_zero()),
                MovementKind::Expansion => prop_assert!(amount > Decimal::ZERO && !movement.from_mrr.is_zero()),
                MovementKind::Contraction => prop_assert!(amount < Decimal::ZERO && !movement.to_mrr.is_zero()),
                MovementKind::Churn => prop_assert!(amount < Decimal::ZERO && movement.to_mrr.is_zero()),
            }
        }
        prop_assert!(news <= 1);
        if let Some(first) = grouped.first() {
            prop_assert_eq!(first.kind, MovementKind::New);
        }
    }
}
