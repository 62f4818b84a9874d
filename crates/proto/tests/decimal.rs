//! One verdict per input for the `tally.common.v1.Decimal` grammar that every
//! service reads through `tally_proto::convert`.

use std::str::FromStr;

use rust_decimal::Decimal;
use tally_proto::convert::{DecimalError, REFUSED_DECIMAL_EXAMPLES, decimal, decimal_field, rule};

/// `Ok(text the value displays as)` or the error.
type Verdict = Result<&'static str, DecimalError>;

#[test]
fn every_decimal_input_gets_one_verdict() {
    let twenty_eight = "1234567890123456789012345678";
    let twenty_nine = "12345678901234567890123456789";
    let cases: &[(&str, Verdict)] = &[
        ("1", Ok("1")),
        ("0", Ok("0")),
        ("-1.50", Ok("-1.50")),
        ("-0.0000021", Ok("-0.0000021")),
        ("0.0000021", Ok("0.0000021")),
        ("007", Ok("7")),
        ("1500", Ok("1500")),
        (twenty_eight, Ok(twenty_eight)),
        (
            "0.1234567890123456789012345678",
            Ok("0.1234567890123456789012345678"),
        ),
        (
            "0.0000000000000000000000000001",
            Ok("0.0000000000000000000000000001"),
        ),
        ("0000000000000000000000000000001.5", Ok("1.5")),
        ("+1", Err(DecimalError::Syntax)),
        ("1_0", Err(DecimalError::Syntax)),
        ("1,000", Err(DecimalError::Syntax)),
        ("+1_000.00", Err(DecimalError::Syntax)),
        ("1e3", Err(DecimalError::Syntax)),
        ("1E3", Err(DecimalError::Syntax)),
        ("", Err(DecimalError::Syntax)),
        ("-", Err(DecimalError::Syntax)),
        (" 1", Err(DecimalError::Syntax)),
        ("1 ", Err(DecimalError::Syntax)),
        (" ", Err(DecimalError::Syntax)),
        ("1.", Err(DecimalError::Syntax)),
        (".5", Err(DecimalError::Syntax)),
        ("-.5", Err(DecimalError::Syntax)),
        ("1.2.3", Err(DecimalError::Syntax)),
        ("--1", Err(DecimalError::Syntax)),
        ("NaN", Err(DecimalError::Syntax)),
        ("١", Err(DecimalError::Syntax)),
        (twenty_nine, Err(DecimalError::TooManyDigits(29))),
        (
            "1.0000000000000000000000000000",
            Err(DecimalError::TooManyDigits(29)),
        ),
        (
            "0.00000000000000000000000000001",
            Err(DecimalError::TooManyPlaces(29)),
        ),
    ];
    for (text, expected) in cases {
        let verdict = decimal(text).map(|value| value.to_string());
        assert_eq!(verdict, expected.map(str::to_owned), "verdict for {text:?}");
    }
}

#[test]
fn accepted_decimals_keep_their_scale_and_value() {
    let value = decimal("1.50").expect("a decimal");
    assert_eq!(value.scale(), 2);
    assert_eq!(value, Decimal::from_str("1.5").expect("a decimal"));
    assert_eq!(decimal("-0").expect("a decimal"), Decimal::ZERO);
}

#[test]
fn a_refused_decimal_names_its_field_and_the_invalid_decimal_rule() {
    let violation = decimal_field("1e3", "amount.amount").expect_err("refused");
    assert_eq!(violation.field, "amount.amount");
    assert_eq!(violation.rule, rule::INVALID_DECIMAL);
    assert!(violation.description.contains("\"1e3\""), "{violation}");
}

#[test]
fn the_examples_services_test_with_are_all_refused() {
    for text in REFUSED_DECIMAL_EXAMPLES {
        assert!(decimal(text).is_err(), "{text:?} is refused");
    }
}
