//! Matrix (dimensional) prices: a unit price per group key, with a default.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    BreakdownItem, PriceBreakdown, PricingError, add, check_quantity, multiply,
    require_non_negative, validated_model,
};
use crate::meter::GroupKey;

/// The unit price of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// The group, e.g. `region=eu, instance=gpu`.
    pub key: GroupKey,
    /// Its unit price.
    pub unit_price: Decimal,
}

/// Configuration of a matrix price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixSpec {
    /// One cell per priced group; keys are unique.
    pub cells: Vec<MatrixCell>,
    /// Unit price of groups without a cell; without it such a group cannot be priced.
    #[serde(default)]
    pub default_unit_price: Option<Decimal>,
}

impl MatrixSpec {
    fn validate(&self) -> Result<(), PricingError> {
        if self.cells.is_empty() && self.default_unit_price.is_none() {
            return Err(PricingError::EmptyMatrix);
        }
        let mut seen = BTreeSet::new();
        for (index, cell) in self.cells.iter().enumerate() {
            require_non_negative(|| format!("cells[{index}].unit_price"), cell.unit_price)?;
            if !seen.insert(&cell.key) {
                return Err(PricingError::DuplicateMatrixCell {
                    key: cell.key.clone(),
                });
            }
        }
        if let Some(default) = self.default_unit_price {
            require_non_negative(|| "default_unit_price".into(), default)?;
        }
        Ok(())
    }
}

/// Prices each group's quantity at its own unit price: GPU hours in `eu` at $2.10,
/// in `us` at $1.90, anything else at $2.50. The key must match a cell exactly.
///
/// ```
/// use std::collections::BTreeMap;
/// use rust_decimal_macros::dec;
/// use tally_domain::meter::GroupKey;
/// use tally_domain::pricing::{Matrix, MatrixCell, MatrixSpec};
///
/// let gpu = Matrix::new(MatrixSpec {
///     cells: vec![
///         MatrixCell { key: GroupKey::from_pairs([("region", "eu")]), unit_price: dec!(2.10) },
///         MatrixCell { key: GroupKey::from_pairs([("region", "us")]), unit_price: dec!(1.90) },
///     ],
///     default_unit_price: Some(dec!(2.50)),
/// }).unwrap();
/// let usage = BTreeMap::from([
///     (GroupKey::from_pairs([("region", "eu")]), dec!(10)),
///     (GroupKey::from_pairs([("region", "ap")]), dec!(2)),
/// ]);
/// assert_eq!(gpu.price(&usage).unwrap().total(), dec!(26.00)); // 10 × 2.10 + 2 × 2.50
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MatrixSpec", into = "MatrixSpec")]
pub struct Matrix {
    spec: MatrixSpec,
}

validated_model!(Matrix, MatrixSpec);

impl Matrix {
    /// The unit price of `key`, and whether it is the default.
    pub fn unit_price(&self, key: &GroupKey) -> Option<(Decimal, bool)> {
        self.spec
            .cells
            .iter()
            .find(|cell| &cell.key == key)
            .map(|cell| (cell.unit_price, false))
            .or_else(|| self.spec.default_unit_price.map(|price| (price, true)))
    }

    /// The sum over groups of `quantity × unit price`, one breakdown item per group.
    pub fn price(
        &self,
        groups: &BTreeMap<GroupKey, Decimal>,
    ) -> Result<PriceBreakdown, PricingError> {
        let mut items = Vec::with_capacity(groups.len());
        let mut total = Decimal::ZERO;
        for (key, quantity) in groups {
            check_quantity(*quantity)?;
            let (unit_price, default_price) = self
                .unit_price(key)
                .ok_or_else(|| PricingError::NoPriceForGroup { key: key.clone() })?;
            let amount = multiply(*quantity, unit_price)?;
            total = add(total, amount)?;
            items.push(BreakdownItem::Group {
                key: key.clone(),
                quantity: *quantity,
                unit_price,
                default_price,
                amount,
            });
        }
        Ok(PriceBreakdown::new(total, items))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn matrix_rules() {
        assert_eq!(
            Matrix::new(MatrixSpec {
                cells: vec![],
                default_unit_price: None
            }),
            Err(PricingError::EmptyMatrix)
        );
        let key = GroupKey::from_pairs([("tier", "gold")]);
        let cell = MatrixCell {
            key: key.clone(),
            unit_price: dec!(1),
        };
        assert_eq!(
            Matrix::new(MatrixSpec {
                cells: vec![cell.clone(), cell.clone()],
                default_unit_price: None
            }),
            Err(PricingError::DuplicateMatrixCell { key: key.clone() })
        );
        let strict = Matrix::new(MatrixSpec {
            cells: vec![cell],
            default_unit_price: None,
        })
        .unwrap();
        let other = GroupKey::from_pairs([("tier", "silver")]);
        assert_eq!(
            strict.price(&BTreeMap::from([(other.clone(), dec!(1))])),
            Err(PricingError::NoPriceForGroup { key: other })
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let json =
            r#"{"cells":[{"key":{"region":"eu"},"unit_price":"2"}],"default_unit_price":"-1"}"#;
        assert!(serde_json::from_str::<Matrix>(json).is_err());
        let json = r#"{"cells":[{"key":{"region":"eu"},"unit_price":"2"}]}"#;
        let matrix: Matrix = serde_json::from_str(json).unwrap();
        let back: Matrix = serde_json::from_str(&serde_json::to_string(&matrix).unwrap()).unwrap();
        assert_eq!(back, matrix);
    }
}
