//! Property tests: rounding and allocation never lose a minor unit; graduated pricing is
//! additive; volume and graduated agree on a single tier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_domain::money::{Currency, Money, RoundingMode};
use tally_domain::pricing::{Tier, Tiered, TieredSpec};

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
