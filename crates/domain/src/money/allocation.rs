//! Splitting an amount into parts by weight without losing or inventing a minor unit.

use rust_decimal::Decimal;

use super::{Money, MoneyError};

impl Money {
    /// Splits this amount across parts in proportion to `weights`, by the largest-remainder
    /// method, so that the parts are whole minor units and sum exactly to the amount.
    ///
    /// Each part is its exact share rounded toward zero; the minor units left over go one
    /// each to the parts with the largest dropped remainders (ties: the earlier part).
    /// Every part is therefore within one minor unit of its exact share. The amount must
    /// already be rounded to the currency's minor units ([`Money::round`]); weights must be
    /// non-negative with a positive sum. A negative amount is split like its absolute value.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::money::{Currency, Money};
    ///
    /// let total = Money::new(dec!(100.00), Currency::USD);
    /// let parts = total.allocate(&[dec!(1), dec!(1), dec!(1)]).unwrap();
    /// let amounts: Vec<_> = parts.iter().map(|part| part.amount()).collect();
    /// assert_eq!(amounts, [dec!(33.34), dec!(33.33), dec!(33.33)]);
    ///
    /// // Yen has no minor unit: 1000 JPY in 70/30 is exactly 700 and 300.
    /// let yen = Money::new(dec!(1000), Currency::JPY);
    /// let parts = yen.allocate(&[dec!(0.7), dec!(0.3)]).unwrap();
    /// assert_eq!(parts[0].amount(), dec!(700));
    /// ```
    pub fn allocate(&self, weights: &[Decimal]) -> Result<Vec<Money>, MoneyError> {
        let total_minor = self.to_minor_units()?;
        let integer_weights = integer_weights(weights)?;
        let weight_sum = integer_weights
            .iter()
            .try_fold(0_i128, |sum, weight| sum.checked_add(*weight))
            .ok_or(MoneyError::Overflow)?;
        if weight_sum == 0 {
            return Err(MoneyError::ZeroTotalWeight);
        }
        let magnitude = total_minor.checked_abs().ok_or(MoneyError::Overflow)?;
        let mut parts = Vec::with_capacity(integer_weights.len());
        let mut remainders = Vec::with_capacity(integer_weights.len());
        for (index, weight) in integer_weights.iter().enumerate() {
            let product = magnitude.checked_mul(*weight).ok_or(MoneyError::Overflow)?;
            parts.push(product / weight_sum);
            remainders.push((product % weight_sum, index));
        }
        let allocated: i128 = parts.iter().sum();
        // Each floor drops less than one unit, so fewer than `parts.len()` units remain.
        let leftover = usize::try_from(magnitude - allocated).map_err(|_| MoneyError::Overflow)?;
        debug_assert!(leftover < parts.len());
        remainders.sort_by(|left, right| right.0.cmp(&left.0).then(left.1.cmp(&right.1)));
        for (_, index) in remainders.iter().take(leftover) {
            parts[*index] += 1;
        }
        let sign = if total_minor < 0 { -1 } else { 1 };
        parts
            .into_iter()
            .map(|minor| Money::from_minor_units(sign * minor, self.currency()))
            .collect()
    }

    /// Splits this amount into `count` parts as equal as the minor unit allows;
    /// earlier parts receive the leftover units.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::money::{Currency, Money};
    ///
    /// let parts = Money::new(dec!(0.05), Currency::EUR).split_evenly(3).unwrap();
    /// let amounts: Vec<_> = parts.iter().map(|part| part.amount()).collect();
    /// assert_eq!(amounts, [dec!(0.02), dec!(0.02), dec!(0.01)]);
    /// ```
    pub fn split_evenly(&self, count: usize) -> Result<Vec<Money>, MoneyError> {
        self.allocate(&vec![Decimal::ONE; count])
    }
}

/// Scales every weight to integers with a common scale, so the split is exact integer math.
fn integer_weights(weights: &[Decimal]) -> Result<Vec<i128>, MoneyError> {
    if weights.is_empty() {
        return Err(MoneyError::NoAllocationParts);
    }
    let mut max_scale = 0;
    for (index, weight) in weights.iter().enumerate() {
        if weight.is_sign_negative() && !weight.is_zero() {
            return Err(MoneyError::NegativeWeight {
                index,
                weight: *weight,
            });
        }
        max_scale = max_scale.max(weight.normalize().scale());
    }
    weights
        .iter()
        .map(|weight| {
            let weight = weight.normalize();
            10_i128
                .checked_pow(max_scale - weight.scale())
                .and_then(|factor| weight.mantissa().checked_mul(factor))
                .ok_or(MoneyError::Overflow)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::money::Currency;

    fn amounts(parts: &[Money]) -> Vec<Decimal> {
        parts.iter().map(Money::amount).collect()
    }

    #[test]
    fn largest_remainder_gets_the_extra_unit() {
        let total = Money::new(dec!(10.00), Currency::USD);
        let parts = total.allocate(&[dec!(1), dec!(2), dec!(3)]).unwrap();
        // exact shares 1.6666.., 3.3333.., 5.00 → 1.66 (rem .0066), 3.33 (rem .0033), 5.00
        assert_eq!(amounts(&parts), [dec!(1.67), dec!(3.33), dec!(5.00)]);
    }

    #[test]
    fn negative_amounts_split_symmetrically() {
        let total = Money::new(dec!(-1.00), Currency::USD);
        let parts = total.split_evenly(3).unwrap();
        assert_eq!(amounts(&parts), [dec!(-0.34), dec!(-0.33), dec!(-0.33)]);
    }

    #[test]
    fn zero_weights_receive_nothing() {
        let total = Money::new(dec!(0.03), Currency::USD);
        let parts = total.allocate(&[dec!(0), dec!(1), dec!(0)]).unwrap();
        assert_eq!(amounts(&parts), [dec!(0), dec!(0.03), dec!(0)]);
    }

    #[test]
    fn three_decimal_currency() {
        let total = Money::new(dec!(1.000), Currency::KWD);
        let parts = total.split_evenly(3).unwrap();
        assert_eq!(amounts(&parts), [dec!(0.334), dec!(0.333), dec!(0.333)]);
    }

    #[test]
    fn invalid_requests_are_errors() {
        let total = Money::new(dec!(1.00), Currency::USD);
        assert_eq!(total.allocate(&[]), Err(MoneyError::NoAllocationParts));
        assert_eq!(
            total.allocate(&[dec!(0), dec!(0)]),
            Err(MoneyError::ZeroTotalWeight)
        );
        assert_eq!(
            total.allocate(&[dec!(1), dec!(-1)]),
            Err(MoneyError::NegativeWeight {
                index: 1,
                weight: dec!(-1)
            })
        );
        let unrounded = Money::new(dec!(1.005), Currency::USD);
        assert!(matches!(
            unrounded.allocate(&[dec!(1)]),
            Err(MoneyError::NotRounded { .. })
        ));
    }
}
