//! The bounds that keep every aggregate and every price exact.
//!
//! A `Decimal` has 28 significant digits to give (a 96-bit mantissa, below 7.9·10²⁸). A
//! product `quantity × price` is exact when its digits fit: the integer digits of the
//! amount plus the decimal places of the quantity plus those of the price. That budget is
//! shared, so no pair of independent bounds on quantities and prices makes *every* product
//! exact: a quantity of 10¹⁵ with 6 decimal places times a price of 10⁹ with 12 decimal
//! places needs 15 + 6 + 9 + 12 = 42 digits. Tally therefore bounds each side where it is
//! written, and checks the product where it is formed:
//!
//! * **prices** (the catalog refuses more, with a field violation): a unit price, a fee,
//!   a minimum, a maximum or a bracket amount is at most [`MAX_PRICE`] (10⁹) with at most
//!   [`MAX_PRICE_SCALE`] (12) decimal places — enough for $0.01 per GB charged per byte
//!   (10⁻¹¹) and for a billion-dollar fee; a quantity in a price (tier bound, free units,
//!   package size, free volume) is at most [`MAX_PRICE_QUANTITY`] (10¹⁵) with at most
//!   [`MAX_PRICE_QUANTITY_SCALE`] (6) decimal places;
//! * **aggregates** (rating keeps the event that would break them as unrated usage with
//!   the reason OUT_OF_RANGE): a running aggregate is computed with [`crate::exact`] sums
//!   and stays within ±[`MAX_AGGREGATE`] (10¹⁸), and the line it prices is computed with
//!   [`crate::exact`] products and stays within ±[`MAX_LINE_AMOUNT`] (10¹²);
//! * **what is guaranteed by the bounds alone** (the property tests in
//!   `tests/properties_exactness.rs`): ingest accepts a numeric property within ±10¹⁵ with
//!   at most 12 decimal places, and such readings sum exactly up to 10¹⁶ (16 + 12 = 28
//!   digits; with at most 6 places, up to 10¹⁸); a line whose quantity has at most 6
//!   decimal places, whose prices are within the catalog bounds and whose amount is at
//!   most 10¹⁰ prices exactly (10 + 6 + 12 = 28 digits). Outside that envelope a sum or a
//!   line is still exact or refused — never rounded — because aggregates and pricing use
//!   exact arithmetic, and rating keeps the refused event as unrated usage.
//!
//! So real usage stays inside these limits; rating's checks are the defence in depth.
//!
//! ```
//! use rust_decimal_macros::dec;
//! use tally_domain::bounds::{self, BoundError};
//!
//! assert_eq!(bounds::check_price(dec!(0.000000000011)), Ok(()));
//! assert_eq!(
//!     bounds::check_price(dec!(10000000000000000000000000000)),
//!     Err(BoundError::TooLarge { value: dec!(10000000000000000000000000000), max: bounds::MAX_PRICE })
//! );
//! assert_eq!(
//!     bounds::check_price(dec!(0.0000000000001)),
//!     Err(BoundError::TooPrecise { value: dec!(0.0000000000001), scale: 13, max_scale: 12 })
//! );
//! ```

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// The largest unit price, fee, minimum, maximum or bracket amount a price may name: 10⁹.
pub const MAX_PRICE: Decimal = dec!(1000000000);

/// The most decimal places of a price: 12.
pub const MAX_PRICE_SCALE: u32 = 12;

/// The largest quantity a price may name (tier bound, free units, package size, free
/// transaction volume): 10¹⁵.
pub const MAX_PRICE_QUANTITY: Decimal = dec!(1000000000000000);

/// The most decimal places of a quantity a price names: 6.
pub const MAX_PRICE_QUANTITY_SCALE: u32 = 6;

/// The largest absolute value of a running aggregate rating keeps: 10¹⁸.
pub const MAX_AGGREGATE: Decimal = dec!(1000000000000000000);

/// The largest absolute amount of one usage line: 10¹² units of its currency.
pub const MAX_LINE_AMOUNT: Decimal = dec!(1000000000000);

/// A value outside its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    /// Above the largest allowed absolute value.
    #[error("{value} is beyond the largest allowed value, {max}")]
    TooLarge {
        /// The value.
        value: Decimal,
        /// The bound (in absolute value).
        max: Decimal,
    },
    /// More decimal places than allowed (trailing zeros do not count).
    #[error("{value} has {scale} decimal places, at most {max_scale} are allowed")]
    TooPrecise {
        /// The value.
        value: Decimal,
        /// Its decimal places, without trailing zeros.
        scale: u32,
        /// The most allowed.
        max_scale: u32,
    },
}

/// Checks `|value| ≤ max` and at most `max_scale` decimal places (trailing zeros aside).
pub fn check(value: Decimal, max: Decimal, max_scale: u32) -> Result<(), BoundError> {
    if value.abs() > max {
        return Err(BoundError::TooLarge { value, max });
    }
    let scale = value.normalize().scale();
    if scale > max_scale {
        return Err(BoundError::TooPrecise {
            value,
            scale,
            max_scale,
        });
    }
    Ok(())
}

/// A unit price, fee, minimum, maximum or bracket amount of a price.
pub fn check_price(value: Decimal) -> Result<(), BoundError> {
    check(value, MAX_PRICE, MAX_PRICE_SCALE)
}

/// A quantity a price names (tier bound, free units, package size, free volume).
pub fn check_price_quantity(value: Decimal) -> Result<(), BoundError> {
    check(value, MAX_PRICE_QUANTITY, MAX_PRICE_QUANTITY_SCALE)
}

/// A percentage rate (`2.9` is 2.9 %): as a fraction it is a price, so it may have two
/// decimal places fewer than [`MAX_PRICE_SCALE`].
pub fn check_rate_percent(value: Decimal) -> Result<(), BoundError> {
    check(value, Decimal::ONE_HUNDRED, MAX_PRICE_SCALE - 2)
}

/// A running aggregate's value (any number of decimal places: its sums are exact).
pub fn check_aggregate(value: Decimal) -> Result<(), BoundError> {
    check(value, MAX_AGGREGATE, 28)
}

/// One usage line's precise amount.
pub fn check_line_amount(value: Decimal) -> Result<(), BoundError> {
    check(value, MAX_LINE_AMOUNT, 28)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_ignore_trailing_zeros() {
        assert_eq!(check_price(MAX_PRICE), Ok(()));
        assert_eq!(check_price(dec!(1.000000000000000)), Ok(()));
        assert!(check_price(dec!(1000000000.000000000001)).is_err());
        assert_eq!(check_price_quantity(-MAX_PRICE_QUANTITY), Ok(()));
        assert!(matches!(
            check_price_quantity(dec!(0.0000001)),
            Err(BoundError::TooPrecise { scale: 7, .. })
        ));
        assert_eq!(check_rate_percent(dec!(2.9)), Ok(()));
        assert!(check_rate_percent(dec!(100.0000000001)).is_err());
        assert!(check_rate_percent(dec!(0.00000000001)).is_err());
        assert_eq!(check_aggregate(-MAX_AGGREGATE), Ok(()));
        assert!(check_aggregate(Decimal::MAX).is_err());
        assert!(check_line_amount(dec!(1000000000000.01)).is_err());
    }
}
