//! Meters: which events count, how they aggregate, and how they are grouped.
//!
//! A [`Meter`] turns a matching [`UsageEvent`] into a [`Reading`]; an [`AggregateState`]
//! absorbs readings in any order and answers the same value as aggregating the whole set
//! at once (see [`Aggregation::aggregate`]).

mod group_key;
mod grouped;
mod state;

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use group_key::GroupKey;
pub use grouped::GroupedAggregate;
pub use state::{AggregateState, TIME_WEIGHTED_SCALE, TimedValue};

use crate::event::{PropertyValue, UsageEvent};
use crate::ids::{EventId, MeterCode};

/// What can go wrong metering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// An event the meter matched lacks the aggregated property.
    #[error("event {event_id}: property {property:?} is missing")]
    MissingProperty {
        /// The event.
        event_id: String,
        /// The property.
        property: String,
    },
    /// The aggregated property is not a number.
    #[error("event {event_id}: property {property:?} is not a number")]
    NotANumber {
        /// The event.
        event_id: String,
        /// The property.
        property: String,
    },
    /// A reading of the wrong shape for the state (e.g. a key given to a sum).
    #[error("a {measure} reading cannot be absorbed by a {aggregation} aggregate")]
    MeasureMismatch {
        /// The state's aggregation.
        aggregation: &'static str,
        /// The reading's shape.
        measure: &'static str,
    },
    /// Two states of different aggregations were merged.
    #[error("cannot merge a {other} aggregate into a {this} aggregate")]
    MergeMismatch {
        /// The receiving state.
        this: &'static str,
        /// The other state.
        other: &'static str,
    },
    /// A meter configuration with an empty property name.
    #[error("{field}: property name is empty")]
    EmptyPropertyName {
        /// Where.
        field: String,
    },
    /// The same group-by property twice.
    #[error("group_by lists {property:?} twice")]
    DuplicateGroupBy {
        /// The property.
        property: String,
    },
    /// A `one_of` / `none_of` filter without values.
    #[error("filter on {property:?} has no values")]
    EmptyFilterValues {
        /// The property.
        property: String,
    },
    /// A count, sum or time-weighted integral does not fit exactly: it would overflow, or
    /// a sum would be rounded (see [`crate::exact`]).
    #[error("aggregate overflow: the result does not fit a 28-digit decimal exactly")]
    Overflow,
}

/// Unit of time for a time-weighted sum: the result is in value·unit (e.g. GB·hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// value·seconds.
    Second,
    /// value·minutes.
    Minute,
    /// value·hours.
    Hour,
    /// value·days (24 h).
    Day,
}

impl TimeUnit {
    /// Seconds in one unit.
    pub fn seconds(self) -> i64 {
        match self {
            TimeUnit::Second => 1,
            TimeUnit::Minute => 60,
            TimeUnit::Hour => 3_600,
            TimeUnit::Day => 86_400,
        }
    }
}

/// How a meter's readings become one number for a period.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregation {
    /// Number of events.
    Count,
    /// Sum of a numeric property.
    Sum {
        /// The property.
        property: String,
    },
    /// Largest value of a numeric property (0 without events).
    Max {
        /// The property.
        property: String,
    },
    /// Smallest value of a numeric property (0 without events).
    Min {
        /// The property.
        property: String,
    },
    /// Number of distinct values of a property (compared by canonical form).
    UniqueCount {
        /// The property.
        property: String,
    },
    /// Value of the latest event: greatest `(timestamp, event id)`, so a timestamp tie goes
    /// to the greater event id and the answer never depends on arrival order (0 without events).
    Latest {
        /// The property.
        property: String,
    },
    /// Integral of a gauge over the period, in value·`unit` (e.g. GB·hours), rounded half-even
    /// to [`TIME_WEIGHTED_SCALE`] decimal places: each reading's
    /// value holds from its timestamp until the next reading or the period end. The last
    /// reading before the period start carries in from the start; before any reading the
    /// gauge is 0. Readings at the same instant: the greater event id holds.
    TimeWeightedSum {
        /// The gauge property.
        property: String,
        /// The time unit of the result.
        unit: TimeUnit,
    },
}

impl Aggregation {
    /// The aggregation's name, as in its serde tag.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum { .. } => "sum",
            Aggregation::Max { .. } => "max",
            Aggregation::Min { .. } => "min",
            Aggregation::UniqueCount { .. } => "unique_count",
            Aggregation::Latest { .. } => "latest",
            Aggregation::TimeWeightedSum { .. } => "time_weighted_sum",
        }
    }

    /// The aggregated property, if any.
    pub fn property(&self) -> Option<&str> {
        match self {
            Aggregation::Count => None,
            Aggregation::Sum { property }
            | Aggregation::Max { property }
            | Aggregation::Min { property }
            | Aggregation::UniqueCount { property }
            | Aggregation::Latest { property }
            | Aggregation::TimeWeightedSum { property, .. } => Some(property),
        }
    }

    /// The batch reference: aggregates a whole set of readings at once over `period`,
    /// computed directly from the set (only the time-weighted sum shares the integration of
    /// [`AggregateState`], after sorting). An [`AggregateState`] fed the same set in any
    /// order answers the same value.
    pub fn aggregate(
        &self,
        readings: &[Reading<'_>],
        period: &crate::period::Period,
    ) -> Result<Decimal, MeterError> {
        let name = self.name();
        let numbers = || -> Result<Vec<Decimal>, MeterError> {
            readings
                .iter()
                .map(|reading| reading.measure.number(name))
                .collect()
        };
        Ok(match self {
            Aggregation::Count => Decimal::from(readings.len()),
            Aggregation::Sum { .. } => crate::exact::sum(numbers()?).ok_or(MeterError::Overflow)?,
            Aggregation::Max { .. } => numbers()?.into_iter().max().unwrap_or(Decimal::ZERO),
            Aggregation::Min { .. } => numbers()?.into_iter().min().unwrap_or(Decimal::ZERO),
            Aggregation::UniqueCount { .. } => {
                let keys = readings
                    .iter()
                    .map(|reading| reading.measure.key(name))
                    .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
                Decimal::from(keys.len())
            }
            Aggregation::Latest { .. } => match readings
                .iter()
                .max_by_key(|reading| (reading.timestamp, reading.event_id))
            {
                Some(latest) => latest.measure.number(name)?,
                None => Decimal::ZERO,
            },
            Aggregation::TimeWeightedSum { .. } => {
                let mut sorted: Vec<&Reading<'_>> = readings.iter().collect();
                sorted.sort_by(|left, right| {
                    (left.timestamp, left.event_id).cmp(&(right.timestamp, right.event_id))
                });
                let mut state = AggregateState::new(self);
                for reading in sorted {
                    state.absorb(reading)?;
                }
                state.value(period)?
            }
        })
    }
}

/// What one event contributes to an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measure<'a> {
    /// One event (count).
    One,
    /// A numeric value (sum, max, min, latest, time-weighted sum).
    Number(Decimal),
    /// A distinct key (unique count).
    Key(Cow<'a, str>),
}

impl Measure<'_> {
    /// The number, or a mismatch error naming `aggregation`.
    pub(crate) fn number(&self, aggregation: &'static str) -> Result<Decimal, MeterError> {
        match self {
            Measure::Number(value) => Ok(*value),
            Measure::One | Measure::Key(_) => Err(self.mismatch(aggregation)),
        }
    }

    /// The key, or a mismatch error naming `aggregation`.
    pub(crate) fn key(&self, aggregation: &'static str) -> Result<&str, MeterError> {
        match self {
            Measure::Key(key) => Ok(key),
            Measure::One | Measure::Number(_) => Err(self.mismatch(aggregation)),
        }
    }

    /// Nothing, or a mismatch error naming `aggregation`.
    pub(crate) fn one(&self, aggregation: &'static str) -> Result<(), MeterError> {
        match self {
            Measure::One => Ok(()),
            Measure::Number(_) | Measure::Key(_) => Err(self.mismatch(aggregation)),
        }
    }

    fn mismatch(&self, aggregation: &'static str) -> MeterError {
        MeterError::MeasureMismatch {
            aggregation,
            measure: self.name(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Measure::One => "count",
            Measure::Number(_) => "number",
            Measure::Key(_) => "key",
        }
    }
}

/// One event's contribution, borrowed from the event (absorbing does not allocate for
/// count, sum, max and min).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading<'a> {
    /// The event id, the tie-breaker for equal timestamps.
    pub event_id: &'a EventId,
    /// The event time.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The contribution.
    pub measure: Measure<'a>,
}

/// A condition on an event property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", content = "values", rename_all = "snake_case")]
pub enum FilterCondition {
    /// The property is present and equal to one of the values.
    OneOf(Vec<PropertyValue>),
    /// The property is absent or equal to none of the values.
    NoneOf(Vec<PropertyValue>),
    /// The property is present.
    Exists,
    /// The property is absent.
    Missing,
}

/// A filter: only events whose property satisfies the condition are metered.
/// Values compare by kind: numbers numerically (`1.50` = `1.5`), text exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The property.
    pub property: String,
    /// The condition.
    pub condition: FilterCondition,
}

impl Filter {
    /// Whether `event` passes.
    pub fn accepts(&self, event: &UsageEvent) -> bool {
        let value = event.property(&self.property);
        match (&self.condition, value) {
            (FilterCondition::OneOf(values), Some(value)) => values.contains(value),
            (FilterCondition::OneOf(_), None) => false,
            (FilterCondition::NoneOf(values), Some(value)) => !values.contains(value),
            (FilterCondition::NoneOf(_), None) => true,
            (FilterCondition::Exists, found) => found.is_some(),
            (FilterCondition::Missing, found) => found.is_none(),
        }
    }
}

/// The configuration of a meter, before validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterSpec {
    /// The meter's code, which is also the event type it reads.
    pub code: MeterCode,
    /// How readings aggregate.
    pub aggregation: Aggregation,
    /// All must pass for an event to count.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Properties whose values split the usage into groups.
    #[serde(default)]
    pub group_by: Vec<String>,
}

/// A validated meter.
///
/// ```
/// use std::collections::BTreeMap;
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::event::{PropertyValue, RawUsageEvent, UsageEvent};
/// use tally_domain::ids::MeterCode;
/// use tally_domain::meter::{Aggregation, AggregateState, Filter, FilterCondition, Meter, MeterSpec};
/// use tally_domain::period::Period;
///
/// let meter = Meter::new(MeterSpec {
///     code: MeterCode::parse("llm.tokens").unwrap(),
///     aggregation: Aggregation::Sum { property: "tokens".into() },
///     filters: vec![Filter { property: "cached".into(), condition: FilterCondition::NoneOf(vec![PropertyValue::Bool(true)]) }],
///     group_by: vec!["model".into()],
/// }).unwrap();
/// let event = UsageEvent::from_raw(RawUsageEvent {
///     id: "e1".into(), customer: "cus_1".into(), event_type: "llm.tokens".into(),
///     timestamp: Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
///     properties: BTreeMap::from([
///         ("tokens".into(), PropertyValue::Number(dec!(1200))),
///         ("model".into(), PropertyValue::Text("large".into())),
///     ]),
/// }).unwrap();
/// let mut state = AggregateState::new(meter.aggregation());
/// let reading = meter.reading(&event).unwrap().expect("the event matches");
/// state.absorb(&reading).unwrap();
/// let january = Period::new(
///     Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
///     Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap(),
/// ).unwrap();
/// assert_eq!(state.value(&january).unwrap(), dec!(1200));
/// assert_eq!(meter.group_key(&event).get("model"), Some("large"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MeterSpec", into = "MeterSpec")]
pub struct Meter {
    spec: MeterSpec,
}

impl Meter {
    /// Validates and builds a meter.
    pub fn new(spec: MeterSpec) -> Result<Meter, MeterError> {
        if let Some(property) = spec.aggregation.property()
            && property.is_empty()
        {
            return Err(MeterError::EmptyPropertyName {
                field: "aggregation.property".into(),
            });
        }
        for (index, filter) in spec.filters.iter().enumerate() {
            if filter.property.is_empty() {
                return Err(MeterError::EmptyPropertyName {
                    field: format!("filters[{index}]"),
                });
            }
            if let FilterCondition::OneOf(values) | FilterCondition::NoneOf(values) =
                &filter.condition
                && values.is_empty()
            {
                return Err(MeterError::EmptyFilterValues {
                    property: filter.property.clone(),
                });
            }
        }
        for (index, property) in spec.group_by.iter().enumerate() {
            if property.is_empty() {
                return Err(MeterError::EmptyPropertyName {
                    field: format!("group_by[{index}]"),
                });
            }
            if spec.group_by[..index].contains(property) {
                return Err(MeterError::DuplicateGroupBy {
                    property: property.clone(),
                });
            }
        }
        Ok(Meter { spec })
    }

    /// The code (and event type).
    pub fn code(&self) -> &MeterCode {
        &self.spec.code
    }

    /// The aggregation.
    pub fn aggregation(&self) -> &Aggregation {
        &self.spec.aggregation
    }

    /// The validated configuration.
    pub fn spec(&self) -> &MeterSpec {
        &self.spec
    }

    /// Whether the event is of this meter's type and passes every filter.
    pub fn matches(&self, event: &UsageEvent) -> bool {
        event.event_type() == &self.spec.code
            && self.spec.filters.iter().all(|filter| filter.accepts(event))
    }

    /// The event's reading, `None` when the meter does not match it; an error when it
    /// matches but lacks a usable value.
    pub fn reading<'a>(&self, event: &'a UsageEvent) -> Result<Option<Reading<'a>>, MeterError> {
        if !self.matches(event) {
            return Ok(None);
        }
        let measure = match &self.spec.aggregation {
            Aggregation::Count => Measure::One,
            Aggregation::UniqueCount { property } => match event.property(property) {
                Some(PropertyValue::Text(text)) => Measure::Key(Cow::Borrowed(text)),
                Some(value @ (PropertyValue::Number(_) | PropertyValue::Bool(_))) => {
                    Measure::Key(Cow::Owned(value.canonical_key()))
                }
                None => return Err(missing(event, property)),
            },
            Aggregation::Sum { property }
            | Aggregation::Max { property }
            | Aggregation::Min { property }
            | Aggregation::Latest { property }
            | Aggregation::TimeWeightedSum { property, .. } => {
                Measure::Number(number(event, property)?)
            }
        };
        Ok(Some(Reading {
            event_id: event.id(),
            timestamp: event.timestamp(),
            measure,
        }))
    }

    /// The group the event belongs to: its values of the group-by properties.
    pub fn group_key(&self, event: &UsageEvent) -> GroupKey {
        GroupKey::from_pairs(self.spec.group_by.iter().filter_map(|property| {
            event
                .property(property)
                .map(|value| (property.clone(), value.canonical_key()))
        }))
    }
}

impl TryFrom<MeterSpec> for Meter {
    type Error = MeterError;

    fn try_from(spec: MeterSpec) -> Result<Self, Self::Error> {
        Meter::new(spec)
    }
}

impl From<Meter> for MeterSpec {
    fn from(meter: Meter) -> MeterSpec {
        meter.spec
    }
}

fn number(event: &UsageEvent, property: &str) -> Result<Decimal, MeterError> {
    let value = event
        .property(property)
        .ok_or_else(|| missing(event, property))?;
    value.as_number().ok_or_else(|| MeterError::NotANumber {
        event_id: event.id().to_string(),
        property: property.to_owned(),
    })
}

fn missing(event: &UsageEvent, property: &str) -> MeterError {
    MeterError::MissingProperty {
        event_id: event.id().to_string(),
        property: property.to_owned(),
    }
}

#[cfg(test)]
mod tests;
