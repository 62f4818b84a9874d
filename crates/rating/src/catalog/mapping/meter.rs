//! `CreateMeterRequest` → domain [`Meter`], and a stored meter → `tally.rating.v1.Meter`.

use chrono::{DateTime, Utc};
use tally_domain::event::PropertyValue;
use tally_domain::ids::MeterCode;
use tally_domain::meter::{
    Aggregation, Filter, FilterCondition, Meter, MeterError, MeterSpec, TimeUnit,
};
use tally_proto::rating as proto;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::idempotency::fingerprint;

use super::values::{
    Rule, Violations, code, known_enum, max_length, name_and_description, required_text,
};

/// Longest display unit.
const MAX_UNIT_CHARS: usize = 64;
/// Longest property name (the event property name limit).
const MAX_PROPERTY_CHARS: usize = 64;

/// A validated `CreateMeter` request: the domain meter plus its display attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterDefinition {
    /// The validated meter.
    pub meter: Meter,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Display unit.
    pub unit: String,
}

impl MeterDefinition {
    /// SHA-256 of the canonical definition: equal for the same request, so a
    /// replay is told from a different meter with the same code.
    pub fn definition_hash(&self) -> Vec<u8> {
        let spec = serde_json::to_vec(self.meter.spec()).unwrap_or_default();
        fingerprint([
            spec.as_slice(),
            self.name.as_bytes(),
            self.description.as_bytes(),
            self.unit.as_bytes(),
        ])
        .as_bytes()
        .to_vec()
    }
}

/// Validates a `CreateMeter` request, naming every broken rule (paths from the request root).
pub fn meter_definition(
    request: &proto::CreateMeterRequest,
) -> Result<MeterDefinition, Violations> {
    let mut violations = Violations::default();
    let code = code(&request.code, "code", MeterCode::parse, &mut violations);
    name_and_description(&request.name, &request.description, &mut violations);
    max_length(&request.unit, "unit", MAX_UNIT_CHARS, &mut violations);
    let aggregation = aggregation(request.aggregation, &request.property, &mut violations);
    // Every filter is checked (collected first), then any failure fails them all.
    let filters: Vec<Option<Filter>> = request
        .filters
        .iter()
        .enumerate()
        .map(|(index, filter)| meter_filter(filter, &format!("filters[{index}]"), &mut violations))
        .collect();
    let filters: Option<Vec<Filter>> = filters.into_iter().collect();
    group_by(&request.group_by, &mut violations);
    let (Some(code), Some(aggregation), Some(filters)) = (code, aggregation, filters) else {
        return Err(violations);
    };
    if !violations.is_empty() {
        return Err(violations);
    }
    let spec = MeterSpec {
        code,
        aggregation,
        filters,
        group_by: request.group_by.clone(),
    };
    match Meter::new(spec) {
        Ok(meter) => Ok(MeterDefinition {
            meter,
            name: request.name.clone(),
            description: request.description.clone(),
            unit: request.unit.clone(),
        }),
        Err(error) => {
            violations.add(domain_field(&error), domain_rule(&error), error.to_string());
            Err(violations)
        }
    }
}

fn aggregation(value: i32, property: &str, violations: &mut Violations) -> Option<Aggregation> {
    let kind: proto::Aggregation = known_enum(value, "aggregation", violations)?;
    let property_field = "property";
    let needs_property = |violations: &mut Violations| -> Option<String> {
        required_text(property, property_field, MAX_PROPERTY_CHARS, violations);
        (!property.trim().is_empty() && property.chars().count() <= MAX_PROPERTY_CHARS)
            .then(|| property.to_owned())
    };
    match kind {
        proto::Aggregation::Unspecified => violations.missing(
            "aggregation",
            "COUNT, SUM, MAX, MIN, UNIQUE_COUNT, LATEST or TIME_WEIGHTED_SUM",
        ),
        proto::Aggregation::Count => {
            if !property.is_empty() {
                violations.add(
                    property_field,
                    Rule::NotAllowed,
                    format!("property must be empty for COUNT, got {property:?}"),
                );
                return None;
            }
            Some(Aggregation::Count)
        }
        proto::Aggregation::Sum => {
            needs_property(violations).map(|property| Aggregation::Sum { property })
        }
        proto::Aggregation::Max => {
            needs_property(violations).map(|property| Aggregation::Max { property })
        }
        proto::Aggregation::Min => {
            needs_property(violations).map(|property| Aggregation::Min { property })
        }
        proto::Aggregation::UniqueCount => {
            needs_property(violations).map(|property| Aggregation::UniqueCount { property })
        }
        proto::Aggregation::Latest => {
            needs_property(violations).map(|property| Aggregation::Latest { property })
        }
        // The contract states time-weighted sums in value × hours (e.g. GB-hours).
        proto::Aggregation::TimeWeightedSum => {
            needs_property(violations).map(|property| Aggregation::TimeWeightedSum {
                property,
                unit: TimeUnit::Hour,
            })
        }
    }
}

fn meter_filter(
    filter: &proto::MeterFilter,
    field: &str,
    violations: &mut Violations,
) -> Option<Filter> {
    let property_field = format!("{field}.property");
    required_text(
        &filter.property,
        &property_field,
        MAX_PROPERTY_CHARS,
        violations,
    );
    let values_field = format!("{field}.values");
    let operator: proto::FilterOperator =
        known_enum(filter.operator, &format!("{field}.operator"), violations)?;
    let values = || {
        filter
            .values
            .iter()
            .map(|value| property_value(value))
            .collect()
    };
    let condition = match operator {
        proto::FilterOperator::Unspecified => {
            return violations.missing(
                &format!("{field}.operator"),
                "IN, NOT_IN, EXISTS or NOT_EXISTS",
            );
        }
        proto::FilterOperator::In | proto::FilterOperator::NotIn if filter.values.is_empty() => {
            violations.add(
                values_field,
                Rule::Required,
                format!("{field}.values needs at least one value for IN and NOT_IN"),
            );
            return None;
        }
        proto::FilterOperator::Exists | proto::FilterOperator::NotExists
            if !filter.values.is_empty() =>
        {
            violations.add(
                values_field,
                Rule::NotAllowed,
                format!("{field}.values must be empty for EXISTS and NOT_EXISTS"),
            );
            return None;
        }
        proto::FilterOperator::In => FilterCondition::OneOf(values()),
        proto::FilterOperator::NotIn => FilterCondition::NoneOf(values()),
        proto::FilterOperator::Exists => FilterCondition::Exists,
        proto::FilterOperator::NotExists => FilterCondition::Missing,
    };
    Some(Filter {
        property: filter.property.clone(),
        condition,
    })
}

fn group_by(properties: &[String], violations: &mut Violations) {
    for (index, property) in properties.iter().enumerate() {
        let field = format!("group_by[{index}]");
        required_text(property, &field, MAX_PROPERTY_CHARS, violations);
        if properties[..index].contains(property) && !property.is_empty() {
            violations.add(
                field,
                Rule::Duplicate,
                format!("group_by lists {property:?} more than once"),
            );
        }
    }
}

/// A filter value as the domain compares it: the same conversion the domain
/// applies to a string property value (a numeric string becomes a number,
/// anything else stays text), so filters and events agree.
pub(crate) fn property_value(text: &str) -> PropertyValue {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .unwrap_or_else(|_| PropertyValue::Text(text.to_owned()))
}

/// A property value back in its wire form (numbers keep their scale: `1.50`).
fn property_text(value: &PropertyValue) -> String {
    match value {
        PropertyValue::Bool(flag) => flag.to_string(),
        PropertyValue::Number(number) => number.to_string(),
        PropertyValue::Text(text) => text.clone(),
    }
}

fn domain_field(error: &MeterError) -> String {
    match error {
        MeterError::EmptyPropertyName { field } if field == "aggregation.property" => {
            "property".to_owned()
        }
        MeterError::EmptyPropertyName { field } if field.starts_with("filters") => {
            format!("{field}.property")
        }
        MeterError::EmptyPropertyName { field } => field.clone(),
        MeterError::DuplicateGroupBy { .. } => "group_by".to_owned(),
        MeterError::EmptyFilterValues { .. } => "filters".to_owned(),
        MeterError::MissingProperty { .. }
        | MeterError::NotANumber { .. }
        | MeterError::MeasureMismatch { .. }
        | MeterError::MergeMismatch { .. }
        | MeterError::Overflow => String::new(),
    }
}

fn domain_rule(error: &MeterError) -> Rule {
    match error {
        MeterError::EmptyPropertyName { .. } | MeterError::EmptyFilterValues { .. } => {
            Rule::Required
        }
        MeterError::DuplicateGroupBy { .. } => Rule::Duplicate,
        MeterError::MissingProperty { .. }
        | MeterError::NotANumber { .. }
        | MeterError::MeasureMismatch { .. }
        | MeterError::MergeMismatch { .. }
        | MeterError::Overflow => Rule::InvalidFormat,
    }
}

/// An aggregation in its wire form, with its property (empty for a count).
pub fn aggregation_to_proto(aggregation: &Aggregation) -> (proto::Aggregation, String) {
    match aggregation {
        Aggregation::Count => (proto::Aggregation::Count, String::new()),
        Aggregation::Sum { property } => (proto::Aggregation::Sum, property.clone()),
        Aggregation::Max { property } => (proto::Aggregation::Max, property.clone()),
        Aggregation::Min { property } => (proto::Aggregation::Min, property.clone()),
        Aggregation::UniqueCount { property } => {
            (proto::Aggregation::UniqueCount, property.clone())
        }
        Aggregation::Latest { property } => (proto::Aggregation::Latest, property.clone()),
        Aggregation::TimeWeightedSum { property, .. } => {
            (proto::Aggregation::TimeWeightedSum, property.clone())
        }
    }
}

/// A stored meter in its wire form.
pub fn meter_to_proto(
    id: String,
    meter: &Meter,
    name: String,
    description: String,
    unit: String,
    created_at: DateTime<Utc>,
) -> proto::Meter {
    let spec = meter.spec();
    let (aggregation, property) = aggregation_to_proto(&spec.aggregation);
    let filters = spec
        .filters
        .iter()
        .map(|filter| {
            let (operator, values) = match &filter.condition {
                FilterCondition::OneOf(values) => (proto::FilterOperator::In, values.as_slice()),
                FilterCondition::NoneOf(values) => {
                    (proto::FilterOperator::NotIn, values.as_slice())
                }
                FilterCondition::Exists => (proto::FilterOperator::Exists, &[][..]),
                FilterCondition::Missing => (proto::FilterOperator::NotExists, &[][..]),
            };
            proto::MeterFilter {
                property: filter.property.clone(),
                operator: operator as i32,
                values: values.iter().map(property_text).collect(),
            }
        })
        .collect();
    proto::Meter {
        id,
        code: spec.code.to_string(),
        name,
        description,
        aggregation: aggregation as i32,
        property,
        filters,
        group_by: spec.group_by.clone(),
        unit,
        created_at: Some(chrono_to_timestamp(created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> proto::CreateMeterRequest {
        proto::CreateMeterRequest {
            code: "llm.tokens".into(),
            name: "Tokens".into(),
            aggregation: proto::Aggregation::Sum as i32,
            property: "tokens".into(),
            filters: vec![proto::MeterFilter {
                property: "tier".into(),
                operator: proto::FilterOperator::In as i32,
                values: vec!["1.50".into(), "gold".into()],
            }],
            group_by: vec!["model".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_meter_round_trips_to_the_wire() {
        let definition = meter_definition(&request()).unwrap();
        let wire = meter_to_proto(
            "mtr_1".into(),
            &definition.meter,
            definition.name.clone(),
            String::new(),
            String::new(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(wire.code, "llm.tokens");
        assert_eq!(wire.filters, request().filters);
        assert_eq!(wire.group_by, ["model"]);
        assert_eq!(
            definition.meter.spec().filters[0].condition,
            FilterCondition::OneOf(vec![
                PropertyValue::Number(rust_decimal_macros::dec!(1.50)),
                PropertyValue::Text("gold".into())
            ])
        );
    }

    #[test]
    fn every_broken_rule_is_named() {
        let broken = proto::CreateMeterRequest {
            code: "Tokens".into(),
            name: String::new(),
            aggregation: proto::Aggregation::Count as i32,
            property: "tokens".into(),
            filters: vec![
                proto::MeterFilter {
                    property: String::new(),
                    operator: proto::FilterOperator::Exists as i32,
                    values: vec!["x".into()],
                },
                proto::MeterFilter {
                    property: "a".into(),
                    operator: 42,
                    values: vec![],
                },
            ],
            group_by: vec!["model".into(), "model".into()],
            ..Default::default()
        };
        let violations = meter_definition(&broken).unwrap_err();
        assert_eq!(
            violations.pairs(),
            [
                ("code", "invalid_characters"),
                ("name", "required"),
                ("property", "not_allowed"),
                ("filters[0].property", "required"),
                ("filters[0].values", "not_allowed"),
                ("filters[1].operator", "unknown_value"),
                ("group_by[1]", "duplicate"),
            ]
        );
    }
}
