//! Plans: versioned bundles of recurring and usage charges in one currency.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{ChargeCode, MeterCode, PlanId};
use crate::money::Currency;
use crate::period::{BillingCycle, BillingInterval};
use crate::pricing::{ChargePrice, PriceModel, UsageKind};

/// A plan that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Versions start at 1.
    #[error("plan version must be at least 1")]
    InvalidVersion,
    /// A plan needs a name.
    #[error("plan name is empty")]
    EmptyName,
    /// A plan needs something to bill.
    #[error("plan has no charges")]
    NoCharges,
    /// Charge codes are unique within a plan version.
    #[error("charge code {code} is used twice")]
    DuplicateChargeCode {
        /// The code.
        code: ChargeCode,
    },
    /// A recurring charge is priced on a quantity (seats, units), not on transactions or groups.
    #[error("recurring charge {code} cannot use {model} pricing")]
    RecurringChargeNeedsQuantityModel {
        /// The charge.
        code: ChargeCode,
        /// The model's name.
        model: &'static str,
    },
    /// A negative minimum commitment.
    #[error("minimum commitment must not be negative, got {value}")]
    NegativeMinimumCommitment {
        /// The value.
        value: Decimal,
    },
}

/// When a recurring charge is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingTiming {
    /// At the start of the period it pays for.
    InAdvance,
    /// At the end of the period it pays for.
    InArrears,
}

/// What a charge bills for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChargeKind {
    /// A fee per period (its quantity is the subscription's, e.g. seats).
    Recurring {
        /// In advance or in arrears.
        timing: BillingTiming,
    },
    /// Usage of a meter, always billed in arrears.
    Usage {
        /// The meter.
        meter: MeterCode,
    },
}

/// One charge of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCharge {
    /// Unique within the plan version.
    pub code: ChargeCode,
    /// What the invoice line says.
    pub name: String,
    /// Recurring or usage.
    pub kind: ChargeKind,
    /// How it is priced, in the plan's currency.
    pub price: ChargePrice,
}

/// How a subscription's billing anchor follows from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorPolicy {
    /// Periods start at the subscription's start instant (the 31st stays the 31st).
    SubscriptionStart,
    /// Periods follow the calendar: midnight UTC, Monday, the 1st, the quarter, 1 January.
    /// The first period runs from the start to the next calendar boundary.
    Calendar,
}

/// The configuration of one plan version, before validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    /// The plan.
    pub id: PlanId,
    /// The version, from 1; a published version never changes.
    pub version: u32,
    /// Display name.
    pub name: String,
    /// Currency of every amount in the plan.
    pub currency: Currency,
    /// Billing interval.
    pub interval: BillingInterval,
    /// Anchor policy.
    pub anchor: AnchorPolicy,
    /// Days of free trial from the start (0 for none).
    #[serde(default)]
    pub trial_days: u32,
    /// Least billed per period across usage charges (topped up by a true-up line).
    #[serde(default)]
    pub minimum_commitment: Option<Decimal>,
    /// The charges.
    pub charges: Vec<PlanCharge>,
}

/// A validated plan version.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::ids::{ChargeCode, PlanId};
/// use tally_domain::money::Currency;
/// use tally_domain::period::BillingInterval;
/// use tally_domain::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
/// use tally_domain::pricing::{ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PriceModel};
///
/// let plan = Plan::new(PlanSpec {
///     id: PlanId::parse("plan_pro").unwrap(), version: 1, name: "Pro".into(),
///     currency: Currency::USD, interval: BillingInterval::Month, anchor: AnchorPolicy::Calendar,
///     trial_days: 14, minimum_commitment: Some(dec!(100)),
///     charges: vec![PlanCharge {
///         code: ChargeCode::parse("platform").unwrap(), name: "Platform fee".into(),
///         kind: ChargeKind::Recurring { timing: BillingTiming::InAdvance },
///         price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::Flat(
///             FlatFee::new(FlatFeeSpec { amount: dec!(49) }).unwrap()))).unwrap(),
///     }],
/// }).unwrap();
/// let start = Utc.with_ymd_and_hms(2025, 3, 17, 15, 30, 0).unwrap();
/// assert_eq!(plan.anchor_for(start), Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap());
/// assert_eq!(plan.trial_end(start), Some(Utc.with_ymd_and_hms(2025, 3, 31, 15, 30, 0).unwrap()));
/// assert_eq!(plan.minimum_true_up(dec!(80)), Some(dec!(20)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanSpec", into = "PlanSpec")]
pub struct Plan {
    spec: PlanSpec,
}

impl Plan {
    /// Validates and builds a plan version.
    pub fn new(spec: PlanSpec) -> Result<Plan, PlanError> {
        if spec.version == 0 {
            return Err(PlanError::InvalidVersion);
        }
        if spec.name.trim().is_empty() {
            return Err(PlanError::EmptyName);
        }
        if spec.charges.is_empty() {
            return Err(PlanError::NoCharges);
        }
        for (index, charge) in spec.charges.iter().enumerate() {
            if spec.charges[..index]
                .iter()
                .any(|earlier| earlier.code == charge.code)
            {
                return Err(PlanError::DuplicateChargeCode {
                    code: charge.code.clone(),
                });
            }
            let model: &PriceModel = charge.price.model();
            let is_recurring = matches!(charge.kind, ChargeKind::Recurring { .. });
            if is_recurring && model.usage_kind() != UsageKind::Quantity {
                return Err(PlanError::RecurringChargeNeedsQuantityModel {
                    code: charge.code.clone(),
                    model: model.name(),
                });
            }
        }
        if let Some(value) = spec.minimum_commitment
            && value < Decimal::ZERO
        {
            return Err(PlanError::NegativeMinimumCommitment { value });
        }
        Ok(Plan { spec })
    }

    /// The validated configuration.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    /// The plan id.
    pub fn id(&self) -> &PlanId {
        &self.spec.id
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.spec.version
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.spec.currency
    }

    /// The billing interval.
    pub fn interval(&self) -> BillingInterval {
        self.spec.interval
    }

    /// The charges.
    pub fn charges(&self) -> &[PlanCharge] {
        &self.spec.charges
    }

    /// One charge by code.
    pub fn charge(&self, code: &ChargeCode) -> Option<&PlanCharge> {
        self.spec.charges.iter().find(|charge| &charge.code == code)
    }

    /// The usage charges reading `meter`.
    pub fn usage_charges<'a>(
        &'a self,
        meter: &'a MeterCode,
    ) -> impl Iterator<Item = &'a PlanCharge> {
        self.spec
            .charges
            .iter()
            .filter(move |charge| matches!(&charge.kind, ChargeKind::Usage { meter: read } if read == meter))
    }

    /// The billing anchor of a subscription starting at `start`.
    pub fn anchor_for(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self.spec.anchor {
            AnchorPolicy::SubscriptionStart => start,
            AnchorPolicy::Calendar => calendar_start(start, self.spec.interval),
        }
    }

    /// The billing cycle of a subscription starting at `start`.
    pub fn cycle_for(&self, start: DateTime<Utc>) -> BillingCycle {
        BillingCycle::new(self.anchor_for(start), self.spec.interval)
    }

    /// When a trial starting at `start` ends, if the plan has one.
    pub fn trial_end(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.spec.trial_days > 0).then(|| start + Duration::days(i64::from(self.spec.trial_days)))
    }

    /// The top-up needed for a period whose usage charges came to `usage_subtotal`.
    pub fn minimum_true_up(&self, usage_subtotal: Decimal) -> Option<Decimal> {
        self.spec
            .minimum_commitment
            .filter(|minimum| usage_subtotal < *minimum)
            .map(|minimum| minimum - usage_subtotal)
    }
}

impl TryFrom<PlanSpec> for Plan {
    type Error = PlanError;

    fn try_from(spec: PlanSpec) -> Result<Self, Self::Error> {
        Plan::new(spec)
    }
}

impl From<Plan> for PlanSpec {
    fn from(plan: Plan) -> PlanSpec {
        plan.spec
    }
}

/// The calendar boundary at or before `instant` for `interval`.
fn calendar_start(instant: DateTime<Utc>, interval: BillingInterval) -> DateTime<Utc> {
    let date = instant.date_naive();
    let first = match interval {
        BillingInterval::Day => date,
        BillingInterval::Week => {
            date - Duration::days(i64::from(date.weekday().num_days_from_monday()))
        }
        BillingInterval::Month => date.with_day(1).unwrap_or(date),
        BillingInterval::Quarter => {
            NaiveDate::from_ymd_opt(date.year(), (date.month0() / 3) * 3 + 1, 1).unwrap_or(date)
        }
        BillingInterval::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
    };
    Utc.from_utc_datetime(&first.and_time(chrono::NaiveTime::MIN))
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::pricing::{ChargePriceSpec, Matrix, MatrixSpec, PerUnit, PerUnitSpec};

    fn charge(code: &str, kind: ChargeKind, model: PriceModel) -> PlanCharge {
        PlanCharge {
            code: ChargeCode::parse(code).unwrap(),
            name: code.into(),
            kind,
            price: ChargePrice::new(ChargePriceSpec::plain(model)).unwrap(),
        }
    }

    fn per_unit() -> PriceModel {
        PriceModel::PerUnit(
            PerUnit::new(PerUnitSpec {
                unit_price: dec!(1),
            })
            .unwrap(),
        )
    }

    fn spec(charges: Vec<PlanCharge>) -> PlanSpec {
        PlanSpec {
            id: PlanId::parse("plan_x").unwrap(),
            version: 1,
            name: "X".into(),
            currency: Currency::EUR,
            interval: BillingInterval::Quarter,
            anchor: AnchorPolicy::Calendar,
            trial_days: 0,
            minimum_commitment: None,
            charges,
        }
    }

    #[test]
    fn invalid_plans_are_rejected() {
        let seats = || {
            charge(
                "seats",
                ChargeKind::Recurring {
                    timing: BillingTiming::InAdvance,
                },
                per_unit(),
            )
        };
        assert_eq!(Plan::new(spec(vec![])), Err(PlanError::NoCharges));
        assert!(matches!(
            Plan::new(spec(vec![seats(), seats()])),
            Err(PlanError::DuplicateChargeCode { .. })
        ));
        let matrix = PriceModel::Matrix(
            Matrix::new(MatrixSpec {
                cells: vec![],
                default_unit_price: Some(dec!(1)),
            })
            .unwrap(),
        );
        let recurring_matrix = charge(
            "m",
            ChargeKind::Recurring {
                timing: BillingTiming::InArrears,
            },
            matrix,
        );
        assert!(matches!(
            Plan::new(spec(vec![recurring_matrix])),
            Err(PlanError::RecurringChargeNeedsQuantityModel {
                model: "matrix",
                ..
            })
        ));
        assert_eq!(
            Plan::new(PlanSpec {
                version: 0,
                ..spec(vec![seats()])
            }),
            Err(PlanError::InvalidVersion)
        );
        assert_eq!(
            Plan::new(PlanSpec {
                minimum_commitment: Some(dec!(-1)),
                ..spec(vec![seats()])
            }),
            Err(PlanError::NegativeMinimumCommitment { value: dec!(-1) })
        );
    }

    #[test]
    fn calendar_anchors_and_usage_charges() {
        let api = MeterCode::parse("api").unwrap();
        let plan = Plan::new(spec(vec![charge(
            "calls",
            ChargeKind::Usage { meter: api.clone() },
            per_unit(),
        )]))
        .unwrap();
        let start = Utc.with_ymd_and_hms(2025, 8, 20, 10, 0, 0).unwrap();
        assert_eq!(
            plan.anchor_for(start),
            Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(plan.usage_charges(&api).count(), 1);
        assert_eq!(plan.trial_end(start), None);
        assert_eq!(plan.minimum_true_up(dec!(5)), None);
        let weekly = Plan::new(PlanSpec {
            interval: BillingInterval::Week,
            ..plan.spec().clone()
        })
        .unwrap();
        // 2025-08-20 is a Wednesday; the week starts Monday the 18th.
        assert_eq!(
            weekly.anchor_for(start),
            Utc.with_ymd_and_hms(2025, 8, 18, 0, 0, 0).unwrap()
        );
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }
}
