//! A usage line's explanation: the priced line exactly as rating computed it
//! (meter, aggregation, quantities, the price model applied and every step
//! of the breakdown), kept by invoicing so a finalized invoice explains
//! itself without asking rating again.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::money::Money;

use super::Range;
use crate::text_enum::text_enum;

/// One charge of one plan version for one group over one period segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCharge {
    pub charge_key: String,
    pub charge_name: String,
    /// `pv_…`.
    pub plan_version_id: String,
    pub meter_code: String,
    pub aggregation: Aggregation,
    pub group: BTreeMap<String, String>,
    pub period: Option<Range>,
    /// Aggregated over the segment, before included units.
    pub quantity: Option<Decimal>,
    /// After included units (what the price model priced).
    pub billable_quantity: Option<Decimal>,
    pub event_count: u64,
    pub price: Option<Price>,
    pub breakdown: Vec<BreakdownStep>,
    pub precise_amount: Option<Money>,
    pub amount: Option<Money>,
    /// Highest ingest sequence number reflected.
    pub as_of_sequence_number: u64,
}

text_enum! {
    /// A meter's aggregation.
    pub enum Aggregation {
        Count = "count",
        Sum = "sum",
        Max = "max",
        Min = "min",
        UniqueCount = "unique_count",
        Latest = "latest",
        TimeWeightedSum = "time_weighted_sum",
    }
}

text_enum! {
    /// How a partial package is counted.
    pub enum PackageRounding {
        Up = "up",
        Down = "down",
    }
}

text_enum! {
    /// How a percentage price's free allowances apply.
    pub enum AllowancePolicy {
        Sequential = "sequential",
        FirstExhausted = "first_exhausted",
    }
}

text_enum! {
    /// What a breakdown step represents.
    pub enum BreakdownStepKind {
        IncludedUnits = "included_units",
        PerUnit = "per_unit",
        Package = "package",
        Tier = "tier",
        BulkBracket = "bulk_bracket",
        Percentage = "percentage",
        FixedFee = "fixed_fee",
        PerEventClamp = "per_event_clamp",
        MatrixCell = "matrix_cell",
        FlatFee = "flat_fee",
        ChargeMinimum = "charge_minimum",
        ChargeMaximum = "charge_maximum",
    }
}

/// The price model applied (a copy of the plan version's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum Price {
    PerUnit {
        unit_price: Option<Decimal>,
    },
    Package {
        package_size: Option<Decimal>,
        package_price: Option<Money>,
        rounding: PackageRounding,
        free_units: Option<Decimal>,
    },
    Graduated {
        tiers: Vec<PriceTier>,
    },
    Volume {
        tiers: Vec<PriceTier>,
    },
    Bulk {
        brackets: Vec<BulkBracket>,
    },
    Percentage {
        rate_percent: Option<Decimal>,
        fixed_fee_per_event: Option<Money>,
        minimum_per_event: Option<Money>,
        maximum_per_event: Option<Money>,
        free_events: u64,
        free_amount: Option<Decimal>,
        /// `None` when the plan left it unset (rating reads it as sequential).
        allowance_policy: Option<AllowancePolicy>,
    },
    Matrix {
        dimensions: Vec<String>,
        cells: Vec<MatrixCell>,
        default_unit_price: Option<Decimal>,
    },
    FlatFee {
        amount: Option<Money>,
    },
}

/// A tier of a graduated or volume price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub up_to: Option<Decimal>,
    pub unit_price: Option<Decimal>,
    pub flat_amount: Option<Money>,
}

/// A bracket of a bulk price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBracket {
    pub up_to: Option<Decimal>,
    pub amount: Option<Money>,
}

/// A cell of a matrix price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixCell {
    pub dimension_values: BTreeMap<String, String>,
    pub unit_price: Option<Decimal>,
}

/// One step of how the amount was computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakdownStep {
    pub kind: BreakdownStepKind,
    pub description: String,
    pub tier_index: u32,
    pub from_quantity: Option<Decimal>,
    pub to_quantity: Option<Decimal>,
    pub quantity: Option<Decimal>,
    pub unit_price: Option<Decimal>,
    pub flat_amount: Option<Money>,
    pub amount: Option<Money>,
}
