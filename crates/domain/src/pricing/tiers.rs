//! Tiered prices: graduated (each tier prices its own units) and volume (one tier prices all).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    BreakdownItem, PriceBreakdown, PricingError, add, check_quantity, containing_tier, multiply,
    require_non_negative, subtract, validate_bounds, validated_model,
};

/// One tier: a unit price and an optional flat fee for quantities up to `up_to`.
///
/// Bounds are **inclusive upper bounds**, as on Stripe: with tiers `up_to 5` and `up_to 10`,
/// the first tier covers units 1–5 (quantities in `(0, 5]`), the second 6–10 (`(5, 10]`).
/// `up_to: None` is the open-ended last tier. The flat fee is charged when any quantity
/// falls in the tier, so a quantity of zero costs nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Inclusive upper bound; `None` for the last, open-ended tier.
    pub up_to: Option<Decimal>,
    /// Price per unit in this tier.
    #[serde(default)]
    pub unit_price: Decimal,
    /// Fixed amount added when the tier is reached.
    #[serde(default)]
    pub flat_fee: Decimal,
}

impl Tier {
    /// A tier without flat fee.
    pub fn unit(up_to: Option<Decimal>, unit_price: Decimal) -> Tier {
        Tier {
            up_to,
            unit_price,
            flat_fee: Decimal::ZERO,
        }
    }
}

/// The configuration of a tiered price, before validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TieredSpec {
    /// Tiers in ascending order of `up_to`; the last one open-ended.
    pub tiers: Vec<Tier>,
}

impl TieredSpec {
    fn validate(&self) -> Result<(), PricingError> {
        validate_bounds(self.tiers.iter().map(|tier| tier.up_to))?;
        for (index, tier) in self.tiers.iter().enumerate() {
            require_non_negative(|| format!("tiers[{index}].unit_price"), tier.unit_price)?;
            require_non_negative(|| format!("tiers[{index}].flat_fee"), tier.flat_fee)?;
        }
        Ok(())
    }
}

/// A validated list of tiers, priced graduated or by volume.
///
/// Stripe's example (tiers 1–5 at $7, 6–10 at $6.50, 11+ at $6):
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::pricing::{Tier, Tiered, TieredSpec};
///
/// let tiers = Tiered::new(TieredSpec { tiers: vec![
///     Tier::unit(Some(dec!(5)), dec!(7)),
///     Tier::unit(Some(dec!(10)), dec!(6.50)),
///     Tier::unit(None, dec!(6)),
/// ]}).unwrap();
/// // Volume: the tier the total reaches prices every unit; 5 is still in the first tier.
/// assert_eq!(tiers.price_volume(dec!(5)).unwrap().total(), dec!(35));
/// assert_eq!(tiers.price_volume(dec!(6)).unwrap().total(), dec!(39));
/// // Graduated: 5 × 7 + 5 × 6.50 + 2 × 6.
/// assert_eq!(tiers.price_graduated(dec!(12)).unwrap().total(), dec!(79.50));
///
/// // A tier list whose last tier is bounded is rejected when built.
/// assert!(Tiered::new(TieredSpec { tiers: vec![Tier::unit(Some(dec!(5)), dec!(7))] }).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TieredSpec", into = "TieredSpec")]
pub struct Tiered {
    spec: TieredSpec,
}

validated_model!(Tiered, TieredSpec);

impl Tiered {
    /// The tiers.
    pub fn tiers(&self) -> &[Tier] {
        &self.spec.tiers
    }

    /// Graduated price of `quantity`: each tier prices the units inside its bounds.
    pub fn price_graduated(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        self.price_marginal(Decimal::ZERO, quantity)
    }

    /// Graduated price of `additional` units on top of `already` units: the units in
    /// `(already, already + additional]`, plus the flat fee of every tier they enter for
    /// the first time. So `price_graduated(a + b) = price_graduated(a) + price_marginal(a, b)`,
    /// which lets live cost be accumulated from deltas.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use tally_domain::pricing::{Tier, Tiered, TieredSpec};
    ///
    /// let tiers = Tiered::new(TieredSpec { tiers: vec![
    ///     Tier { up_to: Some(dec!(100)), unit_price: dec!(0.10), flat_fee: dec!(0) },
    ///     Tier { up_to: None, unit_price: dec!(0.05), flat_fee: dec!(2) },
    /// ]}).unwrap();
    /// // units 91..=100 at 0.10, then the second tier's flat fee and units 101..=110 at 0.05.
    /// assert_eq!(tiers.price_marginal(dec!(90), dec!(20)).unwrap().total(), dec!(3.50));
    /// ```
    pub fn price_marginal(
        &self,
        already: Decimal,
        additional: Decimal,
    ) -> Result<PriceBreakdown, PricingError> {
        check_quantity(already)?;
        check_quantity(additional)?;
        let end = add(already, additional)?;
        let mut items = Vec::with_capacity(self.spec.tiers.len());
        let mut total = Decimal::ZERO;
        let mut from = Decimal::ZERO;
        for (index, tier) in self.spec.tiers.iter().enumerate() {
            if end <= from {
                break;
            }
            let tier_end = tier.up_to.map_or(end, |up_to| up_to.min(end));
            let quantity = subtract(tier_end, already.max(from))?;
            if quantity > Decimal::ZERO {
                let flat_fee = if already <= from {
                    tier.flat_fee
                } else {
                    Decimal::ZERO
                };
                let amount = add(multiply(quantity, tier.unit_price)?, flat_fee)?;
                total = add(total, amount)?;
                items.push(BreakdownItem::Tier {
                    index,
                    from,
                    up_to: tier.up_to,
                    quantity,
                    unit_price: tier.unit_price,
                    flat_fee,
                    amount,
                });
            }
            match tier.up_to {
                Some(up_to) => from = up_to,
                None => break,
            }
        }
        Ok(PriceBreakdown::new(total, items))
    }

    /// Volume price of `quantity`: the tier that contains the whole quantity prices every
    /// unit (plus its flat fee). A quantity of zero costs nothing.
    pub fn price_volume(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        check_quantity(quantity)?;
        if quantity.is_zero() {
            return Ok(PriceBreakdown::new(Decimal::ZERO, Vec::new()));
        }
        let (index, from) =
            containing_tier(self.spec.tiers.iter().map(|tier| tier.up_to), quantity);
        let tier = &self.spec.tiers[index];
        let amount = add(multiply(quantity, tier.unit_price)?, tier.flat_fee)?;
        let item = BreakdownItem::Tier {
            index,
            from,
            up_to: tier.up_to,
            quantity,
            unit_price: tier.unit_price,
            flat_fee: tier.flat_fee,
            amount,
        };
        Ok(PriceBreakdown::new(amount, vec![item]))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn tiers(tiers: Vec<Tier>) -> Result<Tiered, PricingError> {
        Tiered::new(TieredSpec { tiers })
    }

    #[test]
    fn invalid_tier_lists_are_rejected_with_the_rule_broken() {
        assert_eq!(tiers(vec![]), Err(PricingError::NoTiers));
        assert_eq!(
            tiers(vec![Tier::unit(Some(dec!(5)), dec!(1))]),
            Err(PricingError::LastTierNotOpenEnded { up_to: dec!(5) })
        );
        assert_eq!(
            tiers(vec![Tier::unit(None, dec!(1)), Tier::unit(None, dec!(1))]),
            Err(PricingError::OpenEndedTierNotLast { index: 0 })
        );
        assert_eq!(
            tiers(vec![
                Tier::unit(Some(dec!(10)), dec!(1)),
                Tier::unit(Some(dec!(5)), dec!(1)),
                Tier::unit(None, dec!(1)),
            ]),
            Err(PricingError::TiersNotAscending {
                index: 1,
                up_to: dec!(5),
                previous: dec!(10)
            })
        );
        assert_eq!(
            tiers(vec![
                Tier::unit(Some(dec!(10)), dec!(1)),
                Tier::unit(Some(dec!(10)), dec!(1)),
                Tier::unit(None, dec!(1)),
            ]),
            Err(PricingError::TiersNotAscending {
                index: 1,
                up_to: dec!(10),
                previous: dec!(10)
            })
        );
        assert_eq!(
            tiers(vec![
                Tier::unit(Some(dec!(0)), dec!(1)),
                Tier::unit(None, dec!(1))
            ]),
            Err(PricingError::TierBoundNotPositive {
                index: 0,
                up_to: dec!(0)
            })
        );
        assert_eq!(
            tiers(vec![
                Tier::unit(Some(dec!(1)), dec!(1)),
                Tier::unit(None, dec!(-1))
            ]),
            Err(PricingError::NegativeAmount {
                field: "tiers[1].unit_price".into(),
                value: dec!(-1)
            })
        );
    }

    #[test]
    fn graduated_breakdown_names_each_tier() {
        let model = tiers(vec![
            Tier::unit(Some(dec!(5)), dec!(7)),
            Tier {
                up_to: None,
                unit_price: dec!(6),
                flat_fee: dec!(1),
            },
        ])
        .unwrap();
        let breakdown = model.price_graduated(dec!(7)).unwrap();
        assert_eq!(breakdown.total(), dec!(48)); // 5×7 + 2×6 + 1
        assert_eq!(
            breakdown.items()[1],
            BreakdownItem::Tier {
                index: 1,
                from: dec!(5),
                up_to: None,
                quantity: dec!(2),
                unit_price: dec!(6),
                flat_fee: dec!(1),
                amount: dec!(13)
            }
        );
        assert_eq!(model.price_graduated(dec!(0)).unwrap().total(), dec!(0));
        assert!(model.price_graduated(dec!(-1)).is_err());
    }

    #[test]
    fn fractional_quantities_use_the_same_boundaries() {
        let model = tiers(vec![
            Tier::unit(Some(dec!(1)), dec!(10)),
            Tier::unit(None, dec!(1)),
        ])
        .unwrap();
        assert_eq!(
            model.price_graduated(dec!(1.5)).unwrap().total(),
            dec!(10.5)
        );
        assert_eq!(model.price_volume(dec!(1)).unwrap().total(), dec!(10));
        assert_eq!(model.price_volume(dec!(1.5)).unwrap().total(), dec!(1.5));
    }
}
