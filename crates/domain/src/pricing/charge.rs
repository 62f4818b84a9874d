//! Charge-level terms around a price model: included free units, minimum and maximum.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{
    BreakdownItem, PriceBreakdown, PriceModel, PricingError, Usage, UsageKind, check_quantity,
    require_non_negative, subtract, sum, validate_limits, validated_model,
};
use crate::meter::GroupKey;

/// Configuration of a charge's price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargePriceSpec {
    /// The price model.
    pub model: PriceModel,
    /// Units included before the model applies (quantity models only).
    #[serde(default)]
    pub free_units: Decimal,
    /// The charge costs at least this much per period.
    #[serde(default)]
    pub minimum: Option<Decimal>,
    /// The charge costs at most this much per period.
    #[serde(default)]
    pub maximum: Option<Decimal>,
}

impl ChargePriceSpec {
    /// A charge with no free units and no limits.
    pub fn plain(model: PriceModel) -> ChargePriceSpec {
        ChargePriceSpec {
            model,
            free_units: Decimal::ZERO,
            minimum: None,
            maximum: None,
        }
    }

    fn validate(&self) -> Result<(), PricingError> {
        require_non_negative(|| "free_units".into(), self.free_units)?;
        if !self.free_units.is_zero() && self.model.usage_kind() != UsageKind::Quantity {
            return Err(PricingError::FreeUnitsNotApplicable {
                model: self.model.name(),
            });
        }
        validate_limits("charge", self.minimum, self.maximum)
    }
}

/// A price model with the charge's included free units, minimum and maximum.
///
/// Order: free units come off the quantity, the model prices the rest, then the total is
/// lifted to the minimum or capped at the maximum; each step is a breakdown item.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::pricing::{ChargePrice, ChargePriceSpec, PerUnit, PerUnitSpec, PriceModel};
///
/// let api_calls = ChargePrice::new(ChargePriceSpec {
///     model: PriceModel::PerUnit(PerUnit::new(PerUnitSpec { unit_price: dec!(0.01) }).unwrap()),
///     free_units: dec!(1000),
///     minimum: Some(dec!(5)),
///     maximum: Some(dec!(100)),
/// }).unwrap();
/// assert_eq!(api_calls.price_quantity(dec!(1200)).unwrap().total(), dec!(5)); // 2.00 → minimum
/// assert_eq!(api_calls.price_quantity(dec!(2000)).unwrap().total(), dec!(10));
/// assert_eq!(api_calls.price_quantity(dec!(100000)).unwrap().total(), dec!(100)); // capped
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChargePriceSpec", into = "ChargePriceSpec")]
pub struct ChargePrice {
    spec: ChargePriceSpec,
}

validated_model!(ChargePrice, ChargePriceSpec);

impl ChargePrice {
    /// The model.
    pub fn model(&self) -> &PriceModel {
        &self.spec.model
    }

    /// Prices one quantity.
    pub fn price_quantity(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        self.price(Usage::Quantity(quantity))
    }

    /// Prices usage with free units, the model, then the minimum and maximum.
    pub fn price(&self, usage: Usage<'_>) -> Result<PriceBreakdown, PricingError> {
        let spec = &self.spec;
        let mut items = Vec::new();
        let model_breakdown = if spec.free_units.is_zero() {
            spec.model.price(usage)?
        } else {
            let quantity = match usage {
                Usage::Quantity(quantity) => quantity,
                Usage::Grouped(groups) => sum(groups.values().copied())?,
                Usage::Transactions(_) => return spec.model.price(usage),
            };
            check_quantity(quantity)?;
            let free = quantity.min(spec.free_units);
            if free > Decimal::ZERO {
                items.push(BreakdownItem::FreeUnits { quantity: free });
            }
            spec.model.price_quantity(subtract(quantity, free)?)?
        };
        let (mut total, model_items) = model_breakdown.into_parts();
        items.extend(model_items);
        if let Some(minimum) = spec.minimum
            && total < minimum
        {
            items.push(BreakdownItem::Minimum {
                minimum,
                adjustment: subtract(minimum, total)?,
            });
            total = minimum;
        }
        if let Some(maximum) = spec.maximum
            && total > maximum
        {
            items.push(BreakdownItem::Maximum {
                maximum,
                adjustment: subtract(maximum, total)?,
            });
            total = maximum;
        }
        Ok(PriceBreakdown::new(total, items))
    }

    /// Prices usage whose net quantity may have gone below zero, which is how a billing
    /// user reads a negative reading: a correction that nets out against the usage of the
    /// same period and group, never a reason to pay the customer back (money goes back
    /// through credit notes). A quantity below zero — or, for grouped usage, each group
    /// below zero — is priced as zero, and the breakdown starts with a
    /// [`BreakdownItem::BelowZero`] that says so; minimums and flat fees still apply.
    /// Anything else is [`ChargePrice::price`].
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::pricing::{BreakdownItem, ChargePrice, ChargePriceSpec, PerUnit, PerUnitSpec, PriceModel, Usage};
    ///
    /// let gpu_seconds = ChargePrice::new(ChargePriceSpec {
    ///     minimum: Some(dec!(5)),
    ///     ..ChargePriceSpec::plain(PriceModel::PerUnit(PerUnit::new(PerUnitSpec { unit_price: dec!(0.001) }).unwrap()))
    /// }).unwrap();
    /// let priced = gpu_seconds.price_net(Usage::Quantity(dec!(-100000))).unwrap();
    /// assert_eq!(priced.total(), dec!(5)); // the minimum, on a quantity of zero
    /// assert_eq!(priced.items()[0], BreakdownItem::BelowZero { quantity: dec!(-100000) });
    /// assert!(gpu_seconds.price(Usage::Quantity(dec!(-1))).is_err());
    /// ```
    pub fn price_net(&self, usage: Usage<'_>) -> Result<PriceBreakdown, PricingError> {
        let (breakdown, below_zero) = match usage {
            Usage::Quantity(quantity) if quantity < Decimal::ZERO => (
                self.price(Usage::Quantity(Decimal::ZERO))?,
                vec![BreakdownItem::BelowZero { quantity }],
            ),
            Usage::Grouped(groups) if groups.values().any(|quantity| *quantity < Decimal::ZERO) => {
                let below_zero = groups
                    .values()
                    .filter(|quantity| **quantity < Decimal::ZERO)
                    .map(|quantity| BreakdownItem::BelowZero {
                        quantity: *quantity,
                    })
                    .collect();
                let clamped: BTreeMap<GroupKey, Decimal> = groups
                    .iter()
                    .map(|(key, quantity)| (key.clone(), (*quantity).max(Decimal::ZERO)))
                    .collect();
                (self.price(Usage::Grouped(&clamped))?, below_zero)
            }
            Usage::Quantity(_) | Usage::Grouped(_) | Usage::Transactions(_) => {
                return self.price(usage);
            }
        };
        let (total, items) = breakdown.into_parts();
        let mut all = below_zero;
        all.extend(items);
        Ok(PriceBreakdown::new(total, all))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::pricing::{Matrix, MatrixSpec};

    #[test]
    fn free_units_only_for_quantity_models() {
        let matrix = Matrix::new(MatrixSpec {
            cells: vec![],
            default_unit_price: Some(dec!(1)),
        })
        .unwrap();
        let spec = ChargePriceSpec {
            free_units: dec!(10),
            ..ChargePriceSpec::plain(PriceModel::Matrix(matrix))
        };
        assert_eq!(
            ChargePrice::new(spec),
            Err(PricingError::FreeUnitsNotApplicable { model: "matrix" })
        );
    }
}
