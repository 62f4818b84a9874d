//! Named rounding modes. Tally rounds once, per invoice line, with one of these.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The rounding of every invoice line: rating's usage lines and invoicing's fee,
/// credit and adjustment lines round their precise amount to the currency's minor
/// units with this one mode, so the live cost rating shows and the invoice agree.
///
/// Half-even (banker's rounding) because a line rounds once and invoices sum many
/// lines: half-up sends every exact tie (`0.125` → `0.13`) the same way, so a bill
/// of many small usage lines drifts upwards by up to half a minor unit per tie;
/// half-even sends ties to the even neighbour, half one way and half the other, so
/// the rounded lines of an invoice sum to its precise total without a systematic
/// bias. It is also the default of `rating.proto` and of IEEE 754 decimal arithmetic.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::money::LINE_ROUNDING;
///
/// assert_eq!(LINE_ROUNDING.round(dec!(0.125), 2), dec!(0.12));
/// assert_eq!(LINE_ROUNDING.round(dec!(0.135), 2), dec!(0.14));
/// assert_eq!(LINE_ROUNDING.round(dec!(-0.125), 2), dec!(-0.12));
/// ```
pub const LINE_ROUNDING: RoundingMode = RoundingMode::HalfEven;

/// How a precise amount becomes an amount in the currency's minor units.
///
/// The names describe the magnitude, so negative amounts (credits) round
/// symmetrically with positive ones:
///
/// | mode | 2.345 | 2.355 | 2.341 | -2.345 |
/// |---|---|---|---|---|
/// | `HalfUp` (half away from zero) | 2.35 | 2.36 | 2.34 | -2.35 |
/// | `HalfEven` (banker's rounding) | 2.34 | 2.36 | 2.34 | -2.34 |
/// | `Up` (away from zero) | 2.35 | 2.36 | 2.35 | -2.35 |
/// | `Down` (toward zero, truncate) | 2.34 | 2.35 | 2.34 | -2.34 |
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::money::RoundingMode;
///
/// assert_eq!(RoundingMode::HalfUp.round(dec!(2.345), 2), dec!(2.35));
/// assert_eq!(RoundingMode::HalfEven.round(dec!(2.345), 2), dec!(2.34));
/// assert_eq!(RoundingMode::Up.round(dec!(2.341), 2), dec!(2.35));
/// assert_eq!(RoundingMode::Down.round(dec!(-2.349), 2), dec!(-2.34));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Round to nearest; a tie goes away from zero (2.5 → 3, -2.5 → -3).
    HalfUp,
    /// Round to nearest; a tie goes to the even neighbour (2.5 → 2, 3.5 → 4).
    HalfEven,
    /// Any remainder goes away from zero (2.01 → 3).
    Up,
    /// Any remainder is dropped, toward zero (2.99 → 2).
    Down,
}

impl RoundingMode {
    /// Rounds `value` to `decimal_places` places with this mode.
    /// A value that already has no more places is returned unchanged.
    pub fn round(self, value: Decimal, decimal_places: u32) -> Decimal {
        value.round_dp_with_strategy(decimal_places, self.strategy())
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
            RoundingMode::Down => RoundingStrategy::ToZero,
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn table_of_modes() {
        let cases = [
            (RoundingMode::HalfUp, dec!(2.345), dec!(2.35)),
            (RoundingMode::HalfUp, dec!(2.355), dec!(2.36)),
            (RoundingMode::HalfUp, dec!(-2.345), dec!(-2.35)),
            (RoundingMode::HalfEven, dec!(2.345), dec!(2.34)),
            (RoundingMode::HalfEven, dec!(2.355), dec!(2.36)),
            (RoundingMode::HalfEven, dec!(-2.345), dec!(-2.34)),
            (RoundingMode::Up, dec!(2.341), dec!(2.35)),
            (RoundingMode::Up, dec!(-2.341), dec!(-2.35)),
            (RoundingMode::Up, dec!(2.34), dec!(2.34)),
            (RoundingMode::Down, dec!(2.349), dec!(2.34)),
            (RoundingMode::Down, dec!(-2.349), dec!(-2.34)),
        ];
        for (mode, value, expected) in cases {
            assert_eq!(mode.round(value, 2), expected, "{mode:?} {value}");
        }
    }

    #[test]
    fn zero_decimal_places() {
        assert_eq!(RoundingMode::HalfUp.round(dec!(2.5), 0), dec!(3));
        assert_eq!(RoundingMode::HalfEven.round(dec!(2.5), 0), dec!(2));
        assert_eq!(RoundingMode::HalfEven.round(dec!(3.5), 0), dec!(4));
    }
}
