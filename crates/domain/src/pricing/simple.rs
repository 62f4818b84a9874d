//! Per-unit, package and flat-fee prices.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    BreakdownItem, PriceBreakdown, PricingError, add, check_quantity, multiply,
    require_non_negative, subtract, validated_model,
};

/// Configuration of a per-unit price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerUnitSpec {
    /// Price of one unit, at any precision.
    pub unit_price: Decimal,
}

impl PerUnitSpec {
    fn validate(&self) -> Result<(), PricingError> {
        require_non_negative(|| "unit_price".into(), self.unit_price)
    }
}

/// Every unit costs the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PerUnitSpec", into = "PerUnitSpec")]
pub struct PerUnit {
    spec: PerUnitSpec,
}

validated_model!(PerUnit, PerUnitSpec);

impl PerUnit {
    /// `quantity × unit_price`.
    pub fn price(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        check_quantity(quantity)?;
        let amount = multiply(quantity, self.spec.unit_price)?;
        let item = BreakdownItem::Units {
            quantity,
            unit_price: self.spec.unit_price,
            amount,
        };
        Ok(PriceBreakdown::new(amount, vec![item]))
    }
}

/// Whether a partly used package is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageRounding {
    /// Every started package is charged (10 units in packages of 3 → 4 packages).
    Up,
    /// Only complete packages are charged (10 units in packages of 3 → 3 packages).
    Down,
}

/// Configuration of a package price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    /// Units per package; above zero.
    pub package_size: Decimal,
    /// Price of one package.
    pub package_price: Decimal,
    /// How partial packages count.
    pub rounding: PackageRounding,
    /// Units free before packages are counted.
    #[serde(default)]
    pub free_units: Decimal,
}

impl PackageSpec {
    fn validate(&self) -> Result<(), PricingError> {
        if self.package_size <= Decimal::ZERO {
            return Err(PricingError::PackageSizeNotPositive {
                size: self.package_size,
            });
        }
        require_non_negative(|| "package_price".into(), self.package_price)?;
        require_non_negative(|| "free_units".into(), self.free_units)
    }
}

/// Units are sold in packages: `$5 per 1,000 emails`, rounding partial packages up or down.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::pricing::{Package, PackageRounding, PackageSpec};
///
/// let emails = Package::new(PackageSpec {
///     package_size: dec!(1000),
///     package_price: dec!(5),
///     rounding: PackageRounding::Up,
///     free_units: dec!(100),
/// }).unwrap();
/// assert_eq!(emails.price(dec!(100)).unwrap().total(), dec!(0)); // all free
/// assert_eq!(emails.price(dec!(101)).unwrap().total(), dec!(5)); // one started package
/// assert_eq!(emails.price(dec!(2100)).unwrap().total(), dec!(10)); // exactly two packages
/// assert_eq!(emails.price(dec!(2101)).unwrap().total(), dec!(15));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PackageSpec", into = "PackageSpec")]
pub struct Package {
    spec: PackageSpec,
}

validated_model!(Package, PackageSpec);

impl Package {
    /// `packages(quantity − free units) × package_price`.
    pub fn price(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        check_quantity(quantity)?;
        let spec = &self.spec;
        let billable_quantity = subtract(quantity, spec.free_units)?.max(Decimal::ZERO);
        // Exact: the remainder is subtracted before dividing, so the division is whole.
        let remainder = billable_quantity
            .checked_rem(spec.package_size)
            .ok_or(PricingError::Overflow)?;
        let complete = subtract(billable_quantity, remainder)?
            .checked_div(spec.package_size)
            .ok_or(PricingError::Overflow)?
            .normalize();
        let package_count = match spec.rounding {
            PackageRounding::Up if !remainder.is_zero() => add(complete, Decimal::ONE)?,
            PackageRounding::Up | PackageRounding::Down => complete,
        };
        let amount = multiply(package_count, spec.package_price)?;
        let mut items = Vec::with_capacity(2);
        if quantity > billable_quantity {
            items.push(BreakdownItem::FreeUnits {
                quantity: quantity - billable_quantity,
            });
        }
        items.push(BreakdownItem::Packages {
            billable_quantity,
            package_size: spec.package_size,
            package_count,
            package_price: spec.package_price,
            amount,
        });
        Ok(PriceBreakdown::new(amount, items))
    }
}

/// Configuration of a flat fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatFeeSpec {
    /// The fee.
    pub amount: Decimal,
}

impl FlatFeeSpec {
    fn validate(&self) -> Result<(), PricingError> {
        require_non_negative(|| "amount".into(), self.amount)
    }
}

/// A fixed amount whatever the quantity: a recurring platform fee. For a per-seat fee use
/// [`PerUnit`](super::PerUnit) with the seat count as the quantity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FlatFeeSpec", into = "FlatFeeSpec")]
pub struct FlatFee {
    spec: FlatFeeSpec,
}

validated_model!(FlatFee, FlatFeeSpec);

impl FlatFee {
    /// The fee; the quantity is only checked for sign.
    pub fn price(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        check_quantity(quantity)?;
        let amount = self.spec.amount;
        Ok(PriceBreakdown::new(
            amount,
            vec![BreakdownItem::Flat { amount }],
        ))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn package_rounding_down_and_invalid_sizes() {
        let spec = PackageSpec {
            package_size: dec!(3),
            package_price: dec!(2),
            rounding: PackageRounding::Down,
            free_units: dec!(0),
        };
        let model = Package::new(spec.clone()).unwrap();
        assert_eq!(model.price(dec!(10)).unwrap().total(), dec!(6));
        assert_eq!(model.price(dec!(2.9)).unwrap().total(), dec!(0));
        for size in [dec!(0), dec!(-3)] {
            let spec = PackageSpec {
                package_size: size,
                ..spec.clone()
            };
            assert_eq!(
                Package::new(spec),
                Err(PricingError::PackageSizeNotPositive { size })
            );
        }
    }

    #[test]
    fn per_unit_and_flat() {
        let per_unit = PerUnit::new(PerUnitSpec {
            unit_price: dec!(0.0000021),
        })
        .unwrap();
        assert_eq!(per_unit.price(dec!(1000000)).unwrap().total(), dec!(2.1));
        let flat = FlatFee::new(FlatFeeSpec { amount: dec!(49) }).unwrap();
        assert_eq!(flat.price(dec!(0)).unwrap().total(), dec!(49));
        assert_eq!(flat.price(dec!(1000)).unwrap().total(), dec!(49));
        assert!(FlatFee::new(FlatFeeSpec { amount: dec!(-1) }).is_err());
    }
}
