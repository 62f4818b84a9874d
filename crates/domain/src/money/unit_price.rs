//! Unit prices, which may carry more decimal places than their currency.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Currency, Money, MoneyError};

/// A non-negative price for one unit, at any precision (e.g. $0.0000021 per token).
///
/// Multiplying by a quantity keeps full precision; round the resulting line, not the price.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::money::{Currency, RoundingMode, UnitPrice};
///
/// let per_token = UnitPrice::new(dec!(0.0000021), Currency::USD).unwrap();
/// let cost = per_token.times(dec!(1234567)).unwrap();
/// assert_eq!(cost.amount(), dec!(2.5925907));
/// assert_eq!(cost.round(RoundingMode::HalfUp).amount(), dec!(2.59));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Money", into = "Money")]
pub struct UnitPrice {
    price: Money,
}

impl UnitPrice {
    /// A unit price; negative prices are rejected.
    pub fn new(amount: Decimal, currency: Currency) -> Result<UnitPrice, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::NegativeUnitPrice { amount });
        }
        Ok(UnitPrice {
            price: Money::new(amount, currency),
        })
    }

    /// The price of one unit.
    pub fn amount(&self) -> Decimal {
        self.price.amount()
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.price.currency()
    }

    /// The exact price of `quantity` units.
    pub fn times(&self, quantity: Decimal) -> Result<Money, MoneyError> {
        self.price.checked_mul(quantity)
    }
}

impl TryFrom<Money> for UnitPrice {
    type Error = MoneyError;

    fn try_from(price: Money) -> Result<Self, Self::Error> {
        UnitPrice::new(price.amount(), price.currency())
    }
}

impl From<UnitPrice> for Money {
    fn from(price: UnitPrice) -> Money {
        price.price
    }
}

impl fmt::Display for UnitPrice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} per unit", self.price)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn negative_prices_are_rejected_also_when_deserialised() {
        assert_eq!(
            UnitPrice::new(dec!(-0.01), Currency::USD),
            Err(MoneyError::NegativeUnitPrice {
                amount: dec!(-0.01)
            })
        );
        let json = r#"{"amount":"-1","currency":"USD"}"#;
        assert!(serde_json::from_str::<UnitPrice>(json).is_err());
        let json = r#"{"amount":"0.0000021","currency":"USD"}"#;
        let price: UnitPrice = serde_json::from_str(json).unwrap();
        assert_eq!(price.amount(), dec!(0.0000021));
    }
}
