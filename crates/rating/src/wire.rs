//! Small conversions between wire values and Rust values shared by the usage
//! side of rating (the catalog has its own checked readers).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::money::Currency;
use tally_proto::common;

/// A protobuf timestamp as an instant; `None` when absent or out of range.
pub fn instant(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// An instant as a protobuf timestamp.
pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    tally_runtime::clock_service::chrono_to_timestamp(instant)
}

/// `[start, end)` on the wire.
pub fn time_range(start: DateTime<Utc>, end: DateTime<Utc>) -> common::TimeRange {
    common::TimeRange {
        start_time: Some(timestamp(start)),
        end_time: Some(timestamp(end)),
    }
}

/// A decimal on the wire (its exact text, scale kept).
pub fn decimal(value: Decimal) -> common::Decimal {
    common::Decimal {
        value: value.to_string(),
    }
}

/// An amount on the wire.
pub fn money(amount: Decimal, currency: Currency) -> common::Money {
    common::Money {
        currency: currency.code().to_owned(),
        amount: amount.to_string(),
    }
}
