//! Wire ↔ domain for the catalog. Every `proto → domain` conversion walks the
//! whole input and reports **every** broken rule with its dotted field path
//! (`spec.charges[0].price.graduated.tiers[1].up_to`) and a stable rule name,
//! then builds the domain value through its validating constructor, which stays
//! the authority: a domain error the walk did not predict still becomes a
//! violation (never a panic, never a silently accepted value).

mod meter;
mod plan;
mod price;
mod values;

pub(crate) use meter::property_value;
pub use meter::{MeterDefinition, aggregation_to_proto, meter_definition, meter_to_proto};
pub use plan::{
    PlanAttributes, PlanIdentity, meter_codes, plan, plan_attributes, structural_violations,
    version_request_hash,
};
pub use values::{Rule, Violation, Violations, known_enum};
