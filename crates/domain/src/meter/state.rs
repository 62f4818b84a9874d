//! Incremental aggregate state: absorbs readings in any order, merges, answers a value.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Aggregation, MeterError, Reading, TimeUnit};
use crate::ids::EventId;
use crate::period::Period;

/// A value at an instant, identified by its event (latest value, gauge reading).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedValue {
    /// When.
    pub timestamp: DateTime<Utc>,
    /// The event, the tie-breaker for equal timestamps.
    pub event_id: EventId,
    /// The value.
    pub value: Decimal,
}

impl TimedValue {
    fn order_key(&self) -> (DateTime<Utc>, &EventId) {
        (self.timestamp, &self.event_id)
    }
}

/// Gauge readings kept sorted by `(timestamp, event id)` without duplicates; sorted again
/// when deserialised, so the invariant holds whatever was stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<TimedValue>", into = "Vec<TimedValue>")]
pub struct GaugeReadings(Vec<TimedValue>);

impl From<Vec<TimedValue>> for GaugeReadings {
    fn from(mut readings: Vec<TimedValue>) -> GaugeReadings {
        readings.sort_by(|left, right| left.order_key().cmp(&right.order_key()));
        readings.dedup_by(|left, right| left.order_key() == right.order_key());
        GaugeReadings(readings)
    }
}

impl From<GaugeReadings> for Vec<TimedValue> {
    fn from(readings: GaugeReadings) -> Vec<TimedValue> {
        readings.0
    }
}

impl GaugeReadings {
    /// The readings in order.
    pub fn as_slice(&self) -> &[TimedValue] {
        &self.0
    }

    fn insert(&mut self, reading: TimedValue) {
        match self
            .0
            .binary_search_by(|probe| probe.order_key().cmp(&reading.order_key()))
        {
            Ok(position) => self.0[position] = reading,
            Err(position) => self.0.insert(position, reading),
        }
    }
}

/// The running aggregate of one meter (and group) over one period, serialisable for storage.
///
/// Absorbing is commutative: any order of the same duplicate-free set of readings gives the
/// same state, hence the same value. Count and sum trust that duplicates were removed
/// upstream (ingest de-duplicates by event id); unique count, latest and time-weighted sum
/// are also idempotent.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::ids::EventId;
/// use tally_domain::meter::{Aggregation, AggregateState, Measure, Reading, TimeUnit};
/// use tally_domain::period::Period;
///
/// // A disk at 10 GB from 00:00, resized to 40 GB at 06:00, over one day: 10×6 + 40×18 GB·h.
/// let hour = |h| Utc.with_ymd_and_hms(2025, 1, 1, h, 0, 0).unwrap();
/// let day = Period::new(hour(0), Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap()).unwrap();
/// let (first, second) = (EventId::parse("r1").unwrap(), EventId::parse("r2").unwrap());
/// let mut state = AggregateState::new(&Aggregation::TimeWeightedSum { property: "gb".into(), unit: TimeUnit::Hour });
/// state.absorb(&Reading { event_id: &second, timestamp: hour(6), measure: Measure::Number(dec!(40)) }).unwrap();
/// state.absorb(&Reading { event_id: &first, timestamp: hour(0), measure: Measure::Number(dec!(10)) }).unwrap();
/// assert_eq!(state.value(&day).unwrap(), dec!(780));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AggregateState {
    /// Events counted.
    Count {
        /// How many.
        count: u64,
    },
    /// Running sum.
    Sum {
        /// The sum.
        sum: Decimal,
    },
    /// Largest value so far.
    Max {
        /// `None` before the first reading.
        max: Option<Decimal>,
    },
    /// Smallest value so far.
    Min {
        /// `None` before the first reading.
        min: Option<Decimal>,
    },
    /// Distinct keys seen.
    UniqueCount {
        /// The keys.
        keys: BTreeSet<String>,
    },
    /// The reading with the greatest `(timestamp, event id)`.
    Latest {
        /// `None` before the first reading.
        latest: Option<TimedValue>,
    },
    /// Every gauge reading (the value depends on their order in time, not arrival).
    TimeWeightedSum {
        /// Unit of the result.
        unit: TimeUnit,
        /// The readings.
        readings: GaugeReadings,
    },
}

impl AggregateState {
    /// The empty state of `aggregation`.
    pub fn new(aggregation: &Aggregation) -> AggregateState {
        match aggregation {
            Aggregation::Count => AggregateState::Count { count: 0 },
            Aggregation::Sum { .. } => AggregateState::Sum { sum: Decimal::ZERO },
            Aggregation::Max { .. } => AggregateState::Max { max: None },
            Aggregation::Min { .. } => AggregateState::Min { min: None },
            Aggregation::UniqueCount { .. } => AggregateState::UniqueCount {
                keys: BTreeSet::new(),
            },
            Aggregation::Latest { .. } => AggregateState::Latest { latest: None },
            Aggregation::TimeWeightedSum { unit, .. } => AggregateState::TimeWeightedSum {
                unit: *unit,
                readings: GaugeReadings::default(),
            },
        }
    }

    /// The aggregation's name.
    pub fn name(&self) -> &'static str {
        match self {
            AggregateState::Count { .. } => "count",
            AggregateState::Sum { .. } => "sum",
            AggregateState::Max { .. } => "max",
            AggregateState::Min { .. } => "min",
            AggregateState::UniqueCount { .. } => "unique_count",
            AggregateState::Latest { .. } => "latest",
            AggregateState::TimeWeightedSum { .. } => "time_weighted_sum",
        }
    }

    /// Adds one reading.
    pub fn absorb(&mut self, reading: &Reading<'_>) -> Result<(), MeterError> {
        let name = self.name();
        match self {
            AggregateState::Count { count } => {
                reading.measure.one(name)?;
                *count = count.checked_add(1).ok_or(MeterError::Overflow)?;
            }
            AggregateState::Sum { sum } => {
                let value = reading.measure.number(name)?;
                *sum = sum.checked_add(value).ok_or(MeterError::Overflow)?;
            }
            AggregateState::Max { max } => {
                let value = reading.measure.number(name)?;
                *max = Some(max.map_or(value, |current| current.max(value)));
            }
            AggregateState::Min { min } => {
                let value = reading.measure.number(name)?;
                *min = Some(min.map_or(value, |current| current.min(value)));
            }
            AggregateState::UniqueCount { keys } => {
                let key = reading.measure.key(name)?;
                if !keys.contains(key) {
                    keys.insert(key.to_owned());
                }
            }
            AggregateState::Latest { latest } => {
                let value = reading.measure.number(name)?;
                let newer = latest.as_ref().is_none_or(|current| {
                    (reading.timestamp, reading.event_id) > current.order_key()
                });
                if newer {
                    *latest = Some(timed(reading, value));
                }
            }
            AggregateState::TimeWeightedSum { readings, .. } => {
                let value = reading.measure.number(name)?;
                readings.insert(timed(reading, value));
            }
        }
        Ok(())
    }

    /// Folds `other` (the same aggregation over other readings) into this state.
    pub fn merge(&mut self, other: &AggregateState) -> Result<(), MeterError> {
        let mismatch = MeterError::MergeMismatch {
            this: self.name(),
            other: other.name(),
        };
        match self {
            AggregateState::Count { count } => {
                let AggregateState::Count { count: more } = other else {
                    return Err(mismatch);
                };
                *count = count.checked_add(*more).ok_or(MeterError::Overflow)?;
            }
            AggregateState::Sum { sum } => {
                let AggregateState::Sum { sum: more } = other else {
                    return Err(mismatch);
                };
                *sum = sum.checked_add(*more).ok_or(MeterError::Overflow)?;
            }
            AggregateState::Max { max } => {
                let AggregateState::Max { max: theirs } = other else {
                    return Err(mismatch);
                };
                *max = (*max).max(*theirs);
            }
            AggregateState::Min { min } => {
                let AggregateState::Min { min: theirs } = other else {
                    return Err(mismatch);
                };
                *min = match (*min, *theirs) {
                    (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
                    (mine, theirs) => mine.or(theirs),
                };
            }
            AggregateState::UniqueCount { keys } => {
                let AggregateState::UniqueCount { keys: theirs } = other else {
                    return Err(mismatch);
                };
                keys.extend(theirs.iter().cloned());
            }
            AggregateState::Latest { latest } => {
                let AggregateState::Latest { latest: theirs } = other else {
                    return Err(mismatch);
                };
                if let Some(theirs) = theirs
                    && latest
                        .as_ref()
                        .is_none_or(|mine| theirs.order_key() > mine.order_key())
                {
                    *latest = Some(theirs.clone());
                }
            }
            AggregateState::TimeWeightedSum { unit, readings } => {
                let AggregateState::TimeWeightedSum {
                    unit: their_unit,
                    readings: theirs,
                } = other
                else {
                    return Err(mismatch);
                };
                if unit != their_unit {
                    return Err(mismatch);
                }
                for reading in theirs.as_slice() {
                    readings.insert(reading.clone());
                }
            }
        }
        Ok(())
    }

    /// The aggregate's value for `period` (only a time-weighted sum uses the period:
    /// the other states were fed the period's events).
    pub fn value(&self, period: &Period) -> Result<Decimal, MeterError> {
        Ok(match self {
            AggregateState::Count { count } => Decimal::from(*count),
            AggregateState::Sum { sum } => *sum,
            AggregateState::Max { max } => max.unwrap_or(Decimal::ZERO),
            AggregateState::Min { min } => min.unwrap_or(Decimal::ZERO),
            AggregateState::UniqueCount { keys } => Decimal::from(keys.len()),
            AggregateState::Latest { latest } => {
                latest.as_ref().map_or(Decimal::ZERO, |latest| latest.value)
            }
            AggregateState::TimeWeightedSum { unit, readings } => {
                integrate(readings.as_slice(), period, *unit)?
            }
        })
    }
}

fn timed(reading: &Reading<'_>, value: Decimal) -> TimedValue {
    TimedValue {
        timestamp: reading.timestamp,
        event_id: reading.event_id.clone(),
        value,
    }
}

/// ∫ gauge dt over the period, to the millisecond, in value·unit. `readings` are sorted.
fn integrate(
    readings: &[TimedValue],
    period: &Period,
    unit: TimeUnit,
) -> Result<Decimal, MeterError> {
    let (start, end) = (period.start(), period.end());
    let first_inside = readings.partition_point(|reading| reading.timestamp < start);
    let mut held = first_inside
        .checked_sub(1)
        .map(|carried| (start, readings[carried].value));
    let mut value_milliseconds = Decimal::ZERO;
    let mut accumulate = |since: DateTime<Utc>, until: DateTime<Utc>, value: Decimal| {
        let elapsed = Decimal::from((until - since).num_milliseconds());
        value
            .checked_mul(elapsed)
            .and_then(|area| value_milliseconds.checked_add(area))
            .map(|total| value_milliseconds = total)
            .ok_or(MeterError::Overflow)
    };
    for reading in readings[first_inside..]
        .iter()
        .take_while(|reading| reading.timestamp < end)
    {
        if let Some((since, value)) = held {
            accumulate(since, reading.timestamp, value)?;
        }
        held = Some((reading.timestamp, reading.value));
    }
    if let Some((since, value)) = held {
        accumulate(since, end, value)?;
    }
    value_milliseconds
        .checked_div(Decimal::from(unit.seconds() * 1000))
        .ok_or(MeterError::Overflow)
}
