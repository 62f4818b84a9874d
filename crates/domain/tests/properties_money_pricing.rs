//! Property tests: rounding and allocation never lose a minor unit; graduated pricing is
//! additive; volume and graduated agree on a single tier; percentage pricing's free
//! allowances follow time, stay within what was offered and explain every fee, under both
//! allowance policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_domain::ids::EventId;
use tally_domain::money::{Currency, Money, RoundingMode};
use tally_domain::pricing::{
    AllowancePolicy, BreakdownItem, Percentage, PercentageSpec, Tier, Tiered, TieredSpec,
    Transaction, TransactionTotals,
};

fn decimal(max_mantissa: i64, max_scale: u32) -> impl Strategy<Value = Decimal> {
    (-max_mantissa..=max_mantissa, 0..=max_scale)
        .prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
}

fn non_negative(max_mantissa: i64, max_scale: u32) -> impl Strategy<Value = Decimal> {
    (0..=max_mantissa, 0..=max_scale).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec![
        Currency::USD,
        Currency::JPY,
        Currency::KWD,
        Currency::CLF,
        Currency::EUR,
    ])
}

fn mode() -> impl Strategy<Value = RoundingMode> {
    prop::sample::select(vec![
        RoundingMode::HalfUp,
        RoundingMode::HalfEven,
        RoundingMode::Up,
        RoundingMode::Down,
    ])
}

/// 1 to 6 tiers with strictly increasing bounds, the last open-ended.
fn tiers() -> impl Strategy<Value = Tiered> {
    prop::collection::vec(
        (
            1_i64..=5_000,
            non_negative(10_000, 4),
            non_negative(1_000, 2),
        ),
        1..=6,
    )
    .prop_map(|raw| {
        let count = raw.len();
        let mut bound = Decimal::ZERO;
        let tiers = raw
            .into_iter()
            .enumerate()
            .map(|(index, (step, unit_price, flat_fee))| {
                bound += Decimal::new(step, 1);
                Tier {
                    up_to: (index + 1 < count).then_some(bound),
                    unit_price,
                    flat_fee,
                }
            })
            .collect();
        Tiered::new(TieredSpec { tiers }).unwrap()
    })
}

proptest! {
    #[test]
    fn rounding_stays_within_one_minor_unit_and_respects_its_direction(
        amount in decimal(i64::MAX / 4, 12), currency in currency(), mode in mode(),
    ) {
        let precise = Money::new(amount, currency);
        let rounded = precise.round(mode);
        prop_assert!(rounded.is_rounded());
        let unit = Decimal::new(1, currency.minor_units());
        let error = (rounded.amount() - amount).abs();
        prop_assert!(error < unit);
        match mode {
            RoundingMode::HalfUp | RoundingMode::HalfEven => prop_assert!(error * Decimal::TWO <= unit),
            RoundingMode::Up => prop_assert!(rounded.amount().abs() >= amount.abs()),
            RoundingMode::Down => prop_assert!(rounded.amount().abs() <= amount.abs()),
        }
        // Rounding an already rounded amount changes nothing.
        prop_assert_eq!(rounded.round(mode), rounded);
    }

    #[test]
    fn allocation_sums_exactly_and_each_part_is_within_one_minor_unit_of_its_share(
        minor_units in -10_000_000_000_i64..=10_000_000_000, currency in currency(),
        weights in prop::collection::vec(non_negative(1_000_000, 4), 1..=12),
    ) {
        prop_assume!(weights.iter().any(|weight| !weight.is_zero()));
        let total = Money::from_minor_units(minor_units.into(), currency).unwrap();
        let parts = total.allocate(&weights).unwrap();
        prop_assert_eq!(parts.len(), weights.len());
        prop_assert_eq!(Money::sum(currency, &parts).unwrap(), total);
        let weight_sum: Decimal = weights.iter().sum();
        let unit = Decimal::new(1, currency.minor_units());
        for (part, weight) in parts.iter().zip(&weights) {
            prop_assert!(part.is_rounded());
            let exact_share = total.amount() * *weight / weight_sum;
            prop_assert!((part.amount() - exact_share).abs() < unit);
        }
    }

    #[test]
    fn graduated_price_of_a_plus_b_is_price_of_a_plus_marginal_price_of_b(
        tiers in tiers(), a in non_negative(1_000_000, 2), b in non_negative(1_000_000, 2),
    ) {
        let whole = tiers.price_graduated(a + b).unwrap().total();
        let first = tiers.price_graduated(a).unwrap().total();
        let marginal = tiers.price_marginal(a, b).unwrap().total();
        prop_assert_eq!(whole, first + marginal);
        prop_assert!(whole >= first, "graduated pricing never decreases");
    }

    #[test]
    fn graduated_breakdown_sums_to_its_total_and_covers_the_quantity(
        tiers in tiers(), quantity in non_negative(1_000_000, 3),
    ) {
        let breakdown = tiers.price_graduated(quantity).unwrap();
        let mut amount_sum = Decimal::ZERO;
        let mut quantity_sum = Decimal::ZERO;
        for item in breakdown.items() {
            match item {
                tally_domain::pricing::BreakdownItem::Tier { quantity, amount, .. } => {
                    amount_sum += *amount;
                    quantity_sum += *quantity;
                }
                other => prop_assert!(false, "unexpected item {:?}", other),
            }
        }
        prop_assert_eq!(amount_sum, breakdown.total());
        prop_assert_eq!(quantity_sum, quantity);
    }

    #[test]
    fn volume_and_graduated_agree_on_a_single_tier(
        unit_price in non_negative(1_000_000, 6), flat_fee in non_negative(10_000, 2),
        quantity in non_negative(1_000_000_000, 4),
    ) {
        let single = Tiered::new(TieredSpec { tiers: vec![Tier { up_to: None, unit_price, flat_fee }] }).unwrap();
        prop_assert_eq!(
            single.price_volume(quantity).unwrap().total(),
            single.price_graduated(quantity).unwrap().total()
        );
    }
}

/// A percentage price with both allowances possibly offered (either may be zero), limits
/// possibly set; the policy is set by each property.
fn percentage_spec() -> impl Strategy<Value = PercentageSpec> {
    (
        non_negative(10_000, 2),
        non_negative(100, 2),
        prop::option::of(non_negative(200, 2)),
        prop::option::of(non_negative(2_000, 2)),
        0_u64..=5,
        prop_oneof![Just(Decimal::ZERO), non_negative(100_000, 2)],
    )
        .prop_map(
            |(rate, fixed_fee, minimum, maximum, free_transactions, free_volume)| {
                // Keep the minimum at or below the maximum.
                let (minimum, maximum) = match (minimum, maximum) {
                    (Some(low), Some(high)) if low > high => (Some(high), Some(low)),
                    limits => limits,
                };
                PercentageSpec {
                    rate_percent: rate.min(Decimal::ONE_HUNDRED),
                    fixed_fee,
                    min_per_transaction: minimum,
                    max_per_transaction: maximum,
                    free_transactions,
                    free_volume,
                    allowance_policy: AllowancePolicy::Sequential,
                }
            },
        )
}

/// Up to 12 transactions at a few distinct instants (ties broken by event id), in arrival
/// order.
fn transactions() -> impl Strategy<Value = Vec<Transaction>> {
    prop::collection::vec((0_u32..8, non_negative(100_000, 2)), 0..=12).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(index, (second, amount))| Transaction {
                event_id: EventId::parse(&format!("tx-{index:02}")).unwrap(),
                timestamp: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, second).unwrap(),
                amount,
            })
            .collect()
    })
}

fn priced(
    spec: &PercentageSpec,
    policy: AllowancePolicy,
    transactions: &[Transaction],
) -> TransactionTotals {
    let model = Percentage::new(PercentageSpec {
        allowance_policy: policy,
        ..spec.clone()
    })
    .unwrap();
    let breakdown = model.price(transactions).unwrap();
    match breakdown.items() {
        [BreakdownItem::Transactions(totals)] => {
            assert_eq!(totals.amount, breakdown.total());
            totals.clone()
        }
        other => panic!("unexpected items {other:?}"),
    }
}

const POLICIES: [AllowancePolicy; 2] =
    [AllowancePolicy::Sequential, AllowancePolicy::FirstExhausted];

proptest! {
    #[test]
    fn percentage_allowances_follow_time_not_arrival_order(
        spec in percentage_spec(), transactions in transactions(), rotation in 0_usize..12,
    ) {
        let mut rearranged = transactions.clone();
        rearranged.reverse();
        if !rearranged.is_empty() {
            let by = rotation % rearranged.len();
            rearranged.rotate_left(by);
        }
        for policy in POLICIES {
            prop_assert_eq!(
                priced(&spec, policy, &transactions),
                priced(&spec, policy, &rearranged)
            );
        }
    }

    #[test]
    fn percentage_fees_add_up_and_allowances_stay_within_what_was_offered(
        spec in percentage_spec(), transactions in transactions(),
    ) {
        for policy in POLICIES {
            let totals = priced(&spec, policy, &transactions);
            prop_assert_eq!(totals.allowance_policy, policy);
            prop_assert_eq!(
                totals.amount,
                totals.percentage_fees + totals.fixed_fees + totals.per_transaction_limits
            );
            prop_assert_eq!(totals.count, transactions.len() as u64);
            prop_assert!(totals.free_count <= spec.free_transactions);
            prop_assert!(totals.free_volume <= spec.free_volume);
            prop_assert!(totals.rated_volume + totals.free_volume <= totals.volume);
            prop_assert_eq!(
                totals.percentage_fees,
                totals.rated_volume * spec.rate_percent / Decimal::ONE_HUNDRED
            );
            prop_assert_eq!(
                totals.fixed_fees,
                Decimal::from(totals.charged_count()) * spec.fixed_fee
            );
            if let Some(range) = totals.free_volume_transactions {
                prop_assert!(1 <= range.first && range.first <= range.last);
                prop_assert!(range.last <= totals.count);
            } else {
                prop_assert_eq!(totals.free_volume, Decimal::ZERO);
            }
            match (&totals.allowances_ended, policy) {
                (None, _) => {}
                (Some(ended), AllowancePolicy::FirstExhausted) => {
                    prop_assert!(ended.at_transaction <= totals.count);
                    // Free transactions come first and stop where the allowances end.
                    prop_assert!(totals.free_count <= ended.at_transaction);
                    prop_assert_eq!(
                        totals.free_count + ended.forfeited_transactions,
                        spec.free_transactions
                    );
                    prop_assert_eq!(
                        totals.free_volume + ended.forfeited_volume,
                        spec.free_volume
                    );
                }
                (Some(ended), AllowancePolicy::Sequential) => {
                    prop_assert!(false, "sequential allowances never end together: {:?}", ended);
                }
            }
        }
    }

    #[test]
    fn first_exhausted_never_gives_away_more_than_sequential(
        spec in percentage_spec(), transactions in transactions(),
    ) {
        let sequential = priced(&spec, AllowancePolicy::Sequential, &transactions);
        let first_exhausted = priced(&spec, AllowancePolicy::FirstExhausted, &transactions);
        prop_assert!(first_exhausted.amount >= sequential.amount);
        prop_assert!(first_exhausted.free_count <= sequential.free_count);
    }

    #[test]
    fn with_one_allowance_offered_the_policies_agree(
        spec in percentage_spec(), transactions in transactions(), keep_transactions in any::<bool>(),
    ) {
        let one = if keep_transactions {
            PercentageSpec { free_volume: Decimal::ZERO, ..spec }
        } else {
            PercentageSpec { free_transactions: 0, ..spec }
        };
        let sequential = priced(&one, AllowancePolicy::Sequential, &transactions);
        let first_exhausted = priced(&one, AllowancePolicy::FirstExhausted, &transactions);
        prop_assert_eq!(
            TransactionTotals { allowance_policy: AllowancePolicy::Sequential, ..first_exhausted },
            sequential
        );
    }

    #[test]
    fn a_later_transaction_never_lowers_the_price(
        spec in percentage_spec(), transactions in transactions(), amount in non_negative(100_000, 2),
    ) {
        let mut more = transactions.clone();
        more.push(Transaction {
            event_id: EventId::parse("tx-last").unwrap(),
            timestamp: Utc.with_ymd_and_hms(2025, 3, 1, 0, 1, 0).unwrap(),
            amount,
        });
        for policy in POLICIES {
            let before = priced(&spec, policy, &transactions);
            let after = priced(&spec, policy, &more);
            prop_assert!(after.amount >= before.amount, "{:?}", policy);
            // Earlier transactions keep their allowances.
            prop_assert!(after.free_count >= before.free_count);
        }
    }
}
