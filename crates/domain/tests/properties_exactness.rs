//! Property tests: within the bounds of `tally_domain::bounds`, aggregates and prices are
//! exact (compared with integer arithmetic); outside them, a sum or a price is exact or
//! refused, never rounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_domain::bounds;
use tally_domain::exact;
use tally_domain::ids::EventId;
use tally_domain::meter::{AggregateState, Aggregation, Measure, Reading};
use tally_domain::pricing::{
    ChargePrice, ChargePriceSpec, PerUnit, PerUnitSpec, PriceModel, PricingError, Tier, Tiered,
    TieredSpec, Usage,
};

/// A decimal below `10^integer_digits` in absolute value with up to `max_scale` places.
fn bounded(integer_digits: u32, max_scale: u32, signed: bool) -> impl Strategy<Value = Decimal> {
    (0..=max_scale).prop_flat_map(move |scale| {
        let limit = 10_i128.pow(integer_digits + scale) - 1;
        let low = if signed { -limit } else { 0 };
        (low..=limit).prop_map(move |mantissa| Decimal::from_i128_with_scale(mantissa, scale))
    })
}

/// `value × 10^scale` as an integer (`value` has at most `scale` places).
fn fixed(value: Decimal, scale: u32) -> i128 {
    assert!(
        value.scale() <= scale,
        "{value} has more than {scale} places"
    );
    value.mantissa() * 10_i128.pow(scale - value.scale())
}

/// The exact value `mantissa / 10^scale` as a `Decimal`, if one can hold it.
fn representable(mut mantissa: i128, mut scale: u32) -> Option<Decimal> {
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if scale > 28 {
        return None;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

/// A quantity with at most 6 places and a price within the catalog bounds whose product
/// is at most 10^10: the envelope `bounds` promises exact.
fn quantity_and_price() -> impl Strategy<Value = (Decimal, Decimal)> {
    (0_u32..=9).prop_flat_map(|price_digits| {
        let quantity_digits = (10 - price_digits).min(15);
        (
            bounded(quantity_digits, bounds::MAX_PRICE_QUANTITY_SCALE, false),
            bounded(price_digits, bounds::MAX_PRICE_SCALE, false),
        )
    })
}

/// 1 to 5 tiers: bounds within the catalog bounds, unit prices below 10^price_digits,
/// flat fees up to 10^9; with a quantity below 10^(10 - price_digits).
fn tiers_and_quantity() -> impl Strategy<Value = (Vec<Tier>, Decimal)> {
    (0_u32..=9).prop_flat_map(|price_digits| {
        let quantity_digits = (10 - price_digits).min(15);
        (
            prop::collection::vec(
                (
                    bounded(quantity_digits, 6, false),
                    bounded(price_digits, 12, false),
                    bounded(9, 12, false),
                ),
                1..=5,
            ),
            bounded(quantity_digits, 6, false),
        )
            .prop_map(|(raw, quantity)| {
                let mut bounds: Vec<Decimal> = raw
                    .iter()
                    .map(|(bound, _, _)| *bound)
                    .filter(|bound| *bound > Decimal::ZERO)
                    .collect();
                bounds.sort();
                bounds.dedup();
                let count = raw.len().min(bounds.len() + 1);
                let tiers = raw
                    .into_iter()
                    .take(count)
                    .enumerate()
                    .map(|(index, (_, unit_price, flat_fee))| Tier {
                        up_to: bounds.get(index).copied().filter(|_| index + 1 < count),
                        unit_price,
                        flat_fee,
                    })
                    .collect();
                (tiers, quantity)
            })
    })
}

/// Graduated price in units of 10^-18, computed with integers.
fn graduated_atto(tiers: &[Tier], quantity: Decimal) -> i128 {
    let quantity = fixed(quantity, 6);
    let mut lower = 0_i128;
    let mut total = 0_i128;
    for tier in tiers {
        let upper = tier.up_to.map_or(i128::MAX, |up_to| fixed(up_to, 6));
        let inside = quantity.min(upper) - lower;
        if inside > 0 {
            total += inside * fixed(tier.unit_price, 12) + fixed(tier.flat_fee, 12) * 1_000_000;
        }
        if upper == i128::MAX {
            break;
        }
        lower = upper;
    }
    total
}

fn sum_state(values: &[Decimal]) -> Result<AggregateState, tally_domain::meter::MeterError> {
    let ids: Vec<EventId> = (0..values.len())
        .map(|index| EventId::parse(&format!("e{index}")).unwrap())
        .collect();
    let mut state = AggregateState::new(&Aggregation::Sum {
        property: "p".into(),
    });
    for (value, id) in values.iter().zip(&ids) {
        state.absorb(&Reading {
            event_id: id,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            measure: Measure::Number(*value),
        })?;
    }
    Ok(state)
}

fn value(state: &AggregateState) -> Decimal {
    match state {
        AggregateState::Sum { sum } => *sum,
        other => panic!("not a sum: {other:?}"),
    }
}

proptest! {
    #[test]
    fn sums_of_bounded_readings_are_exact_in_any_split(
        values in prop::collection::vec(bounded(15, 6, true), 1..300),
        split in any::<prop::sample::Index>(),
    ) {
        let expected: i128 = values.iter().map(|value| fixed(*value, 6)).sum();
        let whole = sum_state(&values).unwrap();
        prop_assert_eq!(fixed(value(&whole), 6), expected);
        let at = split.index(values.len());
        let mut left = sum_state(&values[..at]).unwrap();
        left.merge(&sum_state(&values[at..]).unwrap()).unwrap();
        prop_assert_eq!(fixed(value(&left), 6), expected);
        prop_assert!(bounds::check_aggregate(value(&whole)).is_ok());
    }

    #[test]
    fn sums_of_readings_as_ingest_bounds_them_are_exact_up_to_ten_to_the_16(
        values in prop::collection::vec(bounded(15, 12, true), 1..=9),
    ) {
        let expected: i128 = values.iter().map(|value| fixed(*value, 12)).sum();
        let whole = sum_state(&values).unwrap();
        prop_assert_eq!(fixed(value(&whole), 12), expected);
    }

    #[test]
    fn per_unit_prices_within_the_bounds_are_exact(
        (quantity, unit_price) in quantity_and_price(),
    ) {
        prop_assert!(bounds::check_price(unit_price).is_ok());
        let charge = ChargePrice::new(ChargePriceSpec::plain(PriceModel::PerUnit(
            PerUnit::new(PerUnitSpec { unit_price }).unwrap(),
        )))
        .unwrap();
        let total = charge.price(Usage::Quantity(quantity)).unwrap().total();
        prop_assert_eq!(fixed(total, 18), fixed(quantity, 6) * fixed(unit_price, 12));
        prop_assert!(bounds::check_line_amount(total).is_ok());
    }

    #[test]
    fn graduated_and_volume_prices_within_the_bounds_are_exact(
        (tiers, quantity) in tiers_and_quantity(),
    ) {
        let tiered = Tiered::new(TieredSpec { tiers: tiers.clone() }).unwrap();
        let graduated = tiered.price_graduated(quantity).unwrap().total();
        prop_assert_eq!(fixed(graduated, 18), graduated_atto(&tiers, quantity));
        let volume = tiered.price_volume(quantity).unwrap().total();
        prop_assert!(volume.scale() <= 18);
    }

    #[test]
    fn a_sum_is_exact_or_refused_never_rounded(
        left in (-1_000_000_000_i64..=1_000_000_000, 0_u32..=28),
        right in (-1_000_000_000_i64..=1_000_000_000, 0_u32..=28),
    ) {
        let (a, b) = (Decimal::new(left.0, left.1), Decimal::new(right.0, right.1));
        let scale = left.1.max(right.1);
        let exact_sum = i128::from(left.0) * 10_i128.pow(scale - left.1)
            + i128::from(right.0) * 10_i128.pow(scale - right.1);
        prop_assert_eq!(exact::add(a, b), representable(exact_sum, scale));
    }

    #[test]
    fn a_price_is_exact_or_refused_never_rounded(
        quantity in (0_i64..=i64::MAX, 0_u32..=28),
        unit_price in (0_i64..=i64::MAX, 0_u32..=28),
    ) {
        let per_unit = PerUnit::new(PerUnitSpec { unit_price: Decimal::new(unit_price.0, unit_price.1) })
            .unwrap();
        let priced = per_unit.price(Decimal::new(quantity.0, quantity.1));
        let exact_product = representable(
            i128::from(quantity.0) * i128::from(unit_price.0),
            quantity.1 + unit_price.1,
        );
        match (priced, exact_product) {
            (Ok(breakdown), Some(product)) => prop_assert_eq!(breakdown.total(), product),
            (Err(PricingError::Overflow), None) => {}
            (priced, product) => prop_assert!(false, "priced {:?}, exact {:?}", priced, product),
        }
    }
}

#[test]
fn the_issue_s_extremes_are_refused_not_rounded() {
    let tiny = Decimal::new(1, 28);
    let five_million = Decimal::new(-5_000_000, 0);
    assert_eq!(five_million.checked_add(tiny), Some(five_million));
    assert_eq!(exact::add(five_million, tiny), None);
    assert!(sum_state(&[five_million, tiny]).is_err());
    assert!(sum_state(&[Decimal::new(1000, 0), Decimal::MAX]).is_err());
    assert!(sum_state(&[Decimal::MAX]).is_ok());
    assert!(bounds::check_aggregate(Decimal::MAX).is_err());
}
