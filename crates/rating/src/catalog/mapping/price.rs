//! `tally.rating.v1.Price` → domain [`PriceModel`], one function per model.
//!
//! Each model's rules are checked element by element (so a tier list reports
//! every bad tier, not the first), then the domain constructor builds the
//! model; a domain error the checks did not predict becomes a violation on the
//! model's path.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use tally_domain::meter::{Aggregation, GroupKey, Meter};
use tally_domain::pricing::{
    AllowancePolicy, Bracket, Bulk, BulkSpec, FlatFee, FlatFeeSpec, Matrix, MatrixCell, MatrixSpec,
    Package, PackageRounding, PackageSpec, PerUnit, PerUnitSpec, Percentage, PercentageSpec,
    PriceModel, PricingError, Tier, Tiered, TieredSpec,
};
use tally_proto::common;
use tally_proto::rating as proto;
use tally_proto::rating::price::Model;

use super::meter::property_value;
use super::values::{
    Bound, Rule, Violations, decimal, known_enum, minimum_not_above_maximum, optional_bounded,
    optional_money, positive, required_bounded, required_decimal, required_money, within,
};

/// What a price is checked against besides itself.
#[derive(Clone, Copy, Debug)]
pub struct PriceContext<'a> {
    /// The plan version's currency code as written (`None` when missing).
    pub currency: Option<&'a str>,
    /// The usage charge's meter, when the charge is a usage charge and the meter exists.
    pub meter: Option<&'a Meter>,
}

/// The model's name in field paths (the `Price.model` oneof field names).
pub fn model_field(model: &Model) -> &'static str {
    match model {
        Model::PerUnit(_) => "per_unit",
        Model::Package(_) => "package",
        Model::Graduated(_) => "graduated",
        Model::Volume(_) => "volume",
        Model::Bulk(_) => "bulk",
        Model::Percentage(_) => "percentage",
        Model::Matrix(_) => "matrix",
        Model::FlatFee(_) => "flat_fee",
    }
}

/// Whether the model is priced on one quantity (what recurring charges and
/// free units need); mirrors `PriceModel::usage_kind`.
pub fn is_quantity_model(model: &Model) -> bool {
    match model {
        Model::PerUnit(_)
        | Model::Package(_)
        | Model::Graduated(_)
        | Model::Volume(_)
        | Model::Bulk(_)
        | Model::FlatFee(_) => true,
        Model::Percentage(_) | Model::Matrix(_) => false,
    }
}

/// Maps one price model; `price_path` is the path of the `Price` message.
pub fn price_model(
    model: &Model,
    price_path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Option<PriceModel> {
    let path = format!("{price_path}.{}", model_field(model));
    let built = match model {
        Model::PerUnit(price) => as_model(per_unit(price, &path, violations), PriceModel::PerUnit),
        Model::Package(price) => as_model(
            package(price, &path, context, violations),
            PriceModel::Package,
        ),
        Model::Graduated(price) => as_model(
            tiered(price, &path, context, violations),
            PriceModel::Graduated,
        ),
        Model::Volume(price) => as_model(
            tiered(price, &path, context, violations),
            PriceModel::Volume,
        ),
        Model::Bulk(price) => as_model(bulk(price, &path, context, violations), PriceModel::Bulk),
        Model::Percentage(price) => as_model(
            percentage(price, &path, context, violations),
            PriceModel::Percentage,
        ),
        Model::Matrix(price) => as_model(
            matrix(price, &path, context, violations),
            PriceModel::Matrix,
        ),
        Model::FlatFee(price) => as_model(
            flat_fee(price, &path, context, violations),
            PriceModel::Flat,
        ),
    };
    built?
        .map_err(|error| domain_violation(&error, &path, violations))
        .ok()
}

/// `None`: the checks failed (and said why); `Some(result)`: what the domain constructor said.
type Built<T> = Option<Result<T, PricingError>>;

fn as_model<T>(built: Built<T>, variant: fn(T) -> PriceModel) -> Built<PriceModel> {
    built.map(|result| result.map(variant))
}

fn per_unit(
    price: &proto::PerUnitPrice,
    path: &str,
    violations: &mut Violations,
) -> Built<PerUnit> {
    let field = format!("{path}.unit_price");
    let unit_price = required_bounded(price.unit_price.as_ref(), &field, Bound::Price, violations)?;
    Some(PerUnit::new(PerUnitSpec { unit_price }))
}

fn package(
    price: &proto::PackagePrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<Package> {
    let size_field = format!("{path}.package_size");
    let package_size = required_decimal(price.package_size.as_ref(), &size_field, violations)
        .and_then(|value| positive(value, &size_field, violations))
        .and_then(|value| within(value, &size_field, Bound::Quantity, violations));
    let package_price = required_money(
        price.package_price.as_ref(),
        &format!("{path}.package_price"),
        context.currency,
        violations,
    );
    let rounding_field = format!("{path}.rounding");
    let rounding = match known_enum(price.rounding, &rounding_field, violations) {
        Some(proto::PackageRounding::Up) => Some(PackageRounding::Up),
        Some(proto::PackageRounding::Down) => Some(PackageRounding::Down),
        Some(proto::PackageRounding::Unspecified) => {
            violations.missing(&rounding_field, "UP or DOWN")
        }
        None => None,
    };
    let free_units = optional_bounded(
        price.free_units.as_ref(),
        &format!("{path}.free_units"),
        Bound::Quantity,
        violations,
    );
    Some(Package::new(PackageSpec {
        package_size: package_size?,
        package_price: package_price?,
        rounding: rounding?,
        free_units: free_units?.unwrap_or_default(),
    }))
}

fn tiered(
    price: &proto::TieredPrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<Tiered> {
    let tiers_path = format!("{path}.tiers");
    let bounds = bounds(
        price.tiers.iter().map(|tier| tier.up_to.as_ref()),
        &tiers_path,
        violations,
    );
    let mut tiers = Vec::with_capacity(price.tiers.len());
    for (index, tier) in price.tiers.iter().enumerate() {
        let tier_path = format!("{tiers_path}[{index}]");
        let unit_price = optional_bounded(
            tier.unit_price.as_ref(),
            &format!("{tier_path}.unit_price"),
            Bound::Price,
            violations,
        );
        let flat_fee = optional_money(
            tier.flat_amount.as_ref(),
            &format!("{tier_path}.flat_amount"),
            context.currency,
            violations,
        );
        tiers.push(unit_price.zip(flat_fee).map(|(unit_price, flat_fee)| {
            (unit_price.unwrap_or_default(), flat_fee.unwrap_or_default())
        }));
    }
    let bounds = bounds?;
    let tiers = tiers
        .into_iter()
        .zip(bounds)
        .map(|(prices, up_to)| {
            prices.map(|(unit_price, flat_fee)| Tier {
                up_to,
                unit_price,
                flat_fee,
            })
        })
        .collect::<Option<Vec<Tier>>>()?;
    Some(Tiered::new(TieredSpec { tiers }))
}

fn bulk(
    price: &proto::BulkPrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<Bulk> {
    let brackets_path = format!("{path}.brackets");
    let bounds = bounds(
        price.brackets.iter().map(|bracket| bracket.up_to.as_ref()),
        &brackets_path,
        violations,
    );
    let amounts: Vec<Option<Decimal>> = price
        .brackets
        .iter()
        .enumerate()
        .map(|(index, bracket)| {
            required_money(
                bracket.amount.as_ref(),
                &format!("{brackets_path}[{index}].amount"),
                context.currency,
                violations,
            )
        })
        .collect();
    let brackets = bounds?
        .into_iter()
        .zip(amounts)
        .map(|(up_to, amount)| amount.map(|amount| Bracket { up_to, amount }))
        .collect::<Option<Vec<Bracket>>>()?;
    Some(Bulk::new(BulkSpec { brackets }))
}

/// Reads and checks the upper bounds of a tier or bracket list: present
/// (non-empty), each bound positive and above the previous one, only the last
/// one open. Reports every bad bound.
fn bounds<'a>(
    bounds: impl ExactSizeIterator<Item = Option<&'a common::Decimal>>,
    list_path: &str,
    violations: &mut Violations,
) -> Option<Vec<Option<Decimal>>> {
    let count = bounds.len();
    if count == 0 {
        violations.add(
            list_path,
            Rule::Required,
            format!("{list_path} needs at least one entry (the last one without up_to)"),
        );
        return None;
    }
    let mut parsed = Vec::with_capacity(count);
    let mut valid = true;
    let mut previous: Option<(usize, Decimal)> = None;
    for (index, bound) in bounds.enumerate() {
        let field = format!("{list_path}[{index}].up_to");
        let is_last = index + 1 == count;
        let Some(text) = bound else {
            if !is_last {
                violations.add(
                    &field,
                    Rule::OpenEndedTierNotLast,
                    format!("{field} is absent (open-ended) but only the last entry may be"),
                );
                valid = false;
            }
            parsed.push(None);
            continue;
        };
        let Some(up_to) = decimal(&text.value, &field, violations) else {
            valid = false;
            parsed.push(None);
            continue;
        };
        if up_to <= Decimal::ZERO {
            violations.add(
                &field,
                Rule::MustBePositive,
                format!("{field} must be greater than 0, got {up_to}"),
            );
            valid = false;
        } else if within(up_to, &field, Bound::Quantity, violations).is_none() {
            valid = false;
        } else if let Some((previous_index, previous_up_to)) = previous
            && up_to <= previous_up_to
        {
            violations.add(
                &field,
                Rule::TiersNotAscending,
                format!(
                    "{field} {up_to} must be greater than {list_path}[{previous_index}].up_to {previous_up_to}"
                ),
            );
            valid = false;
        }
        if is_last {
            violations.add(
                &field,
                Rule::LastTierNotOpenEnded,
                format!(
                    "{field} must be absent: the last entry is open-ended, it stops at {up_to}"
                ),
            );
            valid = false;
        }
        previous = Some((index, up_to));
        parsed.push(Some(up_to));
    }
    valid.then_some(parsed)
}

fn percentage(
    price: &proto::PercentagePrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<Percentage> {
    if let Some(meter) = context.meter
        && !matches!(meter.aggregation(), Aggregation::Sum { .. })
    {
        violations.add(
            path,
            Rule::RequiresSumMeter,
            format!(
                "percentage pricing needs a meter that sums an amount; meter {} aggregates with {}",
                meter.code(),
                meter.aggregation().name()
            ),
        );
    }
    let rate_field = format!("{path}.rate_percent");
    let rate_percent = required_decimal(price.rate_percent.as_ref(), &rate_field, violations)
        .and_then(|rate| {
            if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED {
                violations.add(
                    &rate_field,
                    Rule::RateOutOfRange,
                    format!("{rate_field} must be between 0 and 100, got {rate}"),
                );
                return None;
            }
            within(rate, &rate_field, Bound::RatePercent, violations)
        });
    let fixed_fee = optional_money(
        price.fixed_fee_per_event.as_ref(),
        &format!("{path}.fixed_fee_per_event"),
        context.currency,
        violations,
    );
    let minimum = optional_money(
        price.minimum_per_event.as_ref(),
        &format!("{path}.minimum_per_event"),
        context.currency,
        violations,
    );
    let maximum_field = format!("{path}.maximum_per_event");
    let maximum = optional_money(
        price.maximum_per_event.as_ref(),
        &maximum_field,
        context.currency,
        violations,
    );
    let ordered = minimum_not_above_maximum(
        minimum.flatten(),
        maximum.flatten(),
        &maximum_field,
        violations,
    );
    let free_volume = optional_bounded(
        price.free_amount.as_ref(),
        &format!("{path}.free_amount"),
        Bound::Quantity,
        violations,
    );
    let policy_field = format!("{path}.allowance_policy");
    let allowance_policy = match known_enum(price.allowance_policy, &policy_field, violations) {
        // Versions written before the policy existed priced sequentially.
        Some(
            proto::PercentageAllowancePolicy::Unspecified
            | proto::PercentageAllowancePolicy::Sequential,
        ) => Some(AllowancePolicy::Sequential),
        Some(proto::PercentageAllowancePolicy::FirstExhausted) => {
            Some(AllowancePolicy::FirstExhausted)
        }
        None => None,
    };
    if !ordered {
        return None;
    }
    Some(Percentage::new(PercentageSpec {
        rate_percent: rate_percent?,
        fixed_fee: fixed_fee?.unwrap_or_default(),
        min_per_transaction: minimum?,
        max_per_transaction: maximum?,
        free_transactions: price.free_events,
        free_volume: free_volume?.unwrap_or_default(),
        allowance_policy: allowance_policy?,
    }))
}

fn matrix(
    price: &proto::MatrixPrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<Matrix> {
    let dimensions = matrix_dimensions(price, path, context, violations);
    let mut cells = Vec::with_capacity(price.cells.len());
    let mut seen: BTreeMap<GroupKey, usize> = BTreeMap::new();
    for (index, cell) in price.cells.iter().enumerate() {
        let cell_path = format!("{path}.cells[{index}]");
        let key = cell_key(cell, &cell_path, &dimensions, violations);
        let unit_field = format!("{cell_path}.unit_price");
        let unit_price = required_bounded(
            cell.unit_price.as_ref(),
            &unit_field,
            Bound::Price,
            violations,
        );
        if let Some(key) = &key {
            if let Some(first) = seen.get(key) {
                violations.add(
                    &cell_path,
                    Rule::Duplicate,
                    format!("{cell_path} prices {key}, already priced by {path}.cells[{first}]"),
                );
            } else {
                seen.insert(key.clone(), index);
            }
        }
        cells.push(
            key.zip(unit_price)
                .map(|(key, unit_price)| MatrixCell { key, unit_price }),
        );
    }
    let default_unit_price = optional_bounded(
        price.default_unit_price.as_ref(),
        &format!("{path}.default_unit_price"),
        Bound::Price,
        violations,
    );
    if price.cells.is_empty() && price.default_unit_price.is_none() {
        violations.add(
            path,
            Rule::EmptyMatrix,
            format!("{path} needs at least one cell or a default_unit_price"),
        );
        return None;
    }
    let cells = cells.into_iter().collect::<Option<Vec<MatrixCell>>>()?;
    if seen.len() != cells.len() {
        return None;
    }
    Some(Matrix::new(MatrixSpec {
        cells,
        default_unit_price: default_unit_price?,
    }))
}

/// The matrix's dimensions, checked: unique, non-empty, and (when the meter is
/// known) exactly the meter's group-by properties, since usage is grouped by
/// all of them and a cell must equal a whole group key to match.
fn matrix_dimensions(
    price: &proto::MatrixPrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> BTreeSet<String> {
    let mut dimensions = BTreeSet::new();
    for (index, dimension) in price.dimensions.iter().enumerate() {
        let field = format!("{path}.dimensions[{index}]");
        if dimension.is_empty() {
            violations.add(&field, Rule::Required, format!("{field} is empty"));
        } else if !dimensions.insert(dimension.clone()) {
            violations.add(
                &field,
                Rule::Duplicate,
                format!("{path}.dimensions lists {dimension:?} more than once"),
            );
        }
    }
    if let Some(meter) = context.meter {
        let group_by: BTreeSet<String> = meter.spec().group_by.iter().cloned().collect();
        if group_by != dimensions {
            violations.add(
                format!("{path}.dimensions"),
                Rule::DimensionsMismatch,
                format!(
                    "{path}.dimensions must be the group_by properties of meter {} ({:?}), got {:?}",
                    meter.code(),
                    group_by,
                    dimensions
                ),
            );
        }
    }
    dimensions
}

/// A cell's group key, its values in the canonical form the meter gives
/// events (`1.50` and `1.5` are one group).
fn cell_key(
    cell: &proto::MatrixCell,
    cell_path: &str,
    dimensions: &BTreeSet<String>,
    violations: &mut Violations,
) -> Option<GroupKey> {
    let values: BTreeMap<&String, &String> = cell.dimension_values.iter().collect();
    let mut valid = true;
    for dimension in dimensions {
        if !values.contains_key(dimension) {
            violations.add(
                format!("{cell_path}.dimension_values"),
                Rule::MissingDimension,
                format!("{cell_path} has no value for dimension {dimension:?}"),
            );
            valid = false;
        }
    }
    for name in values.keys() {
        if !dimensions.contains(*name) {
            violations.add(
                format!("{cell_path}.dimension_values.{name}"),
                Rule::UnknownDimension,
                format!("{name:?} is not one of the matrix dimensions {dimensions:?}"),
            );
            valid = false;
        }
    }
    valid.then(|| {
        GroupKey::from_pairs(
            values
                .into_iter()
                .map(|(name, value)| (name.clone(), property_value(value).canonical_key())),
        )
    })
}

fn flat_fee(
    price: &proto::FlatFeePrice,
    path: &str,
    context: PriceContext<'_>,
    violations: &mut Violations,
) -> Built<FlatFee> {
    let amount = required_money(
        price.amount.as_ref(),
        &format!("{path}.amount"),
        context.currency,
        violations,
    )?;
    Some(FlatFee::new(FlatFeeSpec { amount }))
}

/// A domain pricing error as a violation on `path` (the model or charge).
pub fn domain_violation(error: &PricingError, path: &str, violations: &mut Violations) {
    let rule = match error {
        PricingError::NoTiers => Rule::Required,
        PricingError::TierBoundNotPositive { .. } | PricingError::PackageSizeNotPositive { .. } => {
            Rule::MustBePositive
        }
        PricingError::TiersNotAscending { .. } => Rule::TiersNotAscending,
        PricingError::OpenEndedTierNotLast { .. } => Rule::OpenEndedTierNotLast,
        PricingError::LastTierNotOpenEnded { .. } => Rule::LastTierNotOpenEnded,
        PricingError::NegativeAmount { .. } => Rule::MustNotBeNegative,
        PricingError::RateOutOfRange { .. } => Rule::RateOutOfRange,
        PricingError::MinimumAboveMaximum { .. } => Rule::MinimumAboveMaximum,
        PricingError::FreeUnitsNotApplicable { .. } => Rule::NotApplicable,
        PricingError::EmptyMatrix => Rule::EmptyMatrix,
        PricingError::DuplicateMatrixCell { .. } => Rule::Duplicate,
        PricingError::NegativeQuantity { .. }
        | PricingError::NegativeTransactionAmount { .. }
        | PricingError::UsageMismatch { .. }
        | PricingError::NoPriceForGroup { .. }
        | PricingError::Overflow => Rule::InvalidFormat,
    };
    violations.add(path, rule, error.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(value: &str) -> Option<common::Decimal> {
        Some(common::Decimal {
            value: value.into(),
        })
    }

    #[test]
    fn every_bad_bound_is_reported() {
        let list = [
            bound("0"),
            None,
            bound("50"),
            bound("40"),
            bound("x"),
            bound("60"),
        ];
        let mut violations = Violations::default();
        assert_eq!(
            bounds(list.iter().map(Option::as_ref), "tiers", &mut violations),
            None
        );
        assert_eq!(
            violations.pairs(),
            [
                ("tiers[0].up_to", "must_be_positive"),
                ("tiers[1].up_to", "open_ended_tier_not_last"),
                ("tiers[3].up_to", "tiers_not_ascending"),
                ("tiers[4].up_to", "invalid_decimal"),
                ("tiers[5].up_to", "last_tier_not_open_ended"),
            ]
        );
    }
}
