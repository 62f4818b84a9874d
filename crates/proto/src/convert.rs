//! The one conversion between `tally.common.v1` wire values and Rust and
//! domain values: decimals, money, timestamps, time ranges and prefixed ids.
//!
//! Every service reads these wire values here, so one input gets one verdict
//! (and one rule name) whichever service it is sent to. Readers return a
//! [`Violation`] naming the field, the stable rule and what is wrong; each
//! service turns it into its own error (and, through the runtime's error
//! table, into a `Violations` detail on INVALID_ARGUMENT). Writers format
//! what a service sends.
//!
//! Submodules read the larger shapes the same way: [`catalog`] (plan versions,
//! charges and prices, for services that read the catalog without owning it)
//! and [`terms`] (a subscription's contract terms).

pub mod catalog;
pub mod terms;

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::ids::{IdError, PrefixedId};
use tally_domain::money::{Currency, Money};
use tally_domain::period::Period;

use crate::common;

/// The stable rule names these readers report (`FieldViolation.rule`).
pub mod rule {
    /// A value is missing.
    pub const REQUIRED: &str = "required";
    /// Not an exact decimal string of the `tally.common.v1.Decimal` grammar.
    pub const INVALID_DECIMAL: &str = "invalid_decimal";
    /// Not an ISO 4217 currency code.
    pub const UNKNOWN_CURRENCY: &str = "unknown_currency";
    /// An amount in another currency than the one the request is in.
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    /// A timestamp with negative nanos or outside the representable range.
    pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";
    /// A time range whose end is not after its start.
    pub const INVALID_RANGE: &str = "invalid_range";
    /// An id without its type's prefix (`inv_…` where an invoice id is expected), or with
    /// nothing after it.
    pub const INVALID_PREFIX: &str = "invalid_prefix";
    /// An id or code longer than its limit.
    pub const MAX_LENGTH: &str = "max_length";
    /// An id with a character outside its alphabet.
    pub const INVALID_CHARACTERS: &str = "invalid_characters";
    /// A value its type refuses: an enum value that is not one of its own (or is
    /// unspecified where a value is needed), a price the domain cannot build.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// Contract terms that break a rule of the domain's terms (against each other or
    /// against the plan version): the field is the term's path.
    pub const INVALID_TERMS: &str = "invalid_terms";
}

/// One broken rule on one field, as a reader found it. The description does
/// not repeat the field: shown together they read `field: description`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field, e.g. `amount.amount`.
    pub field: String,
    /// One of [`rule`].
    pub rule: &'static str,
    /// What is wrong, with the offending value.
    pub description: String,
}

/// A violation built by this module's readers.
pub(crate) fn violation(field: &str, rule: &'static str, description: String) -> Violation {
    Violation::new(field, rule, description)
}

impl Violation {
    fn new(field: &str, rule: &'static str, description: String) -> Self {
        Self {
            field: field.to_owned(),
            rule,
            description,
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> common::FieldViolation {
        common::FieldViolation {
            field: self.field.clone(),
            rule: self.rule.to_owned(),
            description: self.description.clone(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for Violation {}

/// Most significant digits a decimal string may have (what `rust_decimal`
/// holds exactly), and most digits after its point.
pub const MAX_DECIMAL_DIGITS: usize = 28;

/// Why a string is not a `tally.common.v1.Decimal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not `-?[0-9]+(\.[0-9]+)?` (a sign other than a leading `-`, an
    /// exponent, grouping, whitespace, a bare or leading point, empty).
    #[error("is not an exact decimal string (-?[0-9]+(.[0-9]+)?)")]
    Syntax,
    /// More than 28 significant digits.
    #[error("has {0} significant digits, at most {MAX_DECIMAL_DIGITS} are allowed")]
    TooManyDigits(usize),
    /// More than 28 digits after the point.
    #[error("has {0} digits after the point, at most {MAX_DECIMAL_DIGITS} are allowed")]
    TooManyPlaces(usize),
}

/// Reads an exact decimal string, the grammar `common.proto` documents for
/// `tally.common.v1.Decimal` and `Money.amount`:
///
/// - `-?[0-9]+(\.[0-9]+)?` in ASCII, nothing around it: no `+`, exponent,
///   grouping (`_`, `,`), whitespace, bare point (`1.`, `.5`), or empty string;
/// - at most 28 significant digits, counted from the first non-zero digit to
///   the last digit written (leading zeros do not count, trailing zeros do);
/// - at most 28 digits after the point.
///
/// Leading zeros are allowed (`007` is 7) and `-0` is zero. The value keeps
/// the scale it was written with (`1.50` has scale 2); nothing is rounded.
///
/// ```
/// use tally_proto::convert::{decimal, DecimalError};
/// assert_eq!(decimal("-0.0000021").map(|value| value.to_string()), Ok("-0.0000021".into()));
/// assert_eq!(decimal("+1"), Err(DecimalError::Syntax));
/// ```
pub fn decimal(text: &str) -> Result<Decimal, DecimalError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return Err(DecimalError::Syntax);
    }
    let significant = unsigned
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|digit| *digit == b'0')
        .count();
    if significant > MAX_DECIMAL_DIGITS {
        return Err(DecimalError::TooManyDigits(significant));
    }
    let places = fraction.map_or(0, str::len);
    if places > MAX_DECIMAL_DIGITS {
        return Err(DecimalError::TooManyPlaces(places));
    }
    // Within both limits the value always fits exactly: at most 28 digits
    // remain once leading zeros are dropped, and the scale is at most 28.
    Decimal::from_str_exact(text).map_err(|_| DecimalError::TooManyDigits(significant))
}

/// Inputs [`decimal`] refuses, one of each kind (sign, grouping, exponent,
/// bare point, whitespace, empty, 29 significant digits, 29 places): every
/// service's tests send them to check it answers `invalid_decimal` for each.
pub const REFUSED_DECIMAL_EXAMPLES: &[&str] = &[
    "+1",
    "1_0",
    "+1_000.00",
    "1e3",
    "1.",
    ".5",
    " 1",
    "",
    "12345678901234567890123456789",
    "0.00000000000000000000000000001",
];

/// [`decimal`] for `field`: the violation is `invalid_decimal`.
pub fn decimal_field(text: &str, field: &str) -> Result<Decimal, Violation> {
    decimal(text)
        .map_err(|error| Violation::new(field, rule::INVALID_DECIMAL, format!("{text:?} {error}")))
}

/// A required `Decimal` message (absent is `required`).
pub fn required_decimal(
    value: Option<&common::Decimal>,
    field: &str,
) -> Result<Decimal, Violation> {
    let value = value.ok_or_else(|| required(field))?;
    decimal_field(&value.value, field)
}

fn required(field: &str) -> Violation {
    Violation::new(field, rule::REQUIRED, "is required".to_owned())
}

/// A required amount of money: the currency must be a known ISO 4217 code
/// (`{field}.currency`), the amount a [`decimal`] (`{field}.amount`).
pub fn money(value: Option<&common::Money>, field: &str) -> Result<Money, Violation> {
    let value = value.ok_or_else(|| required(field))?;
    let currency = Currency::from_code(&value.currency).map_err(|_| {
        let field = format!("{field}.currency");
        Violation::new(
            &field,
            rule::UNKNOWN_CURRENCY,
            format!("{:?} is not an ISO 4217 currency code", value.currency),
        )
    })?;
    let amount = decimal_field(&value.amount, &format!("{field}.amount"))?;
    Ok(Money::new(amount, currency))
}

/// A required amount that must be in `currency` (another code is
/// `currency_mismatch` on `{field}.currency`).
pub fn money_in(
    value: Option<&common::Money>,
    currency: Currency,
    field: &str,
) -> Result<Money, Violation> {
    let value = value.ok_or_else(|| required(field))?;
    if value.currency != currency.code() {
        let field = format!("{field}.currency");
        return Err(Violation::new(
            &field,
            rule::CURRENCY_MISMATCH,
            format!(
                "{:?} differs from the expected currency {}",
                value.currency,
                currency.code()
            ),
        ));
    }
    let amount = decimal_field(&value.amount, &format!("{field}.amount"))?;
    Ok(Money::new(amount, currency))
}

/// A protobuf timestamp as an instant; `None` when absent or out of range.
pub fn instant(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// A required timestamp for `field`: absent is `required`, negative nanos or
/// out of range is `invalid_timestamp`.
pub fn required_instant(
    timestamp: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, Violation> {
    let timestamp = timestamp.ok_or_else(|| required(field))?;
    optional_instant(Some(timestamp), field)?.ok_or_else(|| required(field))
}

/// An optional timestamp for `field`: absent is `None`, negative nanos or out
/// of range is `invalid_timestamp`.
pub fn optional_instant(
    timestamp: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, Violation> {
    let Some(value) = timestamp else {
        return Ok(None);
    };
    if value.nanos < 0 {
        return Err(Violation::new(
            field,
            rule::INVALID_TIMESTAMP,
            "nanos must not be negative".to_owned(),
        ));
    }
    instant(Some(value))
        .map(Some)
        .ok_or_else(|| Violation::new(field, rule::INVALID_TIMESTAMP, "is out of range".to_owned()))
}

/// An instant as a protobuf timestamp.
pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: i32::try_from(instant.timestamp_subsec_nanos()).unwrap_or(0),
    }
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

/// A required, bounded `[start, end)` range as a period: absent is
/// `required` on `field`; each end is a [`required_instant`]
/// (`{field}.start_time`, `{field}.end_time`); an end not after the start is
/// `invalid_range` on `{field}.end_time`.
pub fn required_period(
    range: Option<&common::TimeRange>,
    field: &str,
) -> Result<Period, Violation> {
    let range = range.ok_or_else(|| required(field))?;
    let start = required_instant(range.start_time.as_ref(), &format!("{field}.start_time"))?;
    let end_field = format!("{field}.end_time");
    let end = required_instant(range.end_time.as_ref(), &end_field)?;
    Period::new(start, end).map_err(|_| {
        Violation::new(
            &end_field,
            rule::INVALID_RANGE,
            format!("must be after {field}.start_time"),
        )
    })
}

/// A period on the wire.
pub fn period_range(period: &Period) -> common::TimeRange {
    time_range(period.start(), period.end())
}

/// A decimal on the wire, its exact text with the scale it has.
pub fn decimal_value(value: Decimal) -> common::Decimal {
    common::Decimal {
        value: value.to_string(),
    }
}

/// Reads a required id of type `T` (e.g. `CustomerId`): its prefix, length and characters.
/// The rule is `required` when empty, `invalid_prefix` for another type's id.
///
/// ```
/// use tally_domain::ids::InvoiceId;
/// use tally_proto::convert::{id, rule};
///
/// assert_eq!(id::<InvoiceId>("inv_42", "invoice_id").unwrap().as_str(), "inv_42");
/// assert_eq!(id::<InvoiceId>("cus_42", "invoice_id").unwrap_err().rule, rule::INVALID_PREFIX);
/// assert_eq!(id::<InvoiceId>("", "invoice_id").unwrap_err().rule, rule::REQUIRED);
/// ```
pub fn id<T>(text: &str, field: &str) -> Result<T, Violation>
where
    T: PrefixedId + std::str::FromStr<Err = IdError>,
{
    text.parse::<T>().map_err(|error| {
        Violation::new(
            field,
            id_rule(&error),
            format!("must be an id {}…, not {text:?} ({error})", T::PREFIX),
        )
    })
}

fn id_rule(error: &IdError) -> &'static str {
    match error {
        IdError::Empty { .. } => rule::REQUIRED,
        IdError::WrongPrefix { .. } | IdError::EmptyBody { .. } => rule::INVALID_PREFIX,
        IdError::TooLong { .. } => rule::MAX_LENGTH,
        IdError::InvalidCharacter { .. } => rule::INVALID_CHARACTERS,
    }
}

/// Reads a code (`ChargeCode`, `MeterCode`) with its parser; the rules are [`id`]'s.
pub fn code<T>(
    text: &str,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, Violation> {
    parse(text).map_err(|error| {
        Violation::new(
            field,
            id_rule(&error),
            format!("{text:?} is not a valid code ({error})"),
        )
    })
}

/// An optional id: `None` when the field is empty, else as [`id`].
pub fn optional_id<T>(text: &str, field: &str) -> Result<Option<T>, Violation>
where
    T: PrefixedId + std::str::FromStr<Err = IdError>,
{
    if text.is_empty() {
        return Ok(None);
    }
    id(text, field).map(Some)
}

/// An amount on the wire, its exact text with the scale it has.
pub fn money_value(amount: Decimal, currency: Currency) -> common::Money {
    common::Money {
        currency: currency.code().to_owned(),
        amount: amount.to_string(),
    }
}
