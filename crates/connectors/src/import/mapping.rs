//! The mapping file: which Tally plan and charge each price of the source
//! stands for, and which prices are deliberately left behind (with why).
//! YAML, reviewed by a person before an import (the dry run shows what it
//! does):
//!
//! ```yaml
//! plans:
//!   - plan: pro                        # a Tally plan code (its latest published version)
//!     prices:                          # source price id → charge key of that plan
//!       price_1ProMonthly: platform_fee
//!       price_1ProApiCalls: api_calls
//! ignore:                              # prices not carried over, and why
//!   price_1SetupFee: one-time setup fee, billed in Stripe before the move
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// One Tally plan and the source prices that are its charges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanMapping {
    /// The Tally plan's code.
    pub plan: String,
    /// Source price id → the plan's charge key.
    pub prices: BTreeMap<String, String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// The plans.
    #[serde(default)]
    pub plans: Vec<PlanMapping>,
    /// Source price id → why it is not carried over.
    #[serde(default)]
    pub ignore: BTreeMap<String, String>,
}

/// What the file says about one price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceTarget<'a> {
    /// A charge of a plan.
    Charge {
        /// The plan's code.
        plan: &'a str,
        /// The charge's key.
        charge: &'a str,
    },
    /// Left behind on purpose.
    Ignored {
        /// Why.
        reason: &'a str,
    },
    /// Not in the file.
    Unmapped,
}

/// Why a mapping file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Not YAML of the documented shape.
    #[error("the mapping file is not valid: {0}")]
    Syntax(String),
    /// A price is mapped twice (two plans, or mapped and ignored).
    #[error(
        "price {price} is mapped more than once ({first} and {second}); a price stands for one charge"
    )]
    Duplicate {
        /// The price.
        price: String,
        /// Its first target.
        first: String,
        /// Its second target.
        second: String,
    },
    /// A plan listed twice: its prices belong in one entry.
    #[error("plan {0} is listed more than once; put all its prices in one entry")]
    DuplicatePlan(String),
    /// An empty plan code, charge key or price id.
    #[error("empty {0} in the mapping file")]
    Empty(&'static str),
}

impl MappingFile {
    /// Reads and checks a mapping file's text.
    pub fn parse(text: &str) -> Result<Self, MappingError> {
        let file: MappingFile = serde_norway::from_str(text)
            .map_err(|error| MappingError::Syntax(error.to_string()))?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> Result<(), MappingError> {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        let mut plans = std::collections::BTreeSet::new();
        for plan in &self.plans {
            if plan.plan.trim().is_empty() {
                return Err(MappingError::Empty("plan code"));
            }
            if !plans.insert(plan.plan.as_str()) {
                return Err(MappingError::DuplicatePlan(plan.plan.clone()));
            }
            for (price, charge) in &plan.prices {
                if price.trim().is_empty() {
                    return Err(MappingError::Empty("price id"));
                }
                if charge.trim().is_empty() {
                    return Err(MappingError::Empty("charge key"));
                }
                let target = format!("plan {} charge {charge}", plan.plan);
                if let Some(first) = seen.insert(price, target.clone()) {
                    return Err(MappingError::Duplicate {
                        price: price.clone(),
                        first,
                        second: target,
                    });
                }
            }
        }
        for price in self.ignore.keys() {
            if let Some(first) = seen.insert(price, "ignore".to_owned()) {
                return Err(MappingError::Duplicate {
                    price: price.clone(),
                    first,
                    second: "ignore".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// What the file says about `price_id`.
    pub fn target(&self, price_id: &str) -> PriceTarget<'_> {
        for plan in &self.plans {
            if let Some(charge) = plan.prices.get(price_id) {
                return PriceTarget::Charge {
                    plan: &plan.plan,
                    charge,
                };
            }
        }
        match self.ignore.get(price_id) {
            Some(reason) => PriceTarget::Ignored { reason },
            None => PriceTarget::Unmapped,
        }
    }

    /// Every plan code the file names.
    pub fn plan_codes(&self) -> impl Iterator<Item = &str> {
        self.plans.iter().map(|plan| plan.plan.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let file = MappingFile::parse(
            "plans:\n  - plan: pro\n    prices:\n      price_A: platform_fee\n      price_B: api_calls\nignore:\n  price_C: setup fee\n",
        )
        .unwrap();
        assert_eq!(
            file.target("price_B"),
            PriceTarget::Charge {
                plan: "pro",
                charge: "api_calls"
            }
        );
        assert_eq!(
            file.target("price_C"),
            PriceTarget::Ignored {
                reason: "setup fee"
            }
        );
        assert_eq!(file.target("price_D"), PriceTarget::Unmapped);
    }

    #[test]
    fn refuses_a_price_mapped_twice_and_unknown_keys() {
        let twice = MappingFile::parse(
            "plans:\n  - plan: a\n    prices: {price_A: fee}\n  - plan: b\n    prices: {price_A: fee}\n",
        );
        assert!(
            matches!(twice, Err(MappingError::Duplicate { .. })),
            "{twice:?}"
        );
        let ignored_too = MappingFile::parse(
            "plans:\n  - plan: a\n    prices: {price_A: fee}\nignore: {price_A: x}\n",
        );
        assert!(matches!(ignored_too, Err(MappingError::Duplicate { .. })));
        let typo = MappingFile::parse("plan:\n  - plan: a\n");
        assert!(matches!(typo, Err(MappingError::Syntax(_))), "{typo:?}");
    }
}
