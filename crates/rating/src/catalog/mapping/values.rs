//! Violations and the checked readers of wire values (text, codes, decimals,
//! money, enums) every catalog mapping is built from.
//!
//! Readers return `None` when the value is unusable; they have then recorded
//! why in the [`Violations`] they were given. Optional values read as
//! `Option<Option<T>>`: the outer `None` means "present but invalid".

use std::fmt;

use rust_decimal::Decimal;
use tally_domain::bounds::{self, BoundError};
use tally_domain::ids::IdError;
use tally_proto::common;

/// The stable name of a broken rule, as clients see it in `FieldViolation.rule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A value is missing.
    Required,
    /// Text longer than allowed.
    MaxLength,
    /// A map or list with too many entries.
    MaxEntries,
    /// A character outside the allowed set.
    InvalidCharacters,
    /// Text that does not have the required shape.
    InvalidFormat,
    /// An id without its type's prefix (or with nothing after it): the rule
    /// `tally_proto::convert::id` gives in every service.
    InvalidPrefix,
    /// An enum number this server does not know.
    UnknownValue,
    /// Not an exact decimal string.
    InvalidDecimal,
    /// Not an ISO 4217 currency.
    UnknownCurrency,
    /// An amount in another currency than the plan version's.
    CurrencyMismatch,
    /// A negative price, amount or quantity.
    MustNotBeNegative,
    /// Zero or negative where only positive values make sense.
    MustBePositive,
    /// A value the domain cannot represent yet.
    Unsupported,
    /// The same key, name or combination twice.
    Duplicate,
    /// A value that must be empty in this context.
    NotAllowed,
    /// A usage charge naming a meter that does not exist.
    UnknownMeter,
    /// A usage charge billed in advance.
    UsageChargeInArrears,
    /// A recurring charge with a model not priced on one quantity.
    NotAllowedForRecurring,
    /// Free units on a model that is not priced on one quantity.
    NotApplicable,
    /// A minimum above its maximum.
    MinimumAboveMaximum,
    /// A tier bound not above the previous one.
    TiersNotAscending,
    /// An unbounded tier before the last one.
    OpenEndedTierNotLast,
    /// A bounded last tier.
    LastTierNotOpenEnded,
    /// A percentage outside 0–100.
    RateOutOfRange,
    /// A percentage price on a meter that does not sum.
    RequiresSumMeter,
    /// Matrix dimensions that are not the meter's group-by properties.
    DimensionsMismatch,
    /// A matrix cell without a value for one of the dimensions.
    MissingDimension,
    /// A matrix cell with a value for something that is not a dimension.
    UnknownDimension,
    /// A matrix with neither cells nor a default price.
    EmptyMatrix,
    /// A page token this service did not issue for this listing.
    InvalidPageToken,
    /// A price, amount or quantity above its bound (`tally_domain::bounds`).
    MaxValue,
    /// A price, amount or quantity with more decimal places than its bound allows.
    MaxDecimalPlaces,
}

impl Rule {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::MaxLength => "max_length",
            Rule::MaxEntries => "max_entries",
            Rule::InvalidCharacters => "invalid_characters",
            Rule::InvalidFormat => "invalid_format",
            Rule::InvalidPrefix => tally_proto::convert::rule::INVALID_PREFIX,
            Rule::UnknownValue => "unknown_value",
            Rule::InvalidDecimal => "invalid_decimal",
            Rule::UnknownCurrency => "unknown_currency",
            Rule::CurrencyMismatch => "currency_mismatch",
            Rule::MustNotBeNegative => "must_not_be_negative",
            Rule::MustBePositive => "must_be_positive",
            Rule::Unsupported => "unsupported",
            Rule::Duplicate => "duplicate",
            Rule::NotAllowed => "not_allowed",
            Rule::UnknownMeter => "unknown_meter",
            Rule::UsageChargeInArrears => "usage_charge_in_arrears",
            Rule::NotAllowedForRecurring => "not_allowed_for_recurring",
            Rule::NotApplicable => "not_applicable",
            Rule::MinimumAboveMaximum => "minimum_above_maximum",
            Rule::TiersNotAscending => "tiers_not_ascending",
            Rule::OpenEndedTierNotLast => "open_ended_tier_not_last",
            Rule::LastTierNotOpenEnded => "last_tier_not_open_ended",
            Rule::RateOutOfRange => "rate_out_of_range",
            Rule::RequiresSumMeter => "requires_sum_meter",
            Rule::DimensionsMismatch => "dimensions_mismatch",
            Rule::MissingDimension => "missing_dimension",
            Rule::UnknownDimension => "unknown_dimension",
            Rule::EmptyMatrix => "empty_matrix",
            Rule::InvalidPageToken => "invalid_page_token",
            Rule::MaxValue => "max_value",
            Rule::MaxDecimalPlaces => "max_decimal_places",
        }
    }

    /// Whether the input cannot even be stored as a draft: the value is not
    /// a decimal or not a known enum number. Everything else a draft may
    /// still break until it is validated or published.
    pub fn is_structural(self) -> bool {
        matches!(self, Rule::InvalidDecimal | Rule::UnknownValue)
    }

    /// The rule an id or code parser broke.
    pub fn of_id_error(error: &IdError) -> Rule {
        match error {
            IdError::Empty { .. } => Rule::Required,
            IdError::WrongPrefix { .. } | IdError::EmptyBody { .. } => Rule::InvalidPrefix,
            IdError::TooLong { .. } => Rule::MaxLength,
            IdError::InvalidCharacter { .. } => Rule::InvalidCharacters,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One broken rule on one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted, indexed path from the request (or version) root.
    pub field: String,
    /// The rule.
    pub rule: Rule,
    /// What is wrong, with the offending and the allowed values.
    pub description: String,
}

/// Every violation found, in the order the fields were walked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, rule: Rule, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            rule,
            description: description.into(),
        });
    }

    /// Records that `field` is missing (`hint` lists what it may be, or is
    /// empty) and answers `None`, for readers that give up on a missing value.
    pub fn missing<T>(&mut self, field: &str, hint: &str) -> Option<T> {
        let description = if hint.is_empty() {
            format!("{field} is required")
        } else {
            format!("{field} is required ({hint})")
        };
        self.add(field, Rule::Required, description);
        None
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    /// Only the violations that make the input unstorable (see [`Rule::is_structural`]).
    pub fn structural(self) -> Violations {
        Violations(
            self.0
                .into_iter()
                .filter(|violation| violation.rule.is_structural())
                .collect(),
        )
    }

    /// `Ok(value)` when nothing was found, else these violations.
    pub fn into_result<T>(self, value: Option<T>) -> Result<T, Violations> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => Err(self),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> Vec<common::FieldViolation> {
        self.0
            .iter()
            .map(|violation| common::FieldViolation {
                field: violation.field.clone(),
                rule: violation.rule.as_str().to_owned(),
                description: violation.description.clone(),
            })
            .collect()
    }

    /// `(field, rule)` of each violation, for assertions.
    #[cfg(test)]
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|violation| (violation.field.as_str(), violation.rule.as_str()))
            .collect()
    }

    /// One line naming every field and rule, for status messages.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|violation| format!("{}: {}", violation.field, violation.description))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Longest display name of a meter, plan or charge.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// Checks a display name (required) and description (optional) under `prefix`.
pub fn name_and_description(name: &str, description: &str, violations: &mut Violations) {
    required_text(name, "name", MAX_NAME_CHARS, violations);
    max_length(
        description,
        "description",
        MAX_DESCRIPTION_CHARS,
        violations,
    );
}

/// Checks that `value` is present and at most `max_chars` characters.
pub fn required_text(value: &str, field: &str, max_chars: usize, violations: &mut Violations) {
    if value.trim().is_empty() {
        violations.missing::<()>(field, "");
    } else {
        max_length(value, field, max_chars, violations);
    }
}

/// Checks that `value` is at most `max_chars` characters.
pub fn max_length(value: &str, field: &str, max_chars: usize, violations: &mut Violations) {
    let length = value.chars().count();
    if length > max_chars {
        violations.add(
            field,
            Rule::MaxLength,
            format!("{field} has {length} characters, at most {max_chars} are allowed"),
        );
    }
}

/// Runs an id or code parser and records its complaint; `None` if it failed.
pub fn code<T>(
    value: &str,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
    violations: &mut Violations,
) -> Option<T> {
    match parse(value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            violations.add(
                field,
                Rule::of_id_error(&error),
                format!("{field} {value:?} is not valid: {error}"),
            );
            None
        }
    }
}

/// An enum number read as `E`; `None` (recorded) for numbers this build does not know.
pub fn known_enum<E: TryFrom<i32>>(
    value: i32,
    field: &str,
    violations: &mut Violations,
) -> Option<E> {
    match E::try_from(value) {
        Ok(known) => Some(known),
        Err(_) => {
            violations.add(
                field,
                Rule::UnknownValue,
                format!("{field} has the unknown enum value {value}"),
            );
            None
        }
    }
}

/// Parses an exact decimal string with the one reader every service uses
/// (`tally_proto::convert::decimal`: `-?[0-9]+(\.[0-9]+)?`, at most 28
/// significant digits and 28 places).
pub fn decimal(text: &str, field: &str, violations: &mut Violations) -> Option<Decimal> {
    match tally_proto::convert::decimal(text) {
        Ok(value) => Some(value),
        Err(error) => {
            violations.add(
                field,
                Rule::InvalidDecimal,
                format!("{field} {text:?} {error}"),
            );
            None
        }
    }
}

/// A required decimal.
pub fn required_decimal(
    value: Option<&common::Decimal>,
    field: &str,
    violations: &mut Violations,
) -> Option<Decimal> {
    match value {
        Some(value) => decimal(&value.value, field, violations),
        None => violations.missing(field, ""),
    }
}

/// An optional decimal: `Some(None)` when absent, `None` when present but invalid.
pub fn optional_decimal(
    value: Option<&common::Decimal>,
    field: &str,
    violations: &mut Violations,
) -> Option<Option<Decimal>> {
    match value {
        Some(value) => decimal(&value.value, field, violations).map(Some),
        None => Some(None),
    }
}

/// `value` if it is not negative; otherwise records why and answers `None`.
pub fn non_negative(value: Decimal, field: &str, violations: &mut Violations) -> Option<Decimal> {
    if value < Decimal::ZERO {
        violations.add(
            field,
            Rule::MustNotBeNegative,
            format!("{field} must not be negative, got {value}"),
        );
        return None;
    }
    Some(value)
}

/// `value` if it is above zero; otherwise records why and answers `None`.
pub fn positive(value: Decimal, field: &str, violations: &mut Violations) -> Option<Decimal> {
    if value <= Decimal::ZERO {
        violations.add(
            field,
            Rule::MustBePositive,
            format!("{field} must be greater than 0, got {value}"),
        );
        return None;
    }
    Some(value)
}

/// What a catalog number is, for its bound in `tally_domain::bounds`: the
/// bounds keep every price Tally computes exact (the reasoning is there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A unit price, fee, minimum, maximum or amount: at most 10^9, 12 places.
    Price,
    /// A quantity a price names (tier bound, free units, package size, free
    /// volume): at most 10^15, 6 places.
    Quantity,
    /// A percentage rate (0–100, checked apart): at most 10 places.
    RatePercent,
}

/// `value` if it is within `bound`; otherwise records why (`max_value` or
/// `max_decimal_places`, naming the bound) and answers `None`.
pub fn within(
    value: Decimal,
    field: &str,
    bound: Bound,
    violations: &mut Violations,
) -> Option<Decimal> {
    let checked = match bound {
        Bound::Price => bounds::check_price(value),
        Bound::Quantity => bounds::check_price_quantity(value),
        Bound::RatePercent => bounds::check_rate_percent(value),
    };
    match checked {
        Ok(()) => Some(value),
        Err(BoundError::TooLarge { max, .. }) => {
            violations.add(
                field,
                Rule::MaxValue,
                format!("{field} {value} is above the largest allowed value, {max}"),
            );
            None
        }
        Err(BoundError::TooPrecise {
            scale, max_scale, ..
        }) => {
            violations.add(
                field,
                Rule::MaxDecimalPlaces,
                format!(
                    "{field} {value} has {scale} decimal places, at most {max_scale} are allowed"
                ),
            );
            None
        }
    }
}

/// A required decimal that must not be negative and must be within `bound`.
pub fn required_bounded(
    value: Option<&common::Decimal>,
    field: &str,
    bound: Bound,
    violations: &mut Violations,
) -> Option<Decimal> {
    required_decimal(value, field, violations)
        .and_then(|value| non_negative(value, field, violations))
        .and_then(|value| within(value, field, bound, violations))
}

/// An optional decimal that must not be negative and must be within `bound`.
pub fn optional_bounded(
    value: Option<&common::Decimal>,
    field: &str,
    bound: Bound,
    violations: &mut Violations,
) -> Option<Option<Decimal>> {
    match optional_non_negative(value, field, violations)? {
        Some(value) => within(value, field, bound, violations).map(Some),
        None => Some(None),
    }
}

/// An optional decimal that must not be negative.
pub fn optional_non_negative(
    value: Option<&common::Decimal>,
    field: &str,
    violations: &mut Violations,
) -> Option<Option<Decimal>> {
    match optional_decimal(value, field, violations)? {
        Some(value) => non_negative(value, field, violations).map(Some),
        None => Some(None),
    }
}

/// A non-negative amount of money, within the price bound, in `currency` (the plan version's code as
/// written; when it is empty or unknown only the amount is checked, since
/// `spec.currency` already carries that violation).
pub fn money(
    value: &common::Money,
    field: &str,
    currency: Option<&str>,
    violations: &mut Violations,
) -> Option<Decimal> {
    let mut currency_ok = true;
    if value.currency.is_empty() {
        violations.missing::<()>(&format!("{field}.currency"), "");
        currency_ok = false;
    } else if let Some(expected) = currency
        && value.currency != expected
    {
        violations.add(
            format!("{field}.currency"),
            Rule::CurrencyMismatch,
            format!(
                "{field} is in {}, but the plan version is in {expected}",
                value.currency
            ),
        );
        currency_ok = false;
    }
    let amount_field = format!("{field}.amount");
    let amount = decimal(&value.amount, &amount_field, violations)
        .and_then(|amount| non_negative(amount, &amount_field, violations))
        .and_then(|amount| within(amount, &amount_field, Bound::Price, violations));
    amount.filter(|_| currency_ok)
}

/// A required amount of money (see [`money`]).
pub fn required_money(
    value: Option<&common::Money>,
    field: &str,
    currency: Option<&str>,
    violations: &mut Violations,
) -> Option<Decimal> {
    match value {
        Some(value) => money(value, field, currency, violations),
        None => violations.missing(field, ""),
    }
}

/// An optional amount of money (see [`money`]).
pub fn optional_money(
    value: Option<&common::Money>,
    field: &str,
    currency: Option<&str>,
    violations: &mut Violations,
) -> Option<Option<Decimal>> {
    match value {
        Some(value) => money(value, field, currency, violations).map(Some),
        None => Some(None),
    }
}

/// Checks that an optional minimum is not above an optional maximum (the
/// violation names the maximum's field).
pub fn minimum_not_above_maximum(
    minimum: Option<Decimal>,
    maximum: Option<Decimal>,
    maximum_field: &str,
    violations: &mut Violations,
) -> bool {
    if let (Some(minimum), Some(maximum)) = (minimum, maximum)
        && minimum > maximum
    {
        violations.add(
            maximum_field,
            Rule::MinimumAboveMaximum,
            format!("{maximum_field} {maximum} is below the minimum {minimum}"),
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn decimals_are_exact_strings() {
        let cases = [
            ("0", Some(dec!(0))),
            ("-1.50", Some(dec!(-1.50))),
            ("0.0000021", Some(dec!(0.0000021))),
            ("1e3", None),
            ("+1", None),
            (".5", None),
            ("1.", None),
            ("1_000", None),
            ("", None),
            (" 1", None),
            (
                "1234567890123456789012345678",
                Some(dec!(1234567890123456789012345678)),
            ),
            ("12345678901234567890123456789", None),
        ];
        for (text, expected) in cases {
            let mut violations = Violations::default();
            assert_eq!(decimal(text, "x", &mut violations), expected, "{text:?}");
            assert_eq!(violations.is_empty(), expected.is_some(), "{text:?}");
        }
    }

    #[test]
    fn the_decimal_rule_is_the_one_every_service_reports() {
        assert_eq!(
            Rule::InvalidDecimal.as_str(),
            tally_proto::convert::rule::INVALID_DECIMAL
        );
    }

    #[test]
    fn money_names_currency_and_amount_separately() {
        let mut violations = Violations::default();
        let value = common::Money {
            currency: "EUR".into(),
            amount: "-1".into(),
        };
        assert_eq!(
            money(&value, "spec.fee", Some("USD"), &mut violations),
            None
        );
        assert_eq!(
            violations.pairs(),
            [
                ("spec.fee.currency", "currency_mismatch"),
                ("spec.fee.amount", "must_not_be_negative")
            ]
        );
    }
}
