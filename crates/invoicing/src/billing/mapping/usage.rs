//! Rating's priced usage line (`tally.rating.v1.UsageCharge`) and invoicing's
//! copy of it ([`UsageCharge`]). Values keep their exact text both ways, so
//! a line read back is the line rating priced.

use tally_proto::rating as wire;

use super::{
    decimal_from_wire, decimal_to_wire, money_from_wire, money_to_wire, range_from_wire,
    range_to_wire, unknown,
};
use crate::billing::model::usage::{
    Aggregation, AllowancePolicy, BreakdownStep, BreakdownStepKind, BulkBracket, MatrixCell,
    PackageRounding, Price, PriceTier, UsageCharge,
};
use crate::error::Result;

/// The model of rating's line.
pub fn charge_from_wire(charge: &wire::UsageCharge) -> Result<UsageCharge> {
    Ok(UsageCharge {
        charge_key: charge.charge_key.clone(),
        charge_name: charge.charge_name.clone(),
        plan_version_id: charge.plan_version_id.clone(),
        meter_code: charge.meter_code.clone(),
        aggregation: aggregation_from_wire(charge.aggregation)?,
        group: charge.group.clone().into_iter().collect(),
        period: range_from_wire(charge.period.as_ref())?,
        quantity: decimal_from_wire(charge.quantity.as_ref())?,
        billable_quantity: decimal_from_wire(charge.billable_quantity.as_ref())?,
        event_count: charge.event_count,
        price: charge.price.as_ref().map(price_from_wire).transpose()?,
        breakdown: charge
            .breakdown
            .iter()
            .map(step_from_wire)
            .collect::<Result<_>>()?,
        precise_amount: money_from_wire(charge.precise_amount.as_ref())?,
        amount: money_from_wire(charge.amount.as_ref())?,
        as_of_sequence_number: charge.as_of_sequence_number,
    })
}

/// Rating's line, as rating wrote it.
pub fn charge_to_wire(charge: &UsageCharge) -> wire::UsageCharge {
    wire::UsageCharge {
        charge_key: charge.charge_key.clone(),
        charge_name: charge.charge_name.clone(),
        plan_version_id: charge.plan_version_id.clone(),
        meter_code: charge.meter_code.clone(),
        aggregation: aggregation_to_wire(charge.aggregation) as i32,
        group: charge.group.clone().into_iter().collect(),
        period: charge.period.as_ref().map(range_to_wire),
        quantity: charge.quantity.map(decimal_to_wire),
        billable_quantity: charge.billable_quantity.map(decimal_to_wire),
        event_count: charge.event_count,
        price: charge.price.as_ref().map(price_to_wire),
        breakdown: charge.breakdown.iter().map(step_to_wire).collect(),
        precise_amount: charge.precise_amount.as_ref().map(money_to_wire),
        amount: charge.amount.as_ref().map(money_to_wire),
        as_of_sequence_number: charge.as_of_sequence_number,
    }
}

fn aggregation_from_wire(value: i32) -> Result<Aggregation> {
    Ok(match wire::Aggregation::try_from(value) {
        Ok(wire::Aggregation::Count) => Aggregation::Count,
        Ok(wire::Aggregation::Sum) => Aggregation::Sum,
        Ok(wire::Aggregation::Max) => Aggregation::Max,
        Ok(wire::Aggregation::Min) => Aggregation::Min,
        Ok(wire::Aggregation::UniqueCount) => Aggregation::UniqueCount,
        Ok(wire::Aggregation::Latest) => Aggregation::Latest,
        Ok(wire::Aggregation::TimeWeightedSum) => Aggregation::TimeWeightedSum,
        Ok(wire::Aggregation::Unspecified) | Err(_) => return Err(unknown("aggregation", value)),
    })
}

fn aggregation_to_wire(aggregation: Aggregation) -> wire::Aggregation {
    match aggregation {
        Aggregation::Count => wire::Aggregation::Count,
        Aggregation::Sum => wire::Aggregation::Sum,
        Aggregation::Max => wire::Aggregation::Max,
        Aggregation::Min => wire::Aggregation::Min,
        Aggregation::UniqueCount => wire::Aggregation::UniqueCount,
        Aggregation::Latest => wire::Aggregation::Latest,
        Aggregation::TimeWeightedSum => wire::Aggregation::TimeWeightedSum,
    }
}

fn tiers_from_wire(tiers: &[wire::PriceTier]) -> Result<Vec<PriceTier>> {
    tiers
        .iter()
        .map(|tier| {
            Ok(PriceTier {
                up_to: decimal_from_wire(tier.up_to.as_ref())?,
                unit_price: decimal_from_wire(tier.unit_price.as_ref())?,
                flat_amount: money_from_wire(tier.flat_amount.as_ref())?,
            })
        })
        .collect()
}

fn tiers_to_wire(tiers: &[PriceTier]) -> wire::TieredPrice {
    wire::TieredPrice {
        tiers: tiers
            .iter()
            .map(|tier| wire::PriceTier {
                up_to: tier.up_to.map(decimal_to_wire),
                unit_price: tier.unit_price.map(decimal_to_wire),
                flat_amount: tier.flat_amount.as_ref().map(money_to_wire),
            })
            .collect(),
    }
}

fn price_from_wire(price: &wire::Price) -> Result<Price> {
    use wire::price::Model;
    let model = price
        .model
        .as_ref()
        .ok_or_else(|| unknown("price model", 0))?;
    Ok(match model {
        Model::PerUnit(per_unit) => Price::PerUnit {
            unit_price: decimal_from_wire(per_unit.unit_price.as_ref())?,
        },
        Model::Package(package) => Price::Package {
            package_size: decimal_from_wire(package.package_size.as_ref())?,
            package_price: money_from_wire(package.package_price.as_ref())?,
            rounding: match wire::PackageRounding::try_from(package.rounding) {
                Ok(wire::PackageRounding::Up) => PackageRounding::Up,
                Ok(wire::PackageRounding::Down) => PackageRounding::Down,
                Ok(wire::PackageRounding::Unspecified) | Err(_) => {
                    return Err(unknown("package rounding", package.rounding));
                }
            },
            free_units: decimal_from_wire(package.free_units.as_ref())?,
        },
        Model::Graduated(tiered) => Price::Graduated {
            tiers: tiers_from_wire(&tiered.tiers)?,
        },
        Model::Volume(tiered) => Price::Volume {
            tiers: tiers_from_wire(&tiered.tiers)?,
        },
        Model::Bulk(bulk) => Price::Bulk {
            brackets: bulk
                .brackets
                .iter()
                .map(|bracket| {
                    Ok(BulkBracket {
                        up_to: decimal_from_wire(bracket.up_to.as_ref())?,
                        amount: money_from_wire(bracket.amount.as_ref())?,
                    })
                })
                .collect::<Result<_>>()?,
        },
        Model::Percentage(percentage) => Price::Percentage {
            rate_percent: decimal_from_wire(percentage.rate_percent.as_ref())?,
            fixed_fee_per_event: money_from_wire(percentage.fixed_fee_per_event.as_ref())?,
            minimum_per_event: money_from_wire(percentage.minimum_per_event.as_ref())?,
            maximum_per_event: money_from_wire(percentage.maximum_per_event.as_ref())?,
            free_events: percentage.free_events,
            free_amount: decimal_from_wire(percentage.free_amount.as_ref())?,
            allowance_policy: match wire::PercentageAllowancePolicy::try_from(
                percentage.allowance_policy,
            ) {
                Ok(wire::PercentageAllowancePolicy::Unspecified) => None,
                Ok(wire::PercentageAllowancePolicy::Sequential) => {
                    Some(AllowancePolicy::Sequential)
                }
                Ok(wire::PercentageAllowancePolicy::FirstExhausted) => {
                    Some(AllowancePolicy::FirstExhausted)
                }
                Err(_) => {
                    return Err(unknown("allowance policy", percentage.allowance_policy));
                }
            },
        },
        Model::Matrix(matrix) => Price::Matrix {
            dimensions: matrix.dimensions.clone(),
            cells: matrix
                .cells
                .iter()
                .map(|cell| {
                    Ok(MatrixCell {
                        dimension_values: cell.dimension_values.clone().into_iter().collect(),
                        unit_price: decimal_from_wire(cell.unit_price.as_ref())?,
                    })
                })
                .collect::<Result<_>>()?,
            default_unit_price: decimal_from_wire(matrix.default_unit_price.as_ref())?,
        },
        Model::FlatFee(flat) => Price::FlatFee {
            amount: money_from_wire(flat.amount.as_ref())?,
        },
    })
}

fn price_to_wire(price: &Price) -> wire::Price {
    use wire::price::Model;
    let model = match price {
        Price::PerUnit { unit_price } => Model::PerUnit(wire::PerUnitPrice {
            unit_price: unit_price.map(decimal_to_wire),
        }),
        Price::Package {
            package_size,
            package_price,
            rounding,
            free_units,
        } => Model::Package(wire::PackagePrice {
            package_size: package_size.map(decimal_to_wire),
            package_price: package_price.as_ref().map(money_to_wire),
            rounding: match rounding {
                PackageRounding::Up => wire::PackageRounding::Up,
                PackageRounding::Down => wire::PackageRounding::Down,
            } as i32,
            free_units: free_units.map(decimal_to_wire),
        }),
        Price::Graduated { tiers } => Model::Graduated(tiers_to_wire(tiers)),
        Price::Volume { tiers } => Model::Volume(tiers_to_wire(tiers)),
        Price::Bulk { brackets } => Model::Bulk(wire::BulkPrice {
            brackets: brackets
                .iter()
                .map(|bracket| wire::BulkBracket {
                    up_to: bracket.up_to.map(decimal_to_wire),
                    amount: bracket.amount.as_ref().map(money_to_wire),
                })
                .collect(),
        }),
        Price::Percentage {
            rate_percent,
            fixed_fee_per_event,
            minimum_per_event,
            maximum_per_event,
            free_events,
            free_amount,
            allowance_policy,
        } => Model::Percentage(wire::PercentagePrice {
            rate_percent: rate_percent.map(decimal_to_wire),
            fixed_fee_per_event: fixed_fee_per_event.as_ref().map(money_to_wire),
            minimum_per_event: minimum_per_event.as_ref().map(money_to_wire),
            maximum_per_event: maximum_per_event.as_ref().map(money_to_wire),
            free_events: *free_events,
            free_amount: free_amount.map(decimal_to_wire),
            allowance_policy: match allowance_policy {
                None => wire::PercentageAllowancePolicy::Unspecified,
                Some(AllowancePolicy::Sequential) => wire::PercentageAllowancePolicy::Sequential,
                Some(AllowancePolicy::FirstExhausted) => {
                    wire::PercentageAllowancePolicy::FirstExhausted
                }
            } as i32,
        }),
        Price::Matrix {
            dimensions,
            cells,
            default_unit_price,
        } => Model::Matrix(wire::MatrixPrice {
            dimensions: dimensions.clone(),
            cells: cells
                .iter()
                .map(|cell| wire::MatrixCell {
                    dimension_values: cell.dimension_values.clone().into_iter().collect(),
                    unit_price: cell.unit_price.map(decimal_to_wire),
                })
                .collect(),
            default_unit_price: default_unit_price.map(decimal_to_wire),
        }),
        Price::FlatFee { amount } => Model::FlatFee(wire::FlatFeePrice {
            amount: amount.as_ref().map(money_to_wire),
        }),
    };
    wire::Price { model: Some(model) }
}

const STEP_KINDS: [(wire::BreakdownStepKind, BreakdownStepKind); 12] = [
    (
        wire::BreakdownStepKind::IncludedUnits,
        BreakdownStepKind::IncludedUnits,
    ),
    (wire::BreakdownStepKind::PerUnit, BreakdownStepKind::PerUnit),
    (wire::BreakdownStepKind::Package, BreakdownStepKind::Package),
    (wire::BreakdownStepKind::Tier, BreakdownStepKind::Tier),
    (
        wire::BreakdownStepKind::BulkBracket,
        BreakdownStepKind::BulkBracket,
    ),
    (
        wire::BreakdownStepKind::Percentage,
        BreakdownStepKind::Percentage,
    ),
    (
        wire::BreakdownStepKind::FixedFee,
        BreakdownStepKind::FixedFee,
    ),
    (
        wire::BreakdownStepKind::PerEventClamp,
        BreakdownStepKind::PerEventClamp,
    ),
    (
        wire::BreakdownStepKind::MatrixCell,
        BreakdownStepKind::MatrixCell,
    ),
    (wire::BreakdownStepKind::FlatFee, BreakdownStepKind::FlatFee),
    (
        wire::BreakdownStepKind::ChargeMinimum,
        BreakdownStepKind::ChargeMinimum,
    ),
    (
        wire::BreakdownStepKind::ChargeMaximum,
        BreakdownStepKind::ChargeMaximum,
    ),
];

fn step_from_wire(step: &wire::BreakdownStep) -> Result<BreakdownStep> {
    let kind = STEP_KINDS
        .iter()
        .find(|(wire_kind, _)| *wire_kind as i32 == step.kind)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| unknown("breakdown step kind", step.kind))?;
    Ok(BreakdownStep {
        kind,
        description: step.description.clone(),
        tier_index: step.tier_index,
        from_quantity: decimal_from_wire(step.from_quantity.as_ref())?,
        to_quantity: decimal_from_wire(step.to_quantity.as_ref())?,
        quantity: decimal_from_wire(step.quantity.as_ref())?,
        unit_price: decimal_from_wire(step.unit_price.as_ref())?,
        flat_amount: money_from_wire(step.flat_amount.as_ref())?,
        amount: money_from_wire(step.amount.as_ref())?,
    })
}

fn step_to_wire(step: &BreakdownStep) -> wire::BreakdownStep {
    let kind = STEP_KINDS
        .iter()
        .find(|(_, kind)| *kind == step.kind)
        .map_or(wire::BreakdownStepKind::Unspecified, |(wire_kind, _)| {
            *wire_kind
        });
    wire::BreakdownStep {
        kind: kind as i32,
        description: step.description.clone(),
        tier_index: step.tier_index,
        from_quantity: step.from_quantity.map(decimal_to_wire),
        to_quantity: step.to_quantity.map(decimal_to_wire),
        quantity: step.quantity.map(decimal_to_wire),
        unit_price: step.unit_price.map(decimal_to_wire),
        flat_amount: step.flat_amount.as_ref().map(money_to_wire),
        amount: step.amount.as_ref().map(money_to_wire),
    }
}
