//! Tests of `validation`: every rule names its field, limits, and what a rejection says.
use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

fn event() -> WireEvent {
    WireEvent {
        id: "req-1".into(),
        customer_id: "cus_acme".into(),
        event_type: "api_calls".into(),
        timestamp: Some(tally_runtime::clock_service::chrono_to_timestamp(
            now() - Duration::minutes(1),
        )),
        properties: [("tokens".to_owned(), "1200".to_owned())].into(),
        source: "gateway".into(),
    }
}

fn rules(event: &WireEvent) -> Vec<(String, String)> {
    Validator::new(&IngestConfig::default())
        .validate(event.clone(), now(), false)
        .unwrap_err()
        .1
        .into_iter()
        .map(|violation| (violation.field, violation.rule))
        .collect()
}

fn pair(field: &str, rule: &str) -> (String, String) {
    (field.to_owned(), rule.to_owned())
}

#[test]
fn a_valid_event_passes_with_a_stable_hash() {
    let validator = Validator::new(&IngestConfig::default());
    let valid = validator.validate(event(), now(), false).unwrap();
    let mut other_source = event();
    other_source.source = "batch-job".into();
    let again = validator.validate(other_source, now(), false).unwrap();
    assert_eq!(
        valid.payload_hash, again.payload_hash,
        "source is not payload"
    );
    let mut changed = event();
    changed.properties.insert("tokens".into(), "1201".into());
    let changed = validator.validate(changed, now(), false).unwrap();
    assert_ne!(valid.payload_hash, changed.payload_hash);
}

#[test]
fn every_rule_names_its_field() {
    let mut missing = event();
    missing.id.clear();
    missing.customer_id.clear();
    missing.event_type.clear();
    missing.timestamp = None;
    assert_eq!(
        rules(&missing),
        [
            pair("id", "required"),
            pair("customer_id", "required"),
            pair("event_type", "required"),
            pair("timestamp", "required"),
        ]
    );

    let mut bad = event();
    bad.id = "has space".into();
    bad.customer_id = "acme".into();
    bad.event_type = "Api".into();
    assert_eq!(
        rules(&bad),
        [
            pair("id", "invalid_characters"),
            pair("customer_id", "invalid_prefix"),
            pair("event_type", "invalid_characters"),
        ]
    );

    let mut long = event();
    long.id = "x".repeat(129);
    long.source = "s".repeat(129);
    assert_eq!(
        rules(&long),
        [pair("id", "max_length"), pair("source", "max_length")]
    );
}

#[test]
fn an_external_customer_id_is_refused_with_how_to_find_the_tally_id() {
    let mut external = event();
    external.customer_id = "acme".into();
    let violations = Validator::new(&IngestConfig::default())
        .validate(external, now(), false)
        .unwrap_err()
        .1;
    assert_eq!(violations.len(), 1, "{violations:?}");
    let violation = &violations[0];
    assert_eq!(
        (violation.field.as_str(), violation.rule.as_str()),
        ("customer_id", "invalid_prefix")
    );
    for expected in [
        "customer_id must be Tally's customer id (cus_…), not an external id",
        "GetCustomer by external id",
        "tally events send",
    ] {
        assert!(
            violation.description.contains(expected),
            "`{expected}` in {:?}",
            violation.description
        );
    }
}

#[test]
fn timestamps_must_be_in_the_window() {
    let mut future = event();
    future.timestamp = Some(tally_runtime::clock_service::chrono_to_timestamp(
        now() + Duration::minutes(6),
    ));
    assert_eq!(rules(&future), [pair("timestamp", "too_far_in_future")]);

    let mut old = event();
    old.timestamp = Some(tally_runtime::clock_service::chrono_to_timestamp(
        now() - Duration::days(36),
    ));
    let (_, violations) = Validator::new(&IngestConfig::default())
        .validate(old.clone(), now(), false)
        .unwrap_err();
    assert!(only_too_old(&violations));
    assert!(violations[0].description.contains("35 days"));
    assert!(
        Validator::new(&IngestConfig::default())
            .validate(old, now(), true)
            .is_ok(),
        "a backfill lifts the window"
    );

    let mut invalid = event();
    invalid.timestamp = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    });
    assert_eq!(rules(&invalid), [pair("timestamp", "invalid_timestamp")]);
}

#[test]
fn property_limits() {
    let mut many = event();
    many.properties = (0..51).map(|n| (format!("p{n}"), "v".to_owned())).collect();
    assert_eq!(rules(&many), [pair("properties", "max_properties")]);

    let mut sizes = event();
    sizes.properties = [
        ("k".repeat(65), "v".to_owned()),
        ("value".to_owned(), "v".repeat(513)),
        (String::new(), "x".to_owned()),
    ]
    .into();
    let mut found = rules(&sizes);
    found.sort();
    assert_eq!(
        found,
        [
            pair("properties.", "required"),
            pair(&format!("properties.{}", "k".repeat(65)), "max_length"),
            pair("properties.value", "max_length"),
        ]
    );

    let mut huge = event();
    huge.properties = (0..40)
        .map(|n| (format!("p{n}"), "v".repeat(500)))
        .collect();
    assert_eq!(rules(&huge), [pair("event", "max_event_size")]);
}

#[test]
fn numbers_are_bounded_and_negative_numbers_pass() {
    let with = |value: &str| {
        let mut event = event();
        event.properties.insert("tokens".into(), value.into());
        event
    };
    let validator = Validator::new(&IngestConfig::default());
    for fine in [
        "-1",
        "1000000000000000",
        "-1000000000000000",
        "0.000000000001",
        "1.500000000000000000",
        "h100",
        "1e400",
        "12 345",
        "",
    ] {
        assert!(
            validator.validate(with(fine), now(), false).is_ok(),
            "{fine:?} is accepted"
        );
    }
    for (value, rule) in [
        ("79228162514264337593543950335", "number_out_of_range"), // Decimal::MAX
        ("-79228162514264337593543950335", "number_out_of_range"),
        ("1000000000000000.1", "number_out_of_range"),
        ("792281625142643375935439503350000", "number_out_of_range"), // beyond Decimal
        ("0.0000000000001", "max_fraction_digits"),
        ("0.30000000000000004", "max_fraction_digits"),
    ] {
        assert_eq!(
            rules(&with(value)),
            [pair("properties.tokens", rule)],
            "{value:?}"
        );
    }
}

#[test]
fn what_a_rejection_says_stays_small() {
    let mut flood = event();
    flood.properties = (0..1000)
        .map(|n| (format!("p{n}"), "\0".to_owned()))
        .collect();
    let found = rules(&flood);
    assert_eq!(found.len(), MAX_VIOLATIONS);
    assert_eq!(found.last(), Some(&pair("event", "more_violations")));

    let mut long_name = event();
    long_name.properties = [("k".repeat(9000), "1".to_owned())].into();
    let (_, violations) = Validator::new(&IngestConfig::default())
        .validate(long_name, now(), false)
        .unwrap_err();
    for violation in violations {
        assert!(violation.field.chars().count() <= MAX_VIOLATION_TEXT_CHARS + 1);
        assert!(violation.description.chars().count() <= MAX_VIOLATION_TEXT_CHARS + 1);
    }
}

fn arbitrary_event() -> impl Strategy<Value = WireEvent> {
    (
        ".{0,140}",
        ".{0,70}",
        ".{0,70}",
        proptest::option::of((any::<i64>(), any::<i32>())),
        proptest::collection::hash_map(".{0,70}", ".{0,600}", 0..60),
        ".{0,140}",
    )
        .prop_map(
            |(id, customer_id, event_type, timestamp, properties, source)| WireEvent {
                id,
                customer_id,
                event_type,
                timestamp: timestamp
                    .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                properties,
                source,
            },
        )
}

proptest! {
    #[test]
    fn validation_never_panics_and_always_explains(event in arbitrary_event()) {
        let validator = Validator::new(&IngestConfig::default());
        match validator.validate(event.clone(), now(), false) {
            Ok(valid) => prop_assert_eq!(valid.event, event),
            Err((returned, violations)) => {
                prop_assert_eq!(returned, event);
                prop_assert!(!violations.is_empty());
                for violation in violations {
                    prop_assert!(!violation.field.is_empty());
                    prop_assert!(!violation.rule.is_empty());
                    prop_assert!(!violation.description.is_empty());
                }
            }
        }
    }
}
