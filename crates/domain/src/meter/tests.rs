use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;
use crate::event::RawUsageEvent;
use crate::period::Period;

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, hour, minute, 0).unwrap()
}

fn day() -> Period {
    Period::new(at(0, 0), Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap()).unwrap()
}

fn event(id: &str, timestamp: DateTime<Utc>, properties: &[(&str, PropertyValue)]) -> UsageEvent {
    UsageEvent::from_raw(RawUsageEvent {
        id: id.into(),
        customer: "cus_1".into(),
        event_type: "api".into(),
        timestamp: Some(timestamp),
        properties: properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    })
    .unwrap()
}

fn meter(aggregation: Aggregation, filters: Vec<Filter>, group_by: &[&str]) -> Meter {
    Meter::new(MeterSpec {
        code: MeterCode::parse("api").unwrap(),
        aggregation,
        filters,
        group_by: group_by.iter().map(|name| (*name).to_owned()).collect(),
    })
    .unwrap()
}

fn number(value: Decimal) -> PropertyValue {
    PropertyValue::Number(value)
}

fn text(value: &str) -> PropertyValue {
    PropertyValue::Text(value.into())
}

fn aggregate(meter: &Meter, events: &[UsageEvent]) -> Decimal {
    let mut state = AggregateState::new(meter.aggregation());
    for event in events {
        if let Some(reading) = meter.reading(event).unwrap() {
            state.absorb(&reading).unwrap();
        }
    }
    state.value(&day()).unwrap()
}

#[test]
fn each_aggregation_on_the_same_events() {
    let events = [
        event(
            "a",
            at(1, 0),
            &[("ms", number(dec!(120))), ("user", text("u1"))],
        ),
        event(
            "b",
            at(2, 0),
            &[("ms", number(dec!(80))), ("user", text("u2"))],
        ),
        event(
            "c",
            at(2, 0),
            &[("ms", number(dec!(300))), ("user", text("u1"))],
        ),
    ];
    let property = || "ms".to_owned();
    let cases = [
        (Aggregation::Count, dec!(3)),
        (
            Aggregation::Sum {
                property: property(),
            },
            dec!(500),
        ),
        (
            Aggregation::Max {
                property: property(),
            },
            dec!(300),
        ),
        (
            Aggregation::Min {
                property: property(),
            },
            dec!(80),
        ),
        (
            Aggregation::UniqueCount {
                property: "user".into(),
            },
            dec!(2),
        ),
        // b and c tie at 02:00: the greater event id, c, is the latest.
        (
            Aggregation::Latest {
                property: property(),
            },
            dec!(300),
        ),
    ];
    for (aggregation, expected) in cases {
        let name = aggregation.name();
        assert_eq!(
            aggregate(&meter(aggregation, vec![], &[]), &events),
            expected,
            "{name}"
        );
    }
}

#[test]
fn empty_aggregates_are_zero() {
    for aggregation in [
        Aggregation::Max {
            property: "x".into(),
        },
        Aggregation::Latest {
            property: "x".into(),
        },
        Aggregation::TimeWeightedSum {
            property: "x".into(),
            unit: TimeUnit::Hour,
        },
    ] {
        assert_eq!(
            AggregateState::new(&aggregation).value(&day()).unwrap(),
            Decimal::ZERO
        );
    }
}

#[test]
fn time_weighted_sum_carries_in_the_last_reading_before_the_period_and_ignores_later_ones() {
    let gauge = meter(
        Aggregation::TimeWeightedSum {
            property: "gb".into(),
            unit: TimeUnit::Hour,
        },
        vec![],
        &[],
    );
    let events = [
        // Yesterday 23:00 at 5 GB: holds from 00:00 until 12:00 → 60 GB·h.
        event(
            "y",
            Utc.with_ymd_and_hms(2024, 12, 31, 23, 0, 0).unwrap(),
            &[("gb", number(dec!(5)))],
        ),
        event(
            "x",
            Utc.with_ymd_and_hms(2024, 12, 31, 1, 0, 0).unwrap(),
            &[("gb", number(dec!(999)))],
        ),
        // 12:00 at 2 GB and 12:00 at 8 GB (tie: "n" > "m", so 8 GB holds) until 18:30 → 52 GB·h.
        event("m", at(12, 0), &[("gb", number(dec!(2)))]),
        event("n", at(12, 0), &[("gb", number(dec!(8)))]),
        // 18:30 at 1 GB until the end → 5.5 GB·h.
        event("z", at(18, 30), &[("gb", number(dec!(1)))]),
        // Tomorrow: outside.
        event(
            "t",
            Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap(),
            &[("gb", number(dec!(1000)))],
        ),
    ];
    assert_eq!(aggregate(&gauge, &events), dec!(117.5));
    let seconds = meter(
        Aggregation::TimeWeightedSum {
            property: "gb".into(),
            unit: TimeUnit::Second,
        },
        vec![],
        &[],
    );
    assert_eq!(aggregate(&seconds, &events), dec!(423000));
}

#[test]
fn filters_and_group_keys() {
    let only_eu_not_test = vec![
        Filter {
            property: "region".into(),
            condition: FilterCondition::OneOf(vec![text("eu")]),
        },
        Filter {
            property: "test".into(),
            condition: FilterCondition::Missing,
        },
    ];
    let counted = meter(Aggregation::Count, only_eu_not_test, &["tier"]);
    let eu = event(
        "a",
        at(1, 0),
        &[("region", text("eu")), ("tier", number(dec!(1.50)))],
    );
    let us = event("b", at(1, 0), &[("region", text("us"))]);
    let test = event(
        "c",
        at(1, 0),
        &[("region", text("eu")), ("test", PropertyValue::Bool(true))],
    );
    assert!(counted.matches(&eu));
    assert!(!counted.matches(&us));
    assert!(!counted.matches(&test));
    assert_eq!(counted.reading(&us).unwrap(), None);
    assert_eq!(
        counted.group_key(&eu),
        GroupKey::from_pairs([("tier", "1.5")])
    );
    assert_eq!(counted.group_key(&us), GroupKey::empty());

    let mut other_type = event("d", at(1, 0), &[("region", text("eu"))]);
    other_type = UsageEvent::from_raw(RawUsageEvent {
        event_type: "other".into(),
        ..other_type.into()
    })
    .unwrap();
    assert!(!counted.matches(&other_type));

    let exists = Filter {
        property: "region".into(),
        condition: FilterCondition::Exists,
    };
    let none_of = Filter {
        property: "region".into(),
        condition: FilterCondition::NoneOf(vec![text("us")]),
    };
    assert!(exists.accepts(&us) && !none_of.accepts(&us) && none_of.accepts(&test));
}

#[test]
fn bad_events_and_bad_meters_are_precise_errors() {
    let summed = meter(
        Aggregation::Sum {
            property: "ms".into(),
        },
        vec![],
        &[],
    );
    assert_eq!(
        summed.reading(&event("a", at(0, 0), &[])),
        Err(MeterError::MissingProperty {
            event_id: "a".into(),
            property: "ms".into()
        })
    );
    assert_eq!(
        summed.reading(&event("b", at(0, 0), &[("ms", text("fast"))])),
        Err(MeterError::NotANumber {
            event_id: "b".into(),
            property: "ms".into()
        })
    );
    let spec = |group_by: Vec<String>, filters| MeterSpec {
        code: MeterCode::parse("api").unwrap(),
        aggregation: Aggregation::Count,
        filters,
        group_by,
    };
    assert_eq!(
        Meter::new(spec(vec!["a".into(), "a".into()], vec![])),
        Err(MeterError::DuplicateGroupBy {
            property: "a".into()
        })
    );
    assert_eq!(
        Meter::new(spec(
            vec![],
            vec![Filter {
                property: "a".into(),
                condition: FilterCondition::OneOf(vec![])
            }]
        )),
        Err(MeterError::EmptyFilterValues {
            property: "a".into()
        })
    );
    let mut count = AggregateState::new(&Aggregation::Count);
    let id = EventId::parse("x").unwrap();
    let reading = Reading {
        event_id: &id,
        timestamp: at(0, 0),
        measure: Measure::Number(dec!(1)),
    };
    assert_eq!(
        count.absorb(&reading),
        Err(MeterError::MeasureMismatch {
            aggregation: "count",
            measure: "number"
        })
    );
    assert!(
        count
            .merge(&AggregateState::new(&Aggregation::Sum {
                property: "x".into()
            }))
            .is_err()
    );
}

#[test]
fn unique_count_over_numbers_uses_canonical_keys() {
    let users = meter(
        Aggregation::UniqueCount {
            property: "user".into(),
        },
        vec![],
        &[],
    );
    let events = [
        event("a", at(0, 0), &[("user", number(dec!(7)))]),
        event("b", at(0, 0), &[("user", number(dec!(7.0)))]),
        event("c", at(0, 0), &[("user", text("7"))]),
        event("d", at(0, 0), &[("user", PropertyValue::Bool(true))]),
    ];
    assert_eq!(aggregate(&users, &events), dec!(2));
}

#[test]
fn grouped_aggregates_feed_matrix_pricing_and_serialise() {
    let per_region = meter(
        Aggregation::Sum {
            property: "h".into(),
        },
        vec![],
        &["region"],
    );
    let mut grouped = GroupedAggregate::new(per_region.aggregation().clone());
    for (id, region, hours) in [
        ("a", "eu", dec!(1.5)),
        ("b", "us", dec!(2)),
        ("c", "eu", dec!(3)),
    ] {
        let event = event(
            id,
            at(1, 0),
            &[("region", text(region)), ("h", number(hours))],
        );
        assert!(grouped.absorb_event(&per_region, &event).unwrap());
    }
    let values = grouped.values(&day()).unwrap();
    assert_eq!(
        values,
        BTreeMap::from([
            (GroupKey::from_pairs([("region", "eu")]), dec!(4.5)),
            (GroupKey::from_pairs([("region", "us")]), dec!(2)),
        ])
    );
    let json = serde_json::to_string(&grouped).unwrap();
    assert_eq!(
        serde_json::from_str::<GroupedAggregate>(&json).unwrap(),
        grouped
    );
    let counted = meter(Aggregation::Count, vec![], &[]);
    assert!(
        grouped
            .absorb_event(&counted, &event("z", at(0, 0), &[]))
            .is_err()
    );
}

#[test]
fn stored_gauge_readings_are_reordered_on_load() {
    let json = r#"{"kind":"time_weighted_sum","unit":"hour","readings":[
        {"timestamp":"2025-01-01T12:00:00Z","event_id":"b","value":"2"},
        {"timestamp":"2025-01-01T00:00:00Z","event_id":"a","value":"1"}]}"#;
    let state: AggregateState = serde_json::from_str(json).unwrap();
    assert_eq!(state.value(&day()).unwrap(), dec!(36)); // 1 × 12 h + 2 × 12 h
}
