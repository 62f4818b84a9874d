//! Exact decimal arithmetic: the exact result, or `None` — never a rounded result.
//!
//! A `Decimal` holds a 96-bit mantissa (28 to 29 significant digits) and a scale of at
//! most 28. When an exact result needs more, `rust_decimal`'s `checked_*` operations
//! *round* it and fail only when even the integer part does not fit: `-5,000,000 + 1e-28`
//! gives `-5,000,000`, with no error. Billing cannot accept that, so aggregates and
//! prices go through these functions and refuse what they cannot compute exactly.
//!
//! ```
//! use rust_decimal::Decimal;
//! use rust_decimal_macros::dec;
//! use tally_domain::exact;
//!
//! assert_eq!(exact::add(dec!(-5000000), dec!(0.5)), Some(dec!(-4999999.5)));
//! // rust_decimal rounds this silently; the exact sum needs 35 significant digits.
//! assert_eq!(dec!(-5000000).checked_add(Decimal::new(1, 28)), Some(dec!(-5000000)));
//! assert_eq!(exact::add(dec!(-5000000), Decimal::new(1, 28)), None);
//! assert_eq!(exact::add(Decimal::MAX, dec!(1)), None);
//! assert_eq!(exact::mul(dec!(1000000), dec!(0.0000021)), Some(dec!(2.1)));
//! assert_eq!(exact::mul(Decimal::new(1, 20), Decimal::new(1, 20)), None); // 1e-40
//! ```
//!
//! The test for exactness: a result keeps every digit when its scale is at least the
//! scale the exact result can need — the larger operand scale for a sum, the sum of the
//! operand scales for a product, trailing zeros not counted. A result with fewer decimal
//! places was rounded by `rust_decimal` (or, rarely, only lost trailing zeros while
//! shrinking a result near `Decimal::MAX`: that case is refused too, which errs on the
//! side of refusing).

use rust_decimal::Decimal;

/// The decimal places `value` needs (its scale without trailing zeros).
fn needed_scale(value: Decimal) -> u32 {
    value.normalize().scale()
}

/// `left + right`, exactly; `None` when the sum overflows or would be rounded.
pub fn add(left: Decimal, right: Decimal) -> Option<Decimal> {
    let sum = left.checked_add(right)?;
    let needed = needed_scale(left).max(needed_scale(right));
    (sum.scale() >= needed).then_some(sum)
}

/// `left - right`, exactly; `None` when the difference overflows or would be rounded.
pub fn sub(left: Decimal, right: Decimal) -> Option<Decimal> {
    add(left, -right)
}

/// `left × right`, exactly; `None` when the product overflows or would be rounded.
///
/// The operands are multiplied as given first (so `1.50 × 2` stays `3.00`); only when
/// that product was rounded are they retried without their trailing zeros, which can
/// leave room for the significant digits.
pub fn mul(left: Decimal, right: Decimal) -> Option<Decimal> {
    if left.is_zero() || right.is_zero() {
        return left.checked_mul(right);
    }
    let needed = needed_scale(left) + needed_scale(right);
    let product = left.checked_mul(right)?;
    if product.scale() >= needed {
        return Some(product);
    }
    let product = left.normalize().checked_mul(right.normalize())?;
    (product.scale() >= needed).then_some(product)
}

/// The sum of `values`, exactly; `None` as soon as a partial sum overflows or would be
/// rounded. An empty list sums to zero.
pub fn sum(values: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    values.into_iter().try_fold(Decimal::ZERO, add)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn sums_keep_every_digit_or_refuse() {
        let tiny = Decimal::new(1, 28);
        assert_eq!(add(dec!(1.5), dec!(1.5)), Some(dec!(3.0)));
        assert_eq!(add(dec!(0), tiny), Some(tiny));
        assert_eq!(add(tiny, dec!(0)), Some(tiny));
        assert_eq!(add(tiny, -tiny), Some(dec!(0)));
        assert_eq!(
            add(dec!(1), tiny),
            Some(dec!(1.0000000000000000000000000001))
        );
        assert_eq!(add(dec!(10), tiny), None);
        assert_eq!(add(Decimal::MAX, Decimal::MAX), None);
        assert_eq!(add(Decimal::MAX, Decimal::MIN), Some(dec!(0)));
        assert_eq!(sub(Decimal::MIN, dec!(1)), None);
        assert_eq!(sub(dec!(10.25), dec!(0.25)), Some(dec!(10.00)));
        // 28 significant digits still fit.
        assert_eq!(
            add(dec!(999999999999999999), dec!(0.0000000001)),
            Some(dec!(999999999999999999.0000000001))
        );
        assert_eq!(sum([dec!(1), dec!(2.5), dec!(-0.5)]), Some(dec!(3.0)));
        assert_eq!(sum([Decimal::MAX, dec!(1), dec!(-1)]), None);
    }

    #[test]
    fn products_keep_every_digit_or_refuse() {
        assert_eq!(mul(dec!(1.50), dec!(2)), Some(dec!(3.00)));
        assert_eq!(mul(dec!(0), Decimal::MAX), Some(dec!(0)));
        assert_eq!(mul(Decimal::MAX, dec!(2)), None);
        assert_eq!(mul(Decimal::MAX, dec!(0.5)), None);
        // 1e15 × 0.000000000001 (12 places) = 1000, exactly.
        assert_eq!(
            mul(dec!(1000000000000000), dec!(0.000000000001)),
            Some(dec!(1000))
        );
        // Trailing zeros give way to significant digits.
        let padded = Decimal::new(10_000_000_000_000, 26); // 1e-13, written with 26 places
        assert_eq!(mul(padded, Decimal::new(3, 15)), Some(Decimal::new(3, 28)));
        // 1/3 has 28 places: a product with it needs more than 28.
        let third = dec!(1) / dec!(3);
        assert_eq!(mul(third, dec!(0.1)), None);
    }
}
