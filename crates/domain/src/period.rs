//! Billing periods in UTC: intervals, anchors and the half-open periods between boundaries.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// What can go wrong with periods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// A period must end after it starts.
    #[error("period must end after it starts: {start} .. {end}")]
    EmptyPeriod {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
    /// The date is outside what the calendar arithmetic can represent.
    #[error("date out of range")]
    OutOfRange,
}

/// How often a subscription bills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingInterval {
    /// Every 24 hours from the anchor.
    Day,
    /// Every 7 days from the anchor.
    Week,
    /// Every calendar month, on the anchor's day (clamped to the month's end).
    Month,
    /// Every 3 calendar months.
    Quarter,
    /// Every 12 calendar months (29 February clamps to the 28th in common years).
    Year,
}

impl BillingInterval {
    fn months(self) -> Option<u32> {
        match self {
            BillingInterval::Day | BillingInterval::Week => None,
            BillingInterval::Month => Some(1),
            BillingInterval::Quarter => Some(3),
            BillingInterval::Year => Some(12),
        }
    }

    fn fixed_length(self) -> Option<TimeDelta> {
        match self {
            BillingInterval::Day => Some(Duration::days(1)),
            BillingInterval::Week => Some(Duration::days(7)),
            BillingInterval::Month | BillingInterval::Quarter | BillingInterval::Year => None,
        }
    }
}

/// A half-open span of time `[start, end)`, never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawPeriod", into = "RawPeriod")]
pub struct Period {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct RawPeriod {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TryFrom<RawPeriod> for Period {
    type Error = PeriodError;

    fn try_from(raw: RawPeriod) -> Result<Self, Self::Error> {
        Period::new(raw.start, raw.end)
    }
}

impl From<Period> for RawPeriod {
    fn from(period: Period) -> RawPeriod {
        RawPeriod {
            start: period.start,
            end: period.end,
        }
    }
}

impl Period {
    /// `[start, end)`; `end` must be after `start`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Period, PeriodError> {
        if end <= start {
            return Err(PeriodError::EmptyPeriod { start, end });
        }
        Ok(Period { start, end })
    }

    /// The first instant inside.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The first instant after.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Whether `instant` is inside (`start ≤ instant < end`).
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.start <= instant && instant < self.end
    }

    /// The length.
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }
}

impl fmt::Display for Period {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} .. {}",
            self.start.to_rfc3339(),
            self.end.to_rfc3339()
        )
    }
}

/// The boundaries of a subscription's periods: the anchor plus whole intervals.
///
/// Month-based boundaries are computed from the anchor each time, never from the previous
/// boundary, so an anchor on the 29th–31st clamps to the end of shorter months and comes
/// back afterwards. The time of day of the anchor is kept.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use tally_domain::period::{BillingCycle, BillingInterval};
///
/// let anchor = Utc.with_ymd_and_hms(2024, 1, 31, 9, 0, 0).unwrap();
/// let cycle = BillingCycle::new(anchor, BillingInterval::Month);
/// let day = |n| cycle.boundary(n).unwrap().format("%Y-%m-%d %H:%M").to_string();
/// assert_eq!(day(1), "2024-02-29 09:00"); // leap year: clamped to the 29th
/// assert_eq!(day(2), "2024-03-31 09:00"); // back on the anchor day
/// assert_eq!(day(3), "2024-04-30 09:00");
/// assert_eq!(day(13), "2025-02-28 09:00");
///
/// let period = cycle.period_containing(Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()).unwrap();
/// assert_eq!(period.start(), cycle.boundary(1).unwrap());
/// assert_eq!(period.end(), cycle.boundary(2).unwrap());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingCycle {
    anchor: DateTime<Utc>,
    interval: BillingInterval,
}

impl BillingCycle {
    /// A cycle with boundaries at `anchor + n × interval`.
    pub fn new(anchor: DateTime<Utc>, interval: BillingInterval) -> BillingCycle {
        BillingCycle { anchor, interval }
    }

    /// The anchor (boundary 0).
    pub fn anchor(&self) -> DateTime<Utc> {
        self.anchor
    }

    /// The interval.
    pub fn interval(&self) -> BillingInterval {
        self.interval
    }

    /// Boundary `n`: the anchor moved by `n` intervals (negative `n` goes back).
    pub fn boundary(&self, n: i64) -> Result<DateTime<Utc>, PeriodError> {
        if let Some(length) = self.interval.fixed_length() {
            let offset = length
                .checked_mul(i32::try_from(n).map_err(|_| PeriodError::OutOfRange)?)
                .ok_or(PeriodError::OutOfRange)?;
            return self
                .anchor
                .checked_add_signed(offset)
                .ok_or(PeriodError::OutOfRange);
        }
        let interval_months = i64::from(self.interval.months().unwrap_or(1));
        let months = n
            .checked_mul(interval_months)
            .ok_or(PeriodError::OutOfRange)?;
        let magnitude =
            Months::new(u32::try_from(months.unsigned_abs()).map_err(|_| PeriodError::OutOfRange)?);
        // chrono clamps the day to the end of the target month, which is the rule we want.
        if months >= 0 {
            self.anchor.checked_add_months(magnitude)
        } else {
            self.anchor.checked_sub_months(magnitude)
        }
        .ok_or(PeriodError::OutOfRange)
    }

    /// Period `n`: `[boundary(n), boundary(n + 1))`.
    pub fn period(&self, n: i64) -> Result<Period, PeriodError> {
        Period::new(self.boundary(n)?, self.boundary(n + 1)?)
    }

    /// The index of the period containing `instant`.
    pub fn index_of(&self, instant: DateTime<Utc>) -> Result<i64, PeriodError> {
        let mut n = self.estimate_index(instant);
        while self.boundary(n)? > instant {
            n -= 1;
        }
        while self.boundary(n + 1)? <= instant {
            n += 1;
        }
        Ok(n)
    }

    /// The period containing `instant`.
    pub fn period_containing(&self, instant: DateTime<Utc>) -> Result<Period, PeriodError> {
        self.period(self.index_of(instant)?)
    }

    fn estimate_index(&self, instant: DateTime<Utc>) -> i64 {
        match (self.interval.fixed_length(), self.interval.months()) {
            (Some(length), _) => (instant - self.anchor)
                .num_seconds()
                .div_euclid(length.num_seconds().max(1)),
            (None, months) => {
                let elapsed = i64::from(instant.year() - self.anchor.year()) * 12
                    + i64::from(instant.month())
                    - i64::from(self.anchor.month());
                elapsed.div_euclid(i64::from(months.unwrap_or(1)))
            }
        }
    }
}

/// Days since 1970-01-01 of an instant's UTC date.
pub(crate) fn utc_day_number(instant: DateTime<Utc>) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (instant.date_naive() - epoch).num_days()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn quarter_and_year_boundaries() {
        let quarterly = BillingCycle::new(at(2023, 11, 30), BillingInterval::Quarter);
        assert_eq!(quarterly.boundary(1).unwrap(), at(2024, 2, 29));
        assert_eq!(quarterly.boundary(2).unwrap(), at(2024, 5, 30));
        assert_eq!(quarterly.boundary(-1).unwrap(), at(2023, 8, 30));
        let yearly = BillingCycle::new(at(2024, 2, 29), BillingInterval::Year);
        assert_eq!(yearly.boundary(1).unwrap(), at(2025, 2, 28));
        assert_eq!(yearly.boundary(4).unwrap(), at(2028, 2, 29));
    }

    #[test]
    fn days_and_weeks_are_fixed_lengths() {
        let weekly = BillingCycle::new(at(2024, 12, 30), BillingInterval::Week);
        assert_eq!(weekly.boundary(1).unwrap(), at(2025, 1, 6));
        let daily = BillingCycle::new(at(2024, 2, 28), BillingInterval::Day);
        assert_eq!(
            daily.period(1).unwrap(),
            Period::new(at(2024, 2, 29), at(2024, 3, 1)).unwrap()
        );
    }

    #[test]
    fn period_containing_handles_instants_before_the_anchor_and_on_boundaries() {
        let monthly = BillingCycle::new(at(2024, 1, 31), BillingInterval::Month);
        assert_eq!(monthly.index_of(at(2024, 1, 31)).unwrap(), 0);
        assert_eq!(monthly.index_of(at(2024, 2, 29)).unwrap(), 1);
        assert_eq!(monthly.index_of(at(2024, 2, 28)).unwrap(), 0);
        assert_eq!(monthly.index_of(at(2023, 12, 31)).unwrap(), -1);
        assert_eq!(monthly.index_of(at(2023, 12, 30)).unwrap(), -2);
    }

    #[test]
    fn periods_are_never_empty() {
        assert!(Period::new(at(2024, 1, 1), at(2024, 1, 1)).is_err());
        let json = r#"{"start":"2024-01-02T00:00:00Z","end":"2024-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<Period>(json).is_err());
    }
}
