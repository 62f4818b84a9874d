//! Aggregation benchmarks: absorbing one event into each kind of aggregate state.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

mod support;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use tally_domain::event::{PropertyValue, RawUsageEvent, UsageEvent};
use tally_domain::ids::MeterCode;
use tally_domain::meter::{
    AggregateState, Aggregation, GroupedAggregate, Meter, MeterSpec, TimeUnit,
};

const POOL: usize = 1024;

/// A pool of events with distinct ids, one a minute, carrying `value`, `user` and `region`.
fn events() -> Vec<UsageEvent> {
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    (0..POOL)
        .map(|index| {
            let minutes = i64::try_from(index).unwrap();
            UsageEvent::from_raw(RawUsageEvent {
                id: format!("evt-{index:06}"),
                customer: "cus_bench".into(),
                event_type: "api".into(),
                timestamp: Some(start + chrono::Duration::minutes(minutes)),
                properties: BTreeMap::from([
                    (
                        "value".into(),
                        PropertyValue::Number(Decimal::new(minutes * 37 % 1000, 1)),
                    ),
                    (
                        "user".into(),
                        PropertyValue::Text(format!("user-{}", index % 100)),
                    ),
                    (
                        "region".into(),
                        PropertyValue::Text(["eu", "us", "ap"][index % 3].into()),
                    ),
                ]),
            })
            .unwrap()
        })
        .collect()
}

fn meter(aggregation: Aggregation, group_by: &[&str]) -> Meter {
    Meter::new(MeterSpec {
        code: MeterCode::parse("api").unwrap(),
        aggregation,
        filters: vec![],
        group_by: group_by.iter().map(|name| (*name).to_owned()).collect(),
    })
    .unwrap()
}

fn filled_state(meter: &Meter, events: &[UsageEvent]) -> AggregateState {
    let mut state = AggregateState::new(meter.aggregation());
    for event in events {
        state
            .absorb(&meter.reading(event).unwrap().unwrap())
            .unwrap();
    }
    state
}

fn absorb(criterion: &mut Criterion) {
    let events = events();
    let value = || "value".to_owned();
    let aggregations = [
        Aggregation::Count,
        Aggregation::Sum { property: value() },
        Aggregation::Max { property: value() },
        Aggregation::UniqueCount {
            property: "user".into(),
        },
        Aggregation::Latest { property: value() },
        Aggregation::TimeWeightedSum {
            property: value(),
            unit: TimeUnit::Hour,
        },
    ];
    let mut group = criterion.benchmark_group("absorb");
    for aggregation in aggregations {
        let meter = meter(aggregation.clone(), &[]);
        // Warm the state with the whole pool so the measured absorbs hit a realistic size
        // (100 unique users, 1,024 gauge readings).
        let mut state = filled_state(&meter, &events);
        let mut next = 0;
        group.bench_function(aggregation.name(), |bench| {
            bench.iter(|| {
                let event = &events[next % POOL];
                next += 1;
                let reading = meter.reading(black_box(event)).unwrap().unwrap();
                state.absorb(&reading).unwrap();
            });
        });
    }
    let grouped_meter = meter(Aggregation::Sum { property: value() }, &["region"]);
    let mut grouped = GroupedAggregate::new(grouped_meter.aggregation().clone());
    let mut next = 0;
    group.bench_function("sum_grouped_by_region", |bench| {
        bench.iter(|| {
            let event = &events[next % POOL];
            next += 1;
            grouped
                .absorb_event(&grouped_meter, black_box(event))
                .unwrap();
        });
    });
    group.finish();
}

fn value_and_merge(criterion: &mut Criterion) {
    let events = events();
    let aggregation = Aggregation::TimeWeightedSum {
        property: "value".into(),
        unit: TimeUnit::Hour,
    };
    let meter = meter(aggregation.clone(), &[]);
    let state = filled_state(&meter, &events);
    let day = tally_domain::period::Period::new(
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap(),
    )
    .unwrap();
    let mut group = criterion.benchmark_group("state");
    group.bench_function("time_weighted_sum_value_1024_readings", |bench| {
        bench.iter(|| black_box(&state).value(&day).unwrap());
    });
    let sum = Aggregation::Sum {
        property: "value".into(),
    };
    let mut left = AggregateState::new(&sum);
    let right = AggregateState::new(&sum);
    group.bench_function("merge_sum", |bench| {
        bench.iter(|| left.merge(black_box(&right)).unwrap())
    });
    group.finish();
}

criterion_group! { name = benches; config = support::config(); targets = absorb, value_and_merge }
criterion_main!(benches);
