//! Conversions between wire values and Rust values.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::money::{Currency, Money};
use tally_domain::period::Period;
use tally_proto::common;

use crate::error::InvoicingError;

/// A protobuf timestamp as an instant; `None` when absent or out of range.
pub fn instant(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// An optional timestamp field: absent is `None`, out of range names `field`.
pub fn optional_instant(
    timestamp: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, InvoicingError> {
    match timestamp {
        None => Ok(None),
        Some(value) => instant(Some(value))
            .map(Some)
            .ok_or_else(|| InvoicingError::invalid(field, "is not a valid timestamp")),
    }
}

/// An instant as a protobuf timestamp.
pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    tally_runtime::clock_service::chrono_to_timestamp(instant)
}

/// `Some(timestamp)` of an optional instant.
pub fn maybe_timestamp(instant: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    instant.map(timestamp)
}

/// `[start, end)` on the wire.
pub fn time_range(start: DateTime<Utc>, end: DateTime<Utc>) -> common::TimeRange {
    common::TimeRange {
        start_time: Some(timestamp(start)),
        end_time: Some(timestamp(end)),
    }
}

/// A period on the wire.
pub fn period_range(period: &Period) -> common::TimeRange {
    time_range(period.start(), period.end())
}

/// A decimal on the wire (its exact text).
pub fn decimal(value: Decimal) -> common::Decimal {
    common::Decimal {
        value: value.normalize().to_string(),
    }
}

/// An amount on the wire, with at least the currency's minor-unit digits
/// (`0.00`, not `0`); precise amounts keep all theirs.
pub fn money(amount: Decimal, currency: Currency) -> common::Money {
    let mut amount = amount;
    if amount.scale() < currency.minor_units() {
        amount.rescale(currency.minor_units());
    }
    common::Money {
        currency: currency.code().to_owned(),
        amount: amount.to_string(),
    }
}

/// A domain amount on the wire.
pub fn money_of(value: &Money) -> common::Money {
    money(value.amount(), value.currency())
}

/// Parses an exact decimal string (`-?[0-9]+(\.[0-9]+)?`), naming `field`.
pub fn parse_decimal(text: &str, field: &str) -> Result<Decimal, InvoicingError> {
    let well_formed = {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let mut parts = digits.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next();
        !whole.is_empty()
            && whole.bytes().all(|byte| byte.is_ascii_digit())
            && fraction
                .is_none_or(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    if !well_formed {
        return Err(InvoicingError::invalid(
            field,
            format!("{text:?} is not a decimal (-?[0-9]+(.[0-9]+)?)"),
        ));
    }
    Decimal::from_str(text)
        .map_err(|_| InvoicingError::invalid(field, format!("{text:?} is out of range")))
}

/// Parses wire money in `currency`, naming `field`.
pub fn parse_money(
    value: Option<&common::Money>,
    currency: Currency,
    field: &str,
) -> Result<Money, InvoicingError> {
    let value = value.ok_or_else(|| InvoicingError::invalid(field, "is required"))?;
    if value.currency != currency.code() {
        return Err(InvoicingError::invalid(
            format!("{field}.currency"),
            format!(
                "{:?} differs from the customer's currency {}",
                value.currency,
                currency.code()
            ),
        ));
    }
    let amount = parse_decimal(&value.amount, &format!("{field}.amount"))?;
    Ok(Money::new(amount, currency))
}

/// A stored currency code (written by us, so a bad one is internal).
pub fn stored_currency(code: &str) -> Result<Currency, InvoicingError> {
    Currency::from_code(code).map_err(InvoicingError::internal)
}
