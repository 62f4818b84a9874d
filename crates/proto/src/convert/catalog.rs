//! `tally.rating.v1` plan versions, charges and prices ↔ domain [`Plan`], [`PlanCharge`] and
//! [`ChargePrice`], for the services that read the catalog without owning it.
//!
//! Rating owns the catalog and checks a plan version element by element when it is
//! written (every broken rule of a draft at once). A published version read back from
//! rating has passed those checks, so this reader stops at the first broken rule; the
//! domain constructors decide validity. The same reader checks the charges and prices a
//! contract adds or overrides (`tally.invoicing.v1.SubscriptionTerms`), where the first
//! broken rule is the answer too. Matrix cells take their dimension values as written
//! (rating canonicalises typed values when it writes a version, so a published version's
//! cells are already canonical).

use rust_decimal::Decimal;
use tally_domain::ids::{ChargeCode, MeterCode, PlanId};
use tally_domain::meter::GroupKey;
use tally_domain::money::Currency;
use tally_domain::period::BillingInterval;
use tally_domain::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
use tally_domain::pricing::{
    AllowancePolicy, Bracket, Bulk, BulkSpec, ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec,
    Matrix, MatrixCell, MatrixSpec, Package, PackageRounding, PackageSpec, PerUnit, PerUnitSpec,
    Percentage, PercentageSpec, PriceModel, Tier, Tiered, TieredSpec,
};

use super::{
    Violation, code, decimal_value, money_in, money_value, required_decimal, rule, violation,
};
use crate::common;
use crate::rating as wire;
use crate::rating::price::Model;

/// A published plan version as a domain [`Plan`] (anchored on the subscription's start,
/// as rating reads it: alignment is the subscription's billing anchor).
pub fn plan_version(version: &wire::PlanVersion) -> Result<Plan, Violation> {
    let spec = version
        .spec
        .as_ref()
        .ok_or_else(|| violation("spec", rule::REQUIRED, "is required".to_owned()))?;
    let currency = Currency::from_code(&spec.currency).map_err(|_| {
        violation(
            "spec.currency",
            rule::UNKNOWN_CURRENCY,
            format!("{:?} is not an ISO 4217 currency code", spec.currency),
        )
    })?;
    let interval = match wire::BillingInterval::try_from(spec.billing_interval) {
        Ok(wire::BillingInterval::Day) => BillingInterval::Day,
        Ok(wire::BillingInterval::Week) => BillingInterval::Week,
        Ok(wire::BillingInterval::Month) => BillingInterval::Month,
        Ok(wire::BillingInterval::Quarter) => BillingInterval::Quarter,
        Ok(wire::BillingInterval::Year) => BillingInterval::Year,
        Ok(wire::BillingInterval::Unspecified) | Err(_) => {
            return Err(invalid_enum("spec.billing_interval", spec.billing_interval));
        }
    };
    let minimum_commitment = spec
        .minimum_commitment
        .as_ref()
        .map(|minimum| money_in(Some(minimum), currency, "spec.minimum_commitment"))
        .transpose()?
        .map(|minimum| minimum.amount());
    let charges = spec
        .charges
        .iter()
        .enumerate()
        .map(|(index, charge)| plan_charge(charge, currency, &format!("spec.charges[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let id = super::id::<PlanId>(&version.plan_id, "plan_id")?;
    Plan::new(PlanSpec {
        id,
        version: version.version,
        name: version.id.clone(),
        currency,
        interval,
        anchor: AnchorPolicy::SubscriptionStart,
        trial_days: spec.trial_days,
        minimum_commitment,
        charges,
    })
    .map_err(|error| violation("spec", rule::INVALID_VALUE, error.to_string()))
}

/// A charge of a plan version (or one a contract adds), at `field`.
pub fn plan_charge(
    charge: &wire::Charge,
    currency: Currency,
    field: &str,
) -> Result<PlanCharge, Violation> {
    let charge_code: ChargeCode = code(&charge.key, &format!("{field}.key"), ChargeCode::parse)?;
    let kind = if charge.meter_code.is_empty() {
        let timing = match wire::BillingTiming::try_from(charge.billing_timing) {
            Ok(wire::BillingTiming::InAdvance) => BillingTiming::InAdvance,
            Ok(wire::BillingTiming::InArrears) => BillingTiming::InArrears,
            Ok(wire::BillingTiming::Unspecified) | Err(_) => {
                return Err(invalid_enum(
                    &format!("{field}.billing_timing"),
                    charge.billing_timing,
                ));
            }
        };
        ChargeKind::Recurring { timing }
    } else {
        let meter: MeterCode = code(
            &charge.meter_code,
            &format!("{field}.meter_code"),
            MeterCode::parse,
        )?;
        ChargeKind::Usage { meter }
    };
    let price = charge_price(
        charge.price.as_ref(),
        PriceLimits {
            included_quantity: charge.included_quantity.as_ref(),
            minimum_amount: charge.minimum_amount.as_ref(),
            maximum_amount: charge.maximum_amount.as_ref(),
        },
        currency,
        field,
    )?;
    Ok(PlanCharge {
        code: charge_code,
        name: charge.name.clone(),
        kind,
        price,
    })
}

/// What a charge's price has beside its model (the fields of `Charge` and
/// `OverrideChargePrice` of the same names).
#[derive(Clone, Copy, Debug, Default)]
pub struct PriceLimits<'a> {
    /// Units free before pricing.
    pub included_quantity: Option<&'a common::Decimal>,
    /// The charge's minimum amount per period.
    pub minimum_amount: Option<&'a common::Money>,
    /// The charge's maximum amount per period.
    pub maximum_amount: Option<&'a common::Money>,
}

/// A charge price: the model at `{field}.price`, the limits beside it at `field`.
pub fn charge_price(
    price: Option<&wire::Price>,
    limits: PriceLimits<'_>,
    currency: Currency,
    field: &str,
) -> Result<ChargePrice, Violation> {
    let price_field = format!("{field}.price");
    let model = price_model(price, currency, &price_field)?;
    let free_units = limits
        .included_quantity
        .map(|value| required_decimal(Some(value), &format!("{field}.included_quantity")))
        .transpose()?
        .unwrap_or_default();
    let optional_amount = |value: Option<&common::Money>, name: &str| {
        value
            .map(|value| money_in(Some(value), currency, &format!("{field}.{name}")))
            .transpose()
            .map(|money| money.map(|money| money.amount()))
    };
    ChargePrice::new(ChargePriceSpec {
        model,
        free_units,
        minimum: optional_amount(limits.minimum_amount, "minimum_amount")?,
        maximum: optional_amount(limits.maximum_amount, "maximum_amount")?,
    })
    .map_err(|error| violation(field, rule::INVALID_VALUE, error.to_string()))
}

fn price_model(
    price: Option<&wire::Price>,
    currency: Currency,
    field: &str,
) -> Result<PriceModel, Violation> {
    let model = price
        .and_then(|price| price.model.as_ref())
        .ok_or_else(|| violation(field, rule::REQUIRED, "needs one model".to_owned()))?;
    let read = Reader { currency, field };
    let model = match model {
        Model::PerUnit(per_unit) => PriceModel::PerUnit(
            PerUnit::new(PerUnitSpec {
                unit_price: read.number(per_unit.unit_price.as_ref(), "per_unit.unit_price")?,
            })
            .map_err(|error| read.invalid(&error))?,
        ),
        Model::Package(package) => PriceModel::Package(read.package(package)?),
        Model::Graduated(tiered) => PriceModel::Graduated(read.tiered(tiered, "graduated")?),
        Model::Volume(tiered) => PriceModel::Volume(read.tiered(tiered, "volume")?),
        Model::Bulk(bulk) => {
            let mut brackets = Vec::with_capacity(bulk.brackets.len());
            for (index, bracket) in bulk.brackets.iter().enumerate() {
                let path = format!("bulk.brackets[{index}]");
                brackets.push(Bracket {
                    up_to: read
                        .optional_number(bracket.up_to.as_ref(), &format!("{path}.up_to"))?,
                    amount: read.amount(bracket.amount.as_ref(), &format!("{path}.amount"))?,
                });
            }
            PriceModel::Bulk(
                Bulk::new(BulkSpec { brackets }).map_err(|error| read.invalid(&error))?,
            )
        }
        Model::Percentage(percentage) => PriceModel::Percentage(read.percentage(percentage)?),
        Model::Matrix(matrix) => PriceModel::Matrix(read.matrix(matrix)?),
        Model::FlatFee(flat) => PriceModel::Flat(
            FlatFee::new(FlatFeeSpec {
                amount: read.amount(flat.amount.as_ref(), "flat_fee.amount")?,
            })
            .map_err(|error| read.invalid(&error))?,
        ),
    };
    Ok(model)
}

/// Reads the fields of one price model at `field`, amounts in `currency`.
struct Reader<'a> {
    currency: Currency,
    field: &'a str,
}

impl Reader<'_> {
    fn amount(&self, value: Option<&common::Money>, name: &str) -> Result<Decimal, Violation> {
        money_in(value, self.currency, &format!("{}.{name}", self.field))
            .map(|money| money.amount())
    }

    fn optional_amount(
        &self,
        value: Option<&common::Money>,
        name: &str,
    ) -> Result<Option<Decimal>, Violation> {
        value
            .map(|value| self.amount(Some(value), name))
            .transpose()
    }

    fn number(&self, value: Option<&common::Decimal>, name: &str) -> Result<Decimal, Violation> {
        required_decimal(value, &format!("{}.{name}", self.field))
    }

    fn optional_number(
        &self,
        value: Option<&common::Decimal>,
        name: &str,
    ) -> Result<Option<Decimal>, Violation> {
        value
            .map(|value| self.number(Some(value), name))
            .transpose()
    }

    fn invalid(&self, error: &tally_domain::pricing::PricingError) -> Violation {
        violation(self.field, rule::INVALID_VALUE, error.to_string())
    }

    fn package(&self, package: &wire::PackagePrice) -> Result<Package, Violation> {
        let rounding = match wire::PackageRounding::try_from(package.rounding) {
            Ok(wire::PackageRounding::Up) => PackageRounding::Up,
            Ok(wire::PackageRounding::Down) => PackageRounding::Down,
            Ok(wire::PackageRounding::Unspecified) | Err(_) => {
                return Err(invalid_enum(
                    &format!("{}.package.rounding", self.field),
                    package.rounding,
                ));
            }
        };
        Package::new(PackageSpec {
            package_size: self.number(package.package_size.as_ref(), "package.package_size")?,
            package_price: self.amount(package.package_price.as_ref(), "package.package_price")?,
            rounding,
            free_units: self
                .optional_number(package.free_units.as_ref(), "package.free_units")?
                .unwrap_or_default(),
        })
        .map_err(|error| self.invalid(&error))
    }

    fn tiered(&self, tiered: &wire::TieredPrice, name: &str) -> Result<Tiered, Violation> {
        let mut tiers = Vec::with_capacity(tiered.tiers.len());
        for (index, tier) in tiered.tiers.iter().enumerate() {
            let path = format!("{name}.tiers[{index}]");
            tiers.push(Tier {
                up_to: self.optional_number(tier.up_to.as_ref(), &format!("{path}.up_to"))?,
                unit_price: self
                    .optional_number(tier.unit_price.as_ref(), &format!("{path}.unit_price"))?
                    .unwrap_or_default(),
                flat_fee: self
                    .optional_amount(tier.flat_amount.as_ref(), &format!("{path}.flat_amount"))?
                    .unwrap_or_default(),
            });
        }
        Tiered::new(TieredSpec { tiers }).map_err(|error| self.invalid(&error))
    }

    fn percentage(&self, percentage: &wire::PercentagePrice) -> Result<Percentage, Violation> {
        let allowance_policy =
            match wire::PercentageAllowancePolicy::try_from(percentage.allowance_policy) {
                Ok(
                    wire::PercentageAllowancePolicy::Unspecified
                    | wire::PercentageAllowancePolicy::Sequential,
                ) => AllowancePolicy::Sequential,
                Ok(wire::PercentageAllowancePolicy::FirstExhausted) => {
                    AllowancePolicy::FirstExhausted
                }
                Err(_) => {
                    return Err(invalid_enum(
                        &format!("{}.percentage.allowance_policy", self.field),
                        percentage.allowance_policy,
                    ));
                }
            };
        Percentage::new(PercentageSpec {
            rate_percent: self
                .number(percentage.rate_percent.as_ref(), "percentage.rate_percent")?,
            fixed_fee: self
                .optional_amount(
                    percentage.fixed_fee_per_event.as_ref(),
                    "percentage.fixed_fee_per_event",
                )?
                .unwrap_or_default(),
            min_per_transaction: self.optional_amount(
                percentage.minimum_per_event.as_ref(),
                "percentage.minimum_per_event",
            )?,
            max_per_transaction: self.optional_amount(
                percentage.maximum_per_event.as_ref(),
                "percentage.maximum_per_event",
            )?,
            free_transactions: percentage.free_events,
            free_volume: self
                .optional_number(percentage.free_amount.as_ref(), "percentage.free_amount")?
                .unwrap_or_default(),
            allowance_policy,
        })
        .map_err(|error| self.invalid(&error))
    }

    fn matrix(&self, matrix: &wire::MatrixPrice) -> Result<Matrix, Violation> {
        let mut cells = Vec::with_capacity(matrix.cells.len());
        for (index, cell) in matrix.cells.iter().enumerate() {
            cells.push(MatrixCell {
                key: GroupKey::from_pairs(cell.dimension_values.clone()),
                unit_price: self.number(
                    cell.unit_price.as_ref(),
                    &format!("matrix.cells[{index}].unit_price"),
                )?,
            });
        }
        Matrix::new(MatrixSpec {
            cells,
            default_unit_price: self.optional_number(
                matrix.default_unit_price.as_ref(),
                "matrix.default_unit_price",
            )?,
        })
        .map_err(|error| self.invalid(&error))
    }
}

fn invalid_enum(field: &str, value: i32) -> Violation {
    violation(
        field,
        rule::INVALID_VALUE,
        format!("{value} is not one of the enum's values (unspecified is not allowed)"),
    )
}

/// A charge on the wire (what a contract adds).
pub fn plan_charge_value(charge: &PlanCharge, currency: Currency) -> wire::Charge {
    let (meter_code, billing_timing) = match &charge.kind {
        ChargeKind::Usage { meter } => (meter.as_str().to_owned(), wire::BillingTiming::InArrears),
        ChargeKind::Recurring { timing } => (
            String::new(),
            match timing {
                BillingTiming::InAdvance => wire::BillingTiming::InAdvance,
                BillingTiming::InArrears => wire::BillingTiming::InArrears,
            },
        ),
    };
    let spec = charge.price.spec();
    wire::Charge {
        key: charge.code.as_str().to_owned(),
        name: charge.name.clone(),
        meter_code,
        billing_timing: billing_timing.into(),
        price: Some(price_value(&spec.model, currency)),
        included_quantity: nonzero(spec.free_units).map(decimal_value),
        minimum_amount: spec.minimum.map(|amount| money_value(amount, currency)),
        maximum_amount: spec.maximum.map(|amount| money_value(amount, currency)),
    }
}

fn nonzero(value: Decimal) -> Option<Decimal> {
    (!value.is_zero()).then_some(value)
}

/// A price model on the wire.
pub fn price_value(model: &PriceModel, currency: Currency) -> wire::Price {
    let money = |amount: Decimal| Some(money_value(amount, currency));
    let tiers = |tiered: &Tiered| wire::TieredPrice {
        tiers: tiered
            .spec()
            .tiers
            .iter()
            .map(|tier| wire::PriceTier {
                up_to: tier.up_to.map(decimal_value),
                unit_price: Some(decimal_value(tier.unit_price)),
                flat_amount: nonzero(tier.flat_fee).and_then(money),
            })
            .collect(),
    };
    let model = match model {
        PriceModel::PerUnit(per_unit) => Model::PerUnit(wire::PerUnitPrice {
            unit_price: Some(decimal_value(per_unit.spec().unit_price)),
        }),
        PriceModel::Package(package) => {
            let spec = package.spec();
            Model::Package(wire::PackagePrice {
                package_size: Some(decimal_value(spec.package_size)),
                package_price: money(spec.package_price),
                rounding: match spec.rounding {
                    PackageRounding::Up => wire::PackageRounding::Up,
                    PackageRounding::Down => wire::PackageRounding::Down,
                }
                .into(),
                free_units: nonzero(spec.free_units).map(decimal_value),
            })
        }
        PriceModel::Graduated(tiered) => Model::Graduated(tiers(tiered)),
        PriceModel::Volume(tiered) => Model::Volume(tiers(tiered)),
        PriceModel::Bulk(bulk) => Model::Bulk(wire::BulkPrice {
            brackets: bulk
                .spec()
                .brackets
                .iter()
                .map(|bracket| wire::BulkBracket {
                    up_to: bracket.up_to.map(decimal_value),
                    amount: money(bracket.amount),
                })
                .collect(),
        }),
        PriceModel::Percentage(percentage) => {
            let spec = percentage.spec();
            Model::Percentage(wire::PercentagePrice {
                rate_percent: Some(decimal_value(spec.rate_percent)),
                fixed_fee_per_event: nonzero(spec.fixed_fee).and_then(money),
                minimum_per_event: spec.min_per_transaction.and_then(money),
                maximum_per_event: spec.max_per_transaction.and_then(money),
                free_events: spec.free_transactions,
                free_amount: nonzero(spec.free_volume).map(decimal_value),
                allowance_policy: match spec.allowance_policy {
                    AllowancePolicy::Sequential => wire::PercentageAllowancePolicy::Sequential,
                    AllowancePolicy::FirstExhausted => {
                        wire::PercentageAllowancePolicy::FirstExhausted
                    }
                }
                .into(),
            })
        }
        PriceModel::Matrix(matrix) => {
            let spec = matrix.spec();
            let mut dimensions: Vec<String> = spec
                .cells
                .iter()
                .flat_map(|cell| cell.key.dimensions().map(|(name, _)| name.to_owned()))
                .collect();
            dimensions.sort();
            dimensions.dedup();
            Model::Matrix(wire::MatrixPrice {
                dimensions,
                cells: spec
                    .cells
                    .iter()
                    .map(|cell| wire::MatrixCell {
                        dimension_values: cell
                            .key
                            .dimensions()
                            .map(|(name, value)| (name.to_owned(), value.to_owned()))
                            .collect(),
                        unit_price: Some(decimal_value(cell.unit_price)),
                    })
                    .collect(),
                default_unit_price: spec.default_unit_price.map(decimal_value),
            })
        }
        PriceModel::Flat(flat) => Model::FlatFee(wire::FlatFeePrice {
            amount: money(flat.spec().amount),
        }),
    };
    wire::Price { model: Some(model) }
}
