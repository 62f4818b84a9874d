//! Conversions between wire values and domain values.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::money::{Currency, Money};
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

/// An amount on the wire.
pub fn money(amount: &Money) -> common::Money {
    common::Money {
        currency: amount.currency().code().to_owned(),
        amount: amount.amount().to_string(),
    }
}

/// Why a wire amount is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyFieldError {
    /// Absent.
    #[error("required")]
    Missing,
    /// Not an ISO 4217 currency.
    #[error("unknown currency `{0}`")]
    Currency(String),
    /// Not a decimal.
    #[error("`{0}` is not a decimal")]
    Amount(String),
}

/// A wire amount as domain money.
pub fn parse_money(value: Option<&common::Money>) -> Result<Money, MoneyFieldError> {
    let value = value.ok_or(MoneyFieldError::Missing)?;
    let currency = Currency::from_code(&value.currency)
        .map_err(|_| MoneyFieldError::Currency(value.currency.clone()))?;
    let amount: Decimal = value
        .amount
        .parse()
        .map_err(|_| MoneyFieldError::Amount(value.amount.clone()))?;
    Ok(Money::new(amount, currency))
}
