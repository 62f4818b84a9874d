//! Money: ISO 4217 currencies, amounts with checked arithmetic (at full precision, so a
//! unit price may carry more decimals than the currency), named rounding modes and
//! loss-free allocation.
//!
//! Amounts keep full precision through rating; an amount is rounded to the currency's
//! minor units once, on the invoice line, with a named [`RoundingMode`]: every service
//! rounds its lines with [`LINE_ROUNDING`].

mod allocation;
mod currency;
mod rounding;

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use currency::Currency;
pub use rounding::{LINE_ROUNDING, RoundingMode};

/// What can go wrong with money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 currency with a minor unit.
    #[error("unknown currency code {code:?}")]
    UnknownCurrency {
        /// The code that was given.
        code: String,
    },
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// The currency of the left operand.
        left: Currency,
        /// The currency of the right operand.
        right: Currency,
    },
    /// The result does not fit a 96-bit decimal (or the integer arithmetic of an allocation).
    #[error("arithmetic overflow")]
    Overflow,
    /// The operation needs an amount in whole minor units.
    #[error("{amount} has more decimal places than {currency} allows")]
    NotRounded {
        /// The precise amount.
        amount: Decimal,
        /// Its currency.
        currency: Currency,
    },
    /// An allocation was asked for zero parts.
    #[error("allocation needs at least one part")]
    NoAllocationParts,
    /// An allocation weight was negative.
    #[error("allocation weight {index} is negative: {weight}")]
    NegativeWeight {
        /// Position of the weight.
        index: usize,
        /// The weight.
        weight: Decimal,
    },
    /// All allocation weights were zero.
    #[error("allocation weights sum to zero")]
    ZeroTotalWeight,
}

/// An amount in a currency, at full precision until it is [rounded](Money::round).
///
/// Arithmetic is checked: combining currencies or overflowing is an error, never a panic
/// or a silently wrong number.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::money::{Currency, Money, MoneyError};
///
/// let a = Money::new(dec!(10.25), Currency::USD);
/// let b = Money::new(dec!(0.0001), Currency::USD);
/// assert_eq!(a.checked_add(&b).unwrap().amount(), dec!(10.2501));
///
/// let euros = Money::new(dec!(1), Currency::EUR);
/// assert!(matches!(a.checked_add(&euros), Err(MoneyError::CurrencyMismatch { .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// An amount at any precision.
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money::new(Decimal::ZERO, currency)
    }

    /// An amount given in minor units (cents for USD, yen for JPY, fils for KWD).
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::money::{Currency, Money};
    ///
    /// assert_eq!(Money::from_minor_units(1050, Currency::USD).unwrap().amount(), dec!(10.50));
    /// assert_eq!(Money::from_minor_units(1050, Currency::JPY).unwrap().amount(), dec!(1050));
    /// ```
    pub fn from_minor_units(minor_units: i128, currency: Currency) -> Result<Money, MoneyError> {
        let amount = Decimal::try_from_i128_with_scale(minor_units, currency.minor_units())
            .map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(amount, currency))
    }

    /// The amount, at whatever precision it carries.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.amount < Decimal::ZERO
    }

    /// Whether the amount is above zero.
    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    /// Whether the amount has no more decimal places than the currency's minor unit.
    pub fn is_rounded(&self) -> bool {
        self.amount.normalize().scale() <= self.currency.minor_units()
    }

    /// The amount in minor units; fails unless [`is_rounded`](Money::is_rounded).
    pub fn to_minor_units(&self) -> Result<i128, MoneyError> {
        if !self.is_rounded() {
            return Err(MoneyError::NotRounded {
                amount: self.amount,
                currency: self.currency,
            });
        }
        let mut scaled = self.amount;
        scaled.rescale(self.currency.minor_units());
        Ok(scaled.mantissa())
    }

    /// Rounds to the currency's minor units with `mode`, and shows that many places.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::money::{Currency, Money, RoundingMode};
    ///
    /// let precise = Money::new(dec!(0.125), Currency::USD);
    /// assert_eq!(precise.round(RoundingMode::HalfUp).amount(), dec!(0.13));
    /// assert_eq!(precise.round(RoundingMode::HalfEven).amount(), dec!(0.12));
    /// let yen = Money::new(dec!(99.5), Currency::JPY);
    /// assert_eq!(yen.round(RoundingMode::Down).amount(), dec!(99));
    /// ```
    pub fn round(&self, mode: RoundingMode) -> Money {
        let mut amount = mode.round(self.amount, self.currency.minor_units());
        amount.rescale(self.currency.minor_units());
        Money::new(amount, self.currency)
    }

    /// `self + other`; the currencies must match.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, currency))
    }

    /// `self - other`; the currencies must match.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, currency))
    }

    /// `self × factor` (a quantity, a proration factor, a percentage as a fraction).
    pub fn checked_mul(&self, factor: Decimal) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// The same amount with the opposite sign (a credit for a charge).
    pub fn negated(&self) -> Money {
        Money::new(-self.amount, self.currency)
    }

    /// The smaller of two amounts in the same currency.
    pub fn min(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(if other.amount < self.amount {
            *other
        } else {
            *self
        })
    }

    /// Sums amounts that must all be in `currency`; an empty list sums to zero.
    pub fn sum<'a>(
        currency: Currency,
        amounts: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |sum, amount| sum.checked_add(amount))
    }

    fn same_currency(&self, other: &Money) -> Result<Currency, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let usd = Money::new(dec!(1.5), Currency::USD);
        let eur = Money::new(dec!(1.5), Currency::EUR);
        assert_eq!(
            usd.checked_sub(&eur),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::USD,
                right: Currency::EUR
            })
        );
        let huge = Money::new(Decimal::MAX, Currency::USD);
        assert_eq!(huge.checked_add(&usd), Err(MoneyError::Overflow));
        assert_eq!(huge.checked_mul(dec!(2)), Err(MoneyError::Overflow));
        assert_eq!(
            usd.checked_mul(dec!(3)).unwrap(),
            Money::new(dec!(4.5), Currency::USD)
        );
    }

    #[test]
    fn minor_units_round_trip() {
        let amount = Money::new(dec!(12.3), Currency::USD);
        assert_eq!(amount.to_minor_units().unwrap(), 1230);
        assert_eq!(
            Money::from_minor_units(1230, Currency::USD).unwrap(),
            amount.round(RoundingMode::HalfUp)
        );
        assert_eq!(
            Money::new(dec!(7), Currency::KWD).to_minor_units().unwrap(),
            7000
        );
        assert!(
            Money::new(dec!(0.001), Currency::USD)
                .to_minor_units()
                .is_err()
        );
    }

    #[test]
    fn rounding_pads_to_the_currency_exponent() {
        let rounded = Money::new(dec!(5), Currency::USD).round(RoundingMode::HalfUp);
        assert_eq!(rounded.to_string(), "5.00 USD");
        assert!(rounded.is_rounded());
    }

    #[test]
    fn sum_and_min() {
        let amounts = [
            Money::new(dec!(1.10), Currency::USD),
            Money::new(dec!(2.205), Currency::USD),
        ];
        assert_eq!(
            Money::sum(Currency::USD, &amounts).unwrap().amount(),
            dec!(3.305)
        );
        assert_eq!(amounts[1].min(&amounts[0]).unwrap(), amounts[0]);
    }

    #[test]
    fn serde_shape() {
        let money = Money::new(dec!(10.50), Currency::USD);
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount":"10.50","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }
}
