//! Bulk (threshold, stairstep) prices: the bracket the quantity falls in is the whole price.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    BreakdownItem, PriceBreakdown, PricingError, check_quantity, containing_tier,
    require_non_negative, validate_bounds, validated_model,
};

/// One bracket: quantities up to `up_to` (inclusive) cost `amount` in total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bracket {
    /// Inclusive upper bound; `None` for the last, open-ended bracket.
    pub up_to: Option<Decimal>,
    /// Total price for any quantity in the bracket.
    pub amount: Decimal,
}

/// Configuration of a bulk price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkSpec {
    /// Brackets in ascending order of `up_to`; the last one open-ended.
    pub brackets: Vec<Bracket>,
}

impl BulkSpec {
    fn validate(&self) -> Result<(), PricingError> {
        validate_bounds(self.brackets.iter().map(|bracket| bracket.up_to))?;
        for (index, bracket) in self.brackets.iter().enumerate() {
            require_non_negative(|| format!("brackets[{index}].amount"), bracket.amount)?;
        }
        Ok(())
    }
}

/// Threshold pricing: up to 10 seats $100, up to 25 seats $200, more $350. The bracket that
/// contains the quantity gives the whole amount (bounds inclusive, like tiers); a quantity
/// of zero costs nothing. (Bulk pricing that applies one *unit* price to all units is
/// [`PriceModel::Volume`](super::PriceModel::Volume).)
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::pricing::{Bracket, Bulk, BulkSpec};
///
/// let seats = Bulk::new(BulkSpec { brackets: vec![
///     Bracket { up_to: Some(dec!(10)), amount: dec!(100) },
///     Bracket { up_to: Some(dec!(25)), amount: dec!(200) },
///     Bracket { up_to: None, amount: dec!(350) },
/// ]}).unwrap();
/// assert_eq!(seats.price(dec!(10)).unwrap().total(), dec!(100));
/// assert_eq!(seats.price(dec!(11)).unwrap().total(), dec!(200));
/// assert_eq!(seats.price(dec!(26)).unwrap().total(), dec!(350));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BulkSpec", into = "BulkSpec")]
pub struct Bulk {
    spec: BulkSpec,
}

validated_model!(Bulk, BulkSpec);

impl Bulk {
    /// The amount of the bracket containing `quantity`.
    pub fn price(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        check_quantity(quantity)?;
        if quantity.is_zero() {
            return Ok(PriceBreakdown::new(Decimal::ZERO, Vec::new()));
        }
        let brackets = &self.spec.brackets;
        let (index, from) = containing_tier(brackets.iter().map(|bracket| bracket.up_to), quantity);
        let bracket = &brackets[index];
        let item = BreakdownItem::Bracket {
            index,
            from,
            up_to: bracket.up_to,
            quantity,
            amount: bracket.amount,
        };
        Ok(PriceBreakdown::new(bracket.amount, vec![item]))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn brackets_are_validated_like_tiers() {
        let spec = BulkSpec {
            brackets: vec![
                Bracket {
                    up_to: Some(dec!(10)),
                    amount: dec!(-1),
                },
                Bracket {
                    up_to: None,
                    amount: dec!(1),
                },
            ],
        };
        assert_eq!(
            Bulk::new(spec),
            Err(PricingError::NegativeAmount {
                field: "brackets[0].amount".into(),
                value: dec!(-1)
            })
        );
        let zero = Bulk::new(BulkSpec {
            brackets: vec![Bracket {
                up_to: None,
                amount: dec!(5),
            }],
        })
        .unwrap();
        assert_eq!(zero.price(dec!(0)).unwrap().total(), dec!(0));
        assert_eq!(zero.price(dec!(0.5)).unwrap().total(), dec!(5));
    }
}
