//! The `catalog.yaml` format of `tally catalog apply` and its translation to
//! the `tally.rating.v1` wire types (documented in docs/operations.md).
//!
//! Amounts and prices are decimal strings (`"0.0000021"`) or whole numbers;
//! a YAML float is refused, because it has already lost digits by the time it
//! is read. Money amounts take the currency of their plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use tally_proto::common::{Decimal, Money};
use tally_proto::rating::{self, price::Model};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Meters, created in this order (plans may name them).
    #[serde(default)]
    pub meters: Vec<MeterEntry>,
    /// Plans, each with the version that should be the latest published one.
    #[serde(default)]
    pub plans: Vec<PlanEntry>,
}

/// A meter (immutable once created).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterEntry {
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub property: String,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub unit: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Sum,
    Max,
    Min,
    UniqueCount,
    Latest,
    TimeWeightedSum,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub property: String,
    pub operator: FilterOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOperator {
    In,
    NotIn,
    Exists,
    NotExists,
}

/// A plan and the version that should be its latest published one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub version: VersionEntry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionEntry {
    pub currency: String,
    pub billing_interval: Interval,
    #[serde(default)]
    pub trial_days: u32,
    #[serde(default)]
    pub minimum_commitment: Option<Amount>,
    #[serde(default)]
    pub description: String,
    pub charges: Vec<ChargeEntry>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    InAdvance,
    #[default]
    InArrears,
}

/// One charge: exactly one price model key (`per_unit`, `package`,
/// `graduated`, `volume`, `bulk`, `percentage`, `matrix`, `flat_fee`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeEntry {
    pub key: String,
    #[serde(default)]
    pub name: String,
    /// The meter's code; empty for a flat fee.
    #[serde(default)]
    pub meter: String,
    /// Defaults to `in_advance` for a recurring charge (no meter), `in_arrears` for usage.
    #[serde(default)]
    pub timing: Option<Timing>,
    #[serde(default)]
    pub included_quantity: Option<Amount>,
    #[serde(default)]
    pub minimum_amount: Option<Amount>,
    #[serde(default)]
    pub maximum_amount: Option<Amount>,
    #[serde(default)]
    pub per_unit: Option<Amount>,
    #[serde(default)]
    pub package: Option<PackageEntry>,
    #[serde(default)]
    pub graduated: Option<Vec<TierEntry>>,
    #[serde(default)]
    pub volume: Option<Vec<TierEntry>>,
    #[serde(default)]
    pub bulk: Option<Vec<BracketEntry>>,
    #[serde(default)]
    pub percentage: Option<PercentageEntry>,
    #[serde(default)]
    pub matrix: Option<MatrixEntry>,
    #[serde(default)]
    pub flat_fee: Option<Amount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageEntry {
    pub size: Amount,
    pub price: Amount,
    #[serde(default)]
    pub rounding: Option<PackageRounding>,
    #[serde(default)]
    pub free_units: Option<Amount>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageRounding {
    Up,
    Down,
}

/// A tier; the last one has no `up_to` (unbounded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierEntry {
    #[serde(default)]
    pub up_to: Option<Amount>,
    #[serde(default)]
    pub unit_price: Option<Amount>,
    #[serde(default)]
    pub flat_amount: Option<Amount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BracketEntry {
    #[serde(default)]
    pub up_to: Option<Amount>,
    pub amount: Amount,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentageEntry {
    pub rate_percent: Amount,
    #[serde(default)]
    pub fixed_fee_per_event: Option<Amount>,
    #[serde(default)]
    pub minimum_per_event: Option<Amount>,
    #[serde(default)]
    pub maximum_per_event: Option<Amount>,
    #[serde(default)]
    pub free_events: u64,
    #[serde(default)]
    pub free_amount: Option<Amount>,
    /// How `free_events` and `free_amount` combine; absent is the catalog's
    /// default (sequential), so files written before it existed stay unchanged.
    #[serde(default)]
    pub allowance_policy: Option<AllowancePolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowancePolicy {
    Sequential,
    FirstExhausted,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixEntry {
    pub dimensions: Vec<String>,
    pub cells: Vec<CellEntry>,
    #[serde(default)]
    pub default_unit_price: Option<Amount>,
}

/// A matrix cell: the group's dimension values and its unit price.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellEntry {
    #[serde(rename = "match")]
    pub dimension_values: BTreeMap<String, String>,
    pub unit_price: Amount,
}

/// A decimal kept exactly as written: a string or a whole number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(pub String);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Whole(i64),
            Large(u64),
            Float(f64),
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => Ok(Self(text.trim().to_owned())),
            Written::Whole(number) => Ok(Self(number.to_string())),
            Written::Large(number) => Ok(Self(number.to_string())),
            Written::Float(number) => Err(serde::de::Error::custom(format!(
                "{number} is a YAML float; write amounts and prices as strings so no digit is lost, e.g. \"{number}\""
            ))),
        }
    }
}

impl MeterEntry {
    /// The `CreateMeter` request this entry stands for.
    pub fn request(&self) -> rating::CreateMeterRequest {
        rating::CreateMeterRequest {
            code: self.code.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            aggregation: self.aggregation.wire() as i32,
            property: self.property.clone(),
            filters: self
                .filters
                .iter()
                .map(|filter| rating::MeterFilter {
                    property: filter.property.clone(),
                    operator: filter.operator.wire() as i32,
                    values: filter.values.clone(),
                })
                .collect(),
            group_by: self.group_by.clone(),
            unit: self.unit.clone(),
        }
    }
}

impl Aggregation {
    fn wire(self) -> rating::Aggregation {
        match self {
            Self::Count => rating::Aggregation::Count,
            Self::Sum => rating::Aggregation::Sum,
            Self::Max => rating::Aggregation::Max,
            Self::Min => rating::Aggregation::Min,
            Self::UniqueCount => rating::Aggregation::UniqueCount,
            Self::Latest => rating::Aggregation::Latest,
            Self::TimeWeightedSum => rating::Aggregation::TimeWeightedSum,
        }
    }
}

impl FilterOperator {
    fn wire(self) -> rating::FilterOperator {
        match self {
            Self::In => rating::FilterOperator::In,
            Self::NotIn => rating::FilterOperator::NotIn,
            Self::Exists => rating::FilterOperator::Exists,
            Self::NotExists => rating::FilterOperator::NotExists,
        }
    }
}

impl PlanEntry {
    /// The `CreatePlan` request this entry stands for.
    pub fn request(&self) -> rating::CreatePlanRequest {
        rating::CreatePlanRequest {
            code: self.code.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            metadata: self.metadata.clone().into_iter().collect(),
        }
    }
}

impl VersionEntry {
    /// The version's spec, or the path of the charge that names no price model
    /// or several.
    pub fn spec(&self, plan_code: &str) -> Result<rating::PlanVersionSpec, String> {
        let money = |amount: &Amount| Money {
            currency: self.currency.clone(),
            amount: amount.0.clone(),
        };
        let mut charges = Vec::new();
        for (index, charge) in self.charges.iter().enumerate() {
            let model = charge.model(&money).map_err(|problem| {
                format!(
                    "plans[{plan_code}].version.charges[{index}] ({}): {problem}",
                    charge.key
                )
            })?;
            let timing = match charge.timing {
                Some(Timing::InAdvance) => rating::BillingTiming::InAdvance,
                Some(Timing::InArrears) => rating::BillingTiming::InArrears,
                None if charge.meter.is_empty() => rating::BillingTiming::InAdvance,
                None => rating::BillingTiming::InArrears,
            };
            charges.push(rating::Charge {
                key: charge.key.clone(),
                // Rating requires a name (it is printed on invoices): the key
                // stands in when the file gives none.
                name: if charge.name.is_empty() {
                    charge.key.clone()
                } else {
                    charge.name.clone()
                },
                meter_code: charge.meter.clone(),
                billing_timing: timing as i32,
                price: Some(rating::Price { model: Some(model) }),
                included_quantity: charge.included_quantity.as_ref().map(decimal),
                minimum_amount: charge.minimum_amount.as_ref().map(money),
                maximum_amount: charge.maximum_amount.as_ref().map(money),
            });
        }
        let interval = match self.billing_interval {
            Interval::Day => rating::BillingInterval::Day,
            Interval::Week => rating::BillingInterval::Week,
            Interval::Month => rating::BillingInterval::Month,
            Interval::Quarter => rating::BillingInterval::Quarter,
            Interval::Year => rating::BillingInterval::Year,
        };
        Ok(rating::PlanVersionSpec {
            currency: self.currency.clone(),
            billing_interval: interval as i32,
            interval_count: 1,
            trial_days: self.trial_days,
            minimum_commitment: self.minimum_commitment.as_ref().map(money),
            charges,
            description: self.description.clone(),
        })
    }
}

fn decimal(amount: &Amount) -> Decimal {
    Decimal {
        value: amount.0.clone(),
    }
}

impl ChargeEntry {
    fn model(&self, money: &dyn Fn(&Amount) -> Money) -> Result<Model, String> {
        let tiers = |tiers: &[TierEntry]| rating::TieredPrice {
            tiers: tiers
                .iter()
                .map(|tier| rating::PriceTier {
                    up_to: tier.up_to.as_ref().map(decimal),
                    unit_price: tier.unit_price.as_ref().map(decimal),
                    flat_amount: tier.flat_amount.as_ref().map(money),
                })
                .collect(),
        };
        let mut models = Vec::new();
        if let Some(price) = &self.per_unit {
            models.push(Model::PerUnit(rating::PerUnitPrice {
                unit_price: Some(decimal(price)),
            }));
        }
        if let Some(package) = &self.package {
            let rounding = match package.rounding {
                Some(PackageRounding::Down) => rating::PackageRounding::Down,
                Some(PackageRounding::Up) | None => rating::PackageRounding::Up,
            };
            models.push(Model::Package(rating::PackagePrice {
                package_size: Some(decimal(&package.size)),
                package_price: Some(money(&package.price)),
                rounding: rounding as i32,
                free_units: package.free_units.as_ref().map(decimal),
            }));
        }
        if let Some(graduated) = &self.graduated {
            models.push(Model::Graduated(tiers(graduated)));
        }
        if let Some(volume) = &self.volume {
            models.push(Model::Volume(tiers(volume)));
        }
        if let Some(bulk) = &self.bulk {
            models.push(Model::Bulk(rating::BulkPrice {
                brackets: bulk
                    .iter()
                    .map(|bracket| rating::BulkBracket {
                        up_to: bracket.up_to.as_ref().map(decimal),
                        amount: Some(money(&bracket.amount)),
                    })
                    .collect(),
            }));
        }
        if let Some(percentage) = &self.percentage {
            models.push(Model::Percentage(rating::PercentagePrice {
                rate_percent: Some(decimal(&percentage.rate_percent)),
                fixed_fee_per_event: percentage.fixed_fee_per_event.as_ref().map(money),
                minimum_per_event: percentage.minimum_per_event.as_ref().map(money),
                maximum_per_event: percentage.maximum_per_event.as_ref().map(money),
                free_events: percentage.free_events,
                free_amount: percentage.free_amount.as_ref().map(decimal),
                allowance_policy: match percentage.allowance_policy {
                    None => rating::PercentageAllowancePolicy::Unspecified,
                    Some(AllowancePolicy::Sequential) => {
                        rating::PercentageAllowancePolicy::Sequential
                    }
                    Some(AllowancePolicy::FirstExhausted) => {
                        rating::PercentageAllowancePolicy::FirstExhausted
                    }
                } as i32,
            }));
        }
        if let Some(matrix) = &self.matrix {
            models.push(Model::Matrix(rating::MatrixPrice {
                dimensions: matrix.dimensions.clone(),
                cells: matrix
                    .cells
                    .iter()
                    .map(|cell| rating::MatrixCell {
                        dimension_values: cell.dimension_values.clone().into_iter().collect(),
                        unit_price: Some(decimal(&cell.unit_price)),
                    })
                    .collect(),
                default_unit_price: matrix.default_unit_price.as_ref().map(decimal),
            }));
        }
        if let Some(amount) = &self.flat_fee {
            models.push(Model::FlatFee(rating::FlatFeePrice {
                amount: Some(money(amount)),
            }));
        }
        let count = models.len();
        match (models.pop(), count) {
            (Some(model), 1) => Ok(model),
            (None, _) => Err("no price: give one of per_unit, package, graduated, volume, bulk, percentage, matrix, flat_fee".into()),
            _ => Err(format!("{count} price models: give exactly one")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn percentage_price(policy_line: &str) -> rating::PercentagePrice {
        let yaml = format!(
            r#"
plans:
  - code: transfers
    version:
      currency: USD
      billing_interval: month
      charges:
        - key: fees
          meter: payments
          percentage:
            rate_percent: "1.2"
            fixed_fee_per_event: "0.10"
            free_events: 3
            free_amount: "500"
            {policy_line}
"#
        );
        let file: CatalogFile = serde_norway::from_str(&yaml).unwrap();
        let spec = file.plans[0].version.spec("transfers").unwrap();
        match spec.charges[0]
            .price
            .as_ref()
            .unwrap()
            .model
            .as_ref()
            .unwrap()
        {
            Model::Percentage(price) => price.clone(),
            other => panic!("unexpected model {other:?}"),
        }
    }

    #[test]
    fn the_allowance_policy_is_named_in_the_file_and_absent_means_unspecified() {
        let cases = [
            ("", rating::PercentageAllowancePolicy::Unspecified),
            (
                "allowance_policy: sequential",
                rating::PercentageAllowancePolicy::Sequential,
            ),
            (
                "allowance_policy: first_exhausted",
                rating::PercentageAllowancePolicy::FirstExhausted,
            ),
        ];
        for (line, policy) in cases {
            let price = percentage_price(line);
            assert_eq!(price.allowance_policy, policy as i32, "{line:?}");
            assert_eq!(price.free_events, 3);
        }
        let typo = "plans: [{code: p, version: {currency: USD, billing_interval: month, \
                    charges: [{key: f, meter: m, percentage: {rate_percent: \"1\", \
                    allowance_policy: lago}}]}}]";
        assert!(serde_norway::from_str::<CatalogFile>(typo).is_err());
    }
}
