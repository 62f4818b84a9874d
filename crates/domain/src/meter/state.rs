//! Incremental aggregate state: absorbs readings in any order, merges, answers a value.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Aggregation, MeterError, Reading, TimeUnit};
use crate::exact;
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

    /// Adds one reading. Counts and sums are exact: a reading they cannot absorb without
    /// overflowing or rounding is refused with [`MeterError::Overflow`], and the state is
    /// then unchanged.
    pub fn absorb(&mut self, reading: &Reading<'_>) -> Result<(), MeterError> {
        let name = self.name();
        match self {
            AggregateState::Count { count } => {
                reading.measure.one(name)?;
                *count = count.checked_add(1).ok_or(MeterError::Overflow)?;
            }
            AggregateState::Sum { sum } => {
                let value = reading.measure.number(name)?;
                *sum = exact::add(*sum, value).ok_or(MeterError::Overflow)?;
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

    /// Whether [`merge`](AggregateState::merge) of `other` would succeed, without changing
    /// or copying anything (a count or sum is added on the side; keys and readings are not
    /// copied), so a caller can check every state an event feeds before changing any.
    ///
    /// ```
    /// use rust_decimal::Decimal;
    /// use tally_domain::meter::{AggregateState, MeterError};
    ///
    /// let total = AggregateState::Sum { sum: Decimal::from(1000) };
    /// let huge = AggregateState::Sum { sum: Decimal::MAX };
    /// assert_eq!(total.check_merge(&huge), Err(MeterError::Overflow));
    /// assert_eq!(total, AggregateState::Sum { sum: Decimal::from(1000) });
    /// ```
    pub fn check_merge(&self, other: &AggregateState) -> Result<(), MeterError> {
        let mismatch = || MeterError::MergeMismatch {
            this: self.name(),
            other: other.name(),
        };
        match (self, other) {
            (AggregateState::Count { count }, AggregateState::Count { count: more }) => count
                .checked_add(*more)
                .map(drop)
                .ok_or(MeterError::Overflow),
            (AggregateState::Sum { sum }, AggregateState::Sum { sum: more }) => {
                exact::add(*sum, *more)
                    .map(drop)
                    .ok_or(MeterError::Overflow)
            }
            (
                AggregateState::TimeWeightedSum { unit, .. },
                AggregateState::TimeWeightedSum { unit: theirs, .. },
            ) => {
                if unit == theirs {
                    Ok(())
                } else {
                    Err(mismatch())
                }
            }
            (AggregateState::Max { .. }, AggregateState::Max { .. })
            | (AggregateState::Min { .. }, AggregateState::Min { .. })
            | (AggregateState::UniqueCount { .. }, AggregateState::UniqueCount { .. })
            | (AggregateState::Latest { .. }, AggregateState::Latest { .. }) => Ok(()),
            (
                AggregateState::Count { .. }
                | AggregateState::Sum { .. }
                | AggregateState::Max { .. }
                | AggregateState::Min { .. }
                | AggregateState::UniqueCount { .. }
                | AggregateState::Latest { .. }
                | AggregateState::TimeWeightedSum { .. },
                _,
            ) => Err(mismatch()),
        }
    }

    /// Folds `other` (the same aggregation over other readings) into this state, exactly:
    /// on any error (a mismatch, or a count or sum that would overflow or be rounded) the
    /// state is unchanged.
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
                *sum = exact::add(*sum, *more).ok_or(MeterError::Overflow)?;
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

/// The decimal places of a time-weighted sum: the integral is a quotient
/// (value·milliseconds ÷ milliseconds per unit) that rarely terminates, so it is rounded
/// half-even to a millionth of a value·unit (e.g. 0.000001 GB·h). The rounding is named
/// and done once, exactly, so the quantity is the same for every reader and prices exactly.
pub const TIME_WEIGHTED_SCALE: u32 = 6;

/// ∫ gauge dt over the period, to the millisecond, in value·unit, rounded to
/// [`TIME_WEIGHTED_SCALE`] places. `readings` are sorted.
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
        exact::mul(value, elapsed)
            .and_then(|area| exact::add(value_milliseconds, area))
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
    divide_half_even(
        value_milliseconds,
        i128::from(unit.seconds()) * 1000,
        TIME_WEIGHTED_SCALE,
    )
}

/// `dividend ÷ divisor` rounded half-even to `places` decimal places, computed exactly in
/// integers (a `Decimal` division would round first at its 28th digit, then again here).
fn divide_half_even(dividend: Decimal, divisor: i128, places: u32) -> Result<Decimal, MeterError> {
    let ten = |power: u32| 10_i128.checked_pow(power).ok_or(MeterError::Overflow);
    // dividend = mantissa / 10^scale, so the quotient × 10^places is
    // mantissa × 10^places / (10^scale × divisor).
    let numerator = dividend
        .mantissa()
        .checked_mul(ten(places)?)
        .ok_or(MeterError::Overflow)?;
    let denominator = ten(dividend.scale())?
        .checked_mul(divisor)
        .ok_or(MeterError::Overflow)?;
    let floor = numerator.div_euclid(denominator);
    let twice_remainder = numerator.rem_euclid(denominator) * 2;
    let rounded =
        if twice_remainder > denominator || (twice_remainder == denominator && floor % 2 != 0) {
            floor + 1
        } else {
            floor
        };
    Decimal::try_from_i128_with_scale(rounded, places)
        .map(|quotient| quotient.normalize())
        .map_err(|_| MeterError::Overflow)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn time_weighted_quotients_round_half_even_once() {
        // One second at 1 GB, in hours: 1/3600 = 0.000277…
        assert_eq!(
            divide_half_even(dec!(1000), 3_600_000, 6),
            Ok(dec!(0.000278))
        );
        assert_eq!(
            divide_half_even(dec!(-1000), 3_600_000, 6),
            Ok(dec!(-0.000278))
        );
        // Ties go to the even neighbour.
        assert_eq!(divide_half_even(dec!(0.0000025), 1, 6), Ok(dec!(0.000002)));
        assert_eq!(divide_half_even(dec!(0.0000035), 1, 6), Ok(dec!(0.000004)));
        assert_eq!(
            divide_half_even(dec!(-0.0000025), 1, 6),
            Ok(dec!(-0.000002))
        );
        assert_eq!(divide_half_even(dec!(780), 1, 6), Ok(dec!(780.000000)));
        assert_eq!(
            divide_half_even(Decimal::MAX, 1, 6),
            Err(MeterError::Overflow)
        );
    }

    #[test]
    fn sums_refuse_what_they_cannot_hold_exactly_and_stay_unchanged() {
        let mut state = AggregateState::Sum {
            sum: dec!(-5000000),
        };
        let tiny = AggregateState::Sum {
            sum: Decimal::new(1, 28),
        };
        assert_eq!(state.merge(&tiny), Err(MeterError::Overflow));
        assert_eq!(
            state,
            AggregateState::Sum {
                sum: dec!(-5000000)
            }
        );
        let mut full = AggregateState::Sum { sum: Decimal::MAX };
        assert_eq!(
            full.merge(&AggregateState::Sum { sum: dec!(1) }),
            Err(MeterError::Overflow)
        );
        assert_eq!(full, AggregateState::Sum { sum: Decimal::MAX });
    }
}
