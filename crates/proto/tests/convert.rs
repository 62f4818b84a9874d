//! The timestamp, range and money readers every service shares: one verdict
//! and one rule per input.

use prost_types::Timestamp;
use tally_proto::common::{Money, TimeRange};
use tally_proto::convert::{money, required_instant, required_period, rule};

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

#[test]
fn timestamps_are_required_and_in_range() {
    assert!(required_instant(at(60, 5).as_ref(), "at").is_ok());
    let rule_of = |value: Option<Timestamp>| {
        required_instant(value.as_ref(), "at")
            .map_err(|violation| (violation.field, violation.rule))
    };
    assert_eq!(rule_of(None), Err(("at".into(), rule::REQUIRED)));
    assert_eq!(
        rule_of(at(0, -1)),
        Err(("at".into(), rule::INVALID_TIMESTAMP))
    );
    assert_eq!(
        rule_of(at(i64::MAX, 0)),
        Err(("at".into(), rule::INVALID_TIMESTAMP))
    );
}

#[test]
fn ranges_need_both_ends_and_an_end_after_the_start() {
    let range = |start: Option<Timestamp>, end: Option<Timestamp>| TimeRange {
        start_time: start,
        end_time: end,
    };
    let rule_of = |value: Option<TimeRange>| {
        required_period(value.as_ref(), "period")
            .map(|period| (period.start().timestamp(), period.end().timestamp()))
            .map_err(|violation| (violation.field, violation.rule))
    };
    assert_eq!(rule_of(Some(range(at(0, 0), at(60, 0)))), Ok((0, 60)));
    assert_eq!(rule_of(None), Err(("period".into(), rule::REQUIRED)));
    assert_eq!(
        rule_of(Some(range(None, at(60, 0)))),
        Err(("period.start_time".into(), rule::REQUIRED))
    );
    assert_eq!(
        rule_of(Some(range(at(0, 0), at(0, -5)))),
        Err(("period.end_time".into(), rule::INVALID_TIMESTAMP))
    );
    assert_eq!(
        rule_of(Some(range(at(60, 0), at(60, 0)))),
        Err(("period.end_time".into(), rule::INVALID_RANGE))
    );
}

#[test]
fn money_names_the_currency_or_the_amount() {
    let rule_of = |currency: &str, amount: &str| {
        let value = Money {
            currency: currency.into(),
            amount: amount.into(),
        };
        money(Some(&value), "fee")
            .map(|money| money.amount().to_string())
            .map_err(|violation| (violation.field, violation.rule))
    };
    assert_eq!(rule_of("USD", "12.3400"), Ok("12.3400".into()));
    assert_eq!(
        rule_of("usd", "1"),
        Err(("fee.currency".into(), rule::UNKNOWN_CURRENCY))
    );
    assert_eq!(
        rule_of("USD", "+1_000.00"),
        Err(("fee.amount".into(), rule::INVALID_DECIMAL))
    );
    assert_eq!(
        money(None, "fee").map_err(|violation| violation.rule),
        Err(rule::REQUIRED)
    );
}

#[test]
fn ids_are_read_with_their_prefix() {
    use tally_domain::ids::{CustomerId, InvoiceId};
    use tally_proto::convert::{id, optional_id};

    assert_eq!(
        id::<InvoiceId>("inv_01", "invoice_id").map(String::from),
        Ok("inv_01".to_owned())
    );
    let rule_of =
        |text: &str| id::<InvoiceId>(text, "invoice_id").map_err(|violation| violation.rule);
    assert_eq!(rule_of(""), Err(rule::REQUIRED));
    assert_eq!(rule_of("cus_01"), Err(rule::INVALID_PREFIX));
    assert_eq!(rule_of("inv_"), Err(rule::INVALID_PREFIX));
    assert_eq!(
        rule_of(&format!("inv_{}", "a".repeat(65))),
        Err(rule::MAX_LENGTH)
    );
    assert_eq!(rule_of("inv_a-b"), Err(rule::INVALID_CHARACTERS));
    let violation = id::<CustomerId>("acme", "customer_id").unwrap_err();
    assert_eq!(violation.field, "customer_id");
    assert!(
        violation.description.contains("cus_"),
        "{}",
        violation.description
    );
    assert_eq!(optional_id::<CustomerId>("", "customer_id"), Ok(None));
    assert!(optional_id::<CustomerId>("sub_1", "customer_id").is_err());
}
