//! Price models: how a quantity (or a set of transactions, or grouped quantities) becomes
//! an exact amount with a breakdown an invoice line can print.
//!
//! Every model is a validated type: a bad configuration (unordered tiers, a last tier that
//! is not open-ended, a negative price, a zero package size, …) is rejected with a precise
//! [`PricingError`] when the model is built or deserialised, never when it is priced.
//! Pricing is exact: nothing is rounded here (see [`crate::money::RoundingMode`] for the
//! invoice line); an amount that cannot be computed exactly is [`PricingError::Overflow`],
//! never a rounded number ([`crate::bounds`] says which prices and quantities always fit). Amounts are in the currency of the plan the charge belongs to.

mod allowance;
mod breakdown;
mod bulk;
mod charge;
mod matrix;
mod percentage;
mod simple;
mod tiers;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use allowance::{AllowanceExhausted, AllowancePolicy, AllowancesEnded, TransactionRange};
pub use breakdown::{BreakdownItem, PriceBreakdown, TransactionTotals};
pub use bulk::{Bracket, Bulk, BulkSpec};
pub use charge::{ChargePrice, ChargePriceSpec};
pub use matrix::{Matrix, MatrixCell, MatrixSpec};
pub use percentage::{Percentage, PercentageSpec, Transaction};
pub use simple::{
    FlatFee, FlatFeeSpec, Package, PackageRounding, PackageSpec, PerUnit, PerUnitSpec,
};
pub use tiers::{Tier, Tiered, TieredSpec};

use crate::meter::GroupKey;

/// A price configuration that is invalid, or usage that cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A tiered or bulk price without tiers.
    #[error("at least one tier is required")]
    NoTiers,
    /// A tier bound of zero or less.
    #[error("tier {index}: up_to must be positive, got {up_to}")]
    TierBoundNotPositive {
        /// Tier position.
        index: usize,
        /// The bound.
        up_to: Decimal,
    },
    /// Tier bounds must strictly increase.
    #[error("tier {index}: up_to {up_to} must be greater than the previous tier's {previous}")]
    TiersNotAscending {
        /// Tier position.
        index: usize,
        /// The bound.
        up_to: Decimal,
        /// The previous tier's bound.
        previous: Decimal,
    },
    /// Only the last tier may be open-ended; this one overlaps all that follow.
    #[error("tier {index} is open-ended but is not the last tier")]
    OpenEndedTierNotLast {
        /// Tier position.
        index: usize,
    },
    /// The last tier must be open-ended, or larger quantities would have no price.
    #[error("the last tier must be open-ended, it stops at {up_to}")]
    LastTierNotOpenEnded {
        /// The last tier's bound.
        up_to: Decimal,
    },
    /// A price, fee or limit below zero.
    #[error("{field} must not be negative, got {value}")]
    NegativeAmount {
        /// Which field, e.g. `tiers[2].unit_price`.
        field: String,
        /// The value.
        value: Decimal,
    },
    /// Package size must be above zero.
    #[error("package size must be positive, got {size}")]
    PackageSizeNotPositive {
        /// The size given.
        size: Decimal,
    },
    /// A percentage outside 0–100.
    #[error("percentage rate must be between 0 and 100, got {rate}")]
    RateOutOfRange {
        /// The rate given, in percent.
        rate: Decimal,
    },
    /// A minimum greater than the maximum.
    #[error("{field}: minimum {minimum} is greater than maximum {maximum}")]
    MinimumAboveMaximum {
        /// Which pair, e.g. `per_transaction` or `charge`.
        field: &'static str,
        /// The minimum.
        minimum: Decimal,
        /// The maximum.
        maximum: Decimal,
    },
    /// Charge-level free units only make sense for a model priced by one quantity.
    #[error("free units do not apply to {model} pricing")]
    FreeUnitsNotApplicable {
        /// The model's name.
        model: &'static str,
    },
    /// A matrix with neither cells nor a default price prices nothing.
    #[error("a matrix needs at least one cell or a default unit price")]
    EmptyMatrix,
    /// Two matrix cells for the same group.
    #[error("matrix has two cells for group {key}")]
    DuplicateMatrixCell {
        /// The repeated group.
        key: GroupKey,
    },
    /// A negative quantity was priced.
    #[error("quantity must not be negative, got {quantity}")]
    NegativeQuantity {
        /// The quantity.
        quantity: Decimal,
    },
    /// A negative transaction amount was priced.
    #[error("transaction {event_id} has a negative amount {amount}")]
    NegativeTransactionAmount {
        /// The transaction's event id.
        event_id: String,
        /// The amount.
        amount: Decimal,
    },
    /// The model was given the wrong kind of usage.
    #[error("{model} pricing needs {expected} usage, got {given}")]
    UsageMismatch {
        /// The model's name.
        model: &'static str,
        /// The kind it needs.
        expected: UsageKind,
        /// The kind it got.
        given: UsageKind,
    },
    /// A group has no matrix cell and the matrix has no default price.
    #[error("no matrix price for group {key} and no default")]
    NoPriceForGroup {
        /// The group.
        key: GroupKey,
    },
    /// An amount does not fit a 96-bit decimal exactly: it would overflow, or be rounded
    /// (pricing never rounds; see [`crate::exact`] and [`crate::bounds`]).
    #[error("arithmetic overflow while pricing: an amount does not fit a 28-digit decimal exactly")]
    Overflow,
}

/// What a model is priced on.
#[derive(Clone, Copy, Debug)]
pub enum Usage<'a> {
    /// One aggregated quantity (most models).
    Quantity(Decimal),
    /// A quantity per group (matrix pricing).
    Grouped(&'a BTreeMap<GroupKey, Decimal>),
    /// The individual transactions (percentage pricing).
    Transactions(&'a [Transaction]),
}

/// The kind of a [`Usage`], for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKind {
    /// [`Usage::Quantity`].
    Quantity,
    /// [`Usage::Grouped`].
    Grouped,
    /// [`Usage::Transactions`].
    Transactions,
}

impl std::fmt::Display for UsageKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            UsageKind::Quantity => "a quantity",
            UsageKind::Grouped => "grouped quantities",
            UsageKind::Transactions => "transactions",
        })
    }
}

impl Usage<'_> {
    /// The kind of this usage.
    pub fn kind(&self) -> UsageKind {
        match self {
            Usage::Quantity(_) => UsageKind::Quantity,
            Usage::Grouped(_) => UsageKind::Grouped,
            Usage::Transactions(_) => UsageKind::Transactions,
        }
    }
}

/// Every way Tally can price usage. Matched exhaustively: adding a model is a compile error
/// everywhere a model must be handled.
///
/// Serialised with a `model` tag, e.g. `{"model":"per_unit","unit_price":"0.002"}`;
/// deserialising validates exactly like the constructors.
///
/// ```
/// use rust_decimal_macros::dec;
/// use tally_domain::pricing::{PerUnit, PriceModel};
///
/// let model: PriceModel = serde_json::from_str(r#"{"model":"per_unit","unit_price":"0.002"}"#).unwrap();
/// assert_eq!(model.price_quantity(dec!(1500)).unwrap().total(), dec!(3));
/// assert!(serde_json::from_str::<PriceModel>(r#"{"model":"per_unit","unit_price":"-1"}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum PriceModel {
    /// The same price for every unit.
    PerUnit(PerUnit),
    /// A price per started (or completed) package of units.
    Package(Package),
    /// Each tier prices the units that fall in it.
    Graduated(Tiered),
    /// The tier the total falls in prices every unit.
    Volume(Tiered),
    /// The bracket the total falls in gives the whole price (threshold / stairstep).
    Bulk(Bulk),
    /// A percentage of each transaction plus a fixed fee, with limits and free allowances.
    Percentage(Percentage),
    /// A unit price per group (dimension values), with a default.
    Matrix(Matrix),
    /// A fixed amount, whatever the quantity (a recurring platform fee).
    Flat(FlatFee),
}

impl PriceModel {
    /// The model's name, as in its serde tag.
    pub fn name(&self) -> &'static str {
        match self {
            PriceModel::PerUnit(_) => "per_unit",
            PriceModel::Package(_) => "package",
            PriceModel::Graduated(_) => "graduated",
            PriceModel::Volume(_) => "volume",
            PriceModel::Bulk(_) => "bulk",
            PriceModel::Percentage(_) => "percentage",
            PriceModel::Matrix(_) => "matrix",
            PriceModel::Flat(_) => "flat",
        }
    }

    /// The kind of usage this model is priced on.
    pub fn usage_kind(&self) -> UsageKind {
        match self {
            PriceModel::PerUnit(_)
            | PriceModel::Package(_)
            | PriceModel::Graduated(_)
            | PriceModel::Volume(_)
            | PriceModel::Bulk(_)
            | PriceModel::Flat(_) => UsageKind::Quantity,
            PriceModel::Percentage(_) => UsageKind::Transactions,
            PriceModel::Matrix(_) => UsageKind::Grouped,
        }
    }

    /// Prices `usage` exactly. Grouped usage given to a quantity model is priced on the
    /// sum of the groups; any other mismatch is [`PricingError::UsageMismatch`].
    pub fn price(&self, usage: Usage<'_>) -> Result<PriceBreakdown, PricingError> {
        match usage {
            Usage::Quantity(quantity) => self.price_quantity(quantity),
            Usage::Grouped(groups) => match self {
                PriceModel::Matrix(model) => model.price(groups),
                PriceModel::Percentage(_) => Err(self.mismatch(UsageKind::Grouped)),
                PriceModel::PerUnit(_)
                | PriceModel::Package(_)
                | PriceModel::Graduated(_)
                | PriceModel::Volume(_)
                | PriceModel::Bulk(_)
                | PriceModel::Flat(_) => self.price_quantity(sum(groups.values().copied())?),
            },
            Usage::Transactions(transactions) => match self {
                PriceModel::Percentage(model) => model.price(transactions),
                PriceModel::PerUnit(_)
                | PriceModel::Package(_)
                | PriceModel::Graduated(_)
                | PriceModel::Volume(_)
                | PriceModel::Bulk(_)
                | PriceModel::Matrix(_)
                | PriceModel::Flat(_) => Err(self.mismatch(UsageKind::Transactions)),
            },
        }
    }

    /// Prices one quantity; for [`UsageKind::Quantity`] models.
    pub fn price_quantity(&self, quantity: Decimal) -> Result<PriceBreakdown, PricingError> {
        match self {
            PriceModel::PerUnit(model) => model.price(quantity),
            PriceModel::Package(model) => model.price(quantity),
            PriceModel::Graduated(model) => model.price_graduated(quantity),
            PriceModel::Volume(model) => model.price_volume(quantity),
            PriceModel::Bulk(model) => model.price(quantity),
            PriceModel::Flat(model) => model.price(quantity),
            PriceModel::Percentage(_) | PriceModel::Matrix(_) => {
                Err(self.mismatch(UsageKind::Quantity))
            }
        }
    }

    fn mismatch(&self, given: UsageKind) -> PricingError {
        PricingError::UsageMismatch {
            model: self.name(),
            expected: self.usage_kind(),
            given,
        }
    }
}

/// Implements the validated-newtype pattern: `$model` wraps a `$spec` that passed
/// `$spec::validate`, and converts to and from it (serde goes through the same path).
macro_rules! validated_model {
    ($model:ident, $spec:ident) => {
        impl $model {
            /// Validates `spec` and builds the model.
            pub fn new(spec: $spec) -> Result<$model, PricingError> {
                spec.validate()?;
                Ok($model { spec })
            }

            /// The validated configuration.
            pub fn spec(&self) -> &$spec {
                &self.spec
            }
        }

        impl TryFrom<$spec> for $model {
            type Error = PricingError;

            fn try_from(spec: $spec) -> Result<Self, Self::Error> {
                $model::new(spec)
            }
        }

        impl From<$model> for $spec {
            fn from(model: $model) -> $spec {
                model.spec
            }
        }
    };
}
pub(crate) use validated_model;

pub(crate) fn add(left: Decimal, right: Decimal) -> Result<Decimal, PricingError> {
    crate::exact::add(left, right).ok_or(PricingError::Overflow)
}

pub(crate) fn subtract(left: Decimal, right: Decimal) -> Result<Decimal, PricingError> {
    crate::exact::sub(left, right).ok_or(PricingError::Overflow)
}

pub(crate) fn multiply(left: Decimal, right: Decimal) -> Result<Decimal, PricingError> {
    crate::exact::mul(left, right).ok_or(PricingError::Overflow)
}

pub(crate) fn sum(values: impl IntoIterator<Item = Decimal>) -> Result<Decimal, PricingError> {
    values.into_iter().try_fold(Decimal::ZERO, add)
}

pub(crate) fn require_non_negative(
    field: impl FnOnce() -> String,
    value: Decimal,
) -> Result<(), PricingError> {
    if value < Decimal::ZERO {
        return Err(PricingError::NegativeAmount {
            field: field(),
            value,
        });
    }
    Ok(())
}

/// Checks an optional minimum and maximum: each non-negative, the minimum not above the maximum.
pub(crate) fn validate_limits(
    field: &'static str,
    minimum: Option<Decimal>,
    maximum: Option<Decimal>,
) -> Result<(), PricingError> {
    if let Some(minimum) = minimum {
        require_non_negative(|| format!("{field}.minimum"), minimum)?;
    }
    if let Some(maximum) = maximum {
        require_non_negative(|| format!("{field}.maximum"), maximum)?;
    }
    if let (Some(minimum), Some(maximum)) = (minimum, maximum)
        && minimum > maximum
    {
        return Err(PricingError::MinimumAboveMaximum {
            field,
            minimum,
            maximum,
        });
    }
    Ok(())
}

pub(crate) fn check_quantity(quantity: Decimal) -> Result<(), PricingError> {
    if quantity < Decimal::ZERO {
        return Err(PricingError::NegativeQuantity { quantity });
    }
    Ok(())
}

/// Checks the upper bounds of a tier list: positive, strictly ascending, only the last open.
pub(crate) fn validate_bounds(
    bounds: impl ExactSizeIterator<Item = Option<Decimal>>,
) -> Result<(), PricingError> {
    let count = bounds.len();
    if count == 0 {
        return Err(PricingError::NoTiers);
    }
    let mut previous = Decimal::ZERO;
    for (index, bound) in bounds.enumerate() {
        let is_last = index + 1 == count;
        match bound {
            None if is_last => {}
            None => return Err(PricingError::OpenEndedTierNotLast { index }),
            Some(up_to) if up_to <= Decimal::ZERO => {
                return Err(PricingError::TierBoundNotPositive { index, up_to });
            }
            Some(up_to) if index > 0 && up_to <= previous => {
                return Err(PricingError::TiersNotAscending {
                    index,
                    up_to,
                    previous,
                });
            }
            Some(up_to) if is_last => return Err(PricingError::LastTierNotOpenEnded { up_to }),
            Some(up_to) => previous = up_to,
        }
    }
    Ok(())
}

/// The position of the tier containing `quantity` (> 0) and that tier's exclusive lower bound.
/// Bounds are inclusive upper bounds; validated bounds always end open, so a tier is found.
pub(crate) fn containing_tier(
    bounds: impl Iterator<Item = Option<Decimal>>,
    quantity: Decimal,
) -> (usize, Decimal) {
    let mut from = Decimal::ZERO;
    let mut last_index = 0;
    for (index, bound) in bounds.enumerate() {
        last_index = index;
        match bound {
            Some(up_to) if quantity > up_to => from = up_to,
            Some(_) | None => return (index, from),
        }
    }
    (last_index, from)
}
