//! Aggregates split by group key.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{AggregateState, Aggregation, GroupKey, Meter, MeterError, Reading};
use crate::event::UsageEvent;
use crate::period::Period;

/// One aggregate state per group key, for meters with group-by (and matrix pricing).
/// Serialised as a list of `[key, state]` pairs, since keys are maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupedAggregate {
    aggregation: Aggregation,
    #[serde(with = "entries")]
    groups: BTreeMap<GroupKey, AggregateState>,
}

impl GroupedAggregate {
    /// No groups yet.
    pub fn new(aggregation: Aggregation) -> GroupedAggregate {
        GroupedAggregate {
            aggregation,
            groups: BTreeMap::new(),
        }
    }

    /// The aggregation.
    pub fn aggregation(&self) -> &Aggregation {
        &self.aggregation
    }

    /// Meters `event`: `Ok(false)` if the meter does not match it.
    pub fn absorb_event(&mut self, meter: &Meter, event: &UsageEvent) -> Result<bool, MeterError> {
        if meter.aggregation() != &self.aggregation {
            return Err(MeterError::MergeMismatch {
                this: self.aggregation.name(),
                other: meter.aggregation().name(),
            });
        }
        let Some(reading) = meter.reading(event)? else {
            return Ok(false);
        };
        self.absorb(meter.group_key(event), &reading)?;
        Ok(true)
    }

    /// Adds one reading to `key`'s group.
    pub fn absorb(&mut self, key: GroupKey, reading: &Reading<'_>) -> Result<(), MeterError> {
        let aggregation = &self.aggregation;
        self.groups
            .entry(key)
            .or_insert_with(|| AggregateState::new(aggregation))
            .absorb(reading)
    }

    /// Folds another grouped aggregate of the same aggregation into this one.
    pub fn merge(&mut self, other: &GroupedAggregate) -> Result<(), MeterError> {
        if other.aggregation != self.aggregation {
            return Err(MeterError::MergeMismatch {
                this: self.aggregation.name(),
                other: other.aggregation.name(),
            });
        }
        for (key, state) in &other.groups {
            match self.groups.get_mut(key) {
                Some(mine) => mine.merge(state)?,
                None => {
                    self.groups.insert(key.clone(), state.clone());
                }
            }
        }
        Ok(())
    }

    /// The state of each group.
    pub fn groups(&self) -> &BTreeMap<GroupKey, AggregateState> {
        &self.groups
    }

    /// Each group's value over `period`: the input of matrix pricing.
    pub fn values(&self, period: &Period) -> Result<BTreeMap<GroupKey, Decimal>, MeterError> {
        self.groups
            .iter()
            .map(|(key, state)| Ok((key.clone(), state.value(period)?)))
            .collect()
    }
}

mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{AggregateState, GroupKey};

    pub(super) fn serialize<S: Serializer>(
        groups: &BTreeMap<GroupKey, AggregateState>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(groups.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<GroupKey, AggregateState>, D::Error> {
        Ok(
            Vec::<(GroupKey, AggregateState)>::deserialize(deserializer)?
                .into_iter()
                .collect(),
        )
    }
}
