//! Property test: an incremental aggregate, fed any order of a duplicate-free set of events
//! (and split across states that are merged), equals the batch aggregate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_domain::ids::EventId;
use tally_domain::meter::{AggregateState, Aggregation, Measure, Reading, TimeUnit};
use tally_domain::period::Period;

#[derive(Clone, Debug)]
struct Sample {
    event_id: EventId,
    timestamp: DateTime<Utc>,
    value: Decimal,
    key: String,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn period() -> Period {
    Period::new(start(), start() + Duration::days(1)).unwrap()
}

/// Up to 40 samples with unique ids; timestamps from 6 h before to 6 h after the day, on a
/// coarse grid so that ties happen.
fn samples() -> impl Strategy<Value = Vec<Sample>> {
    prop::collection::vec(
        (
            -24_i64..=120,
            -1_000_000_i64..=1_000_000,
            0_u32..=3,
            0_u8..8,
        ),
        0..40,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(index, (quarter_hours, mantissa, scale, key))| Sample {
                event_id: EventId::parse(&format!("e{index:03}")).unwrap(),
                timestamp: start() + Duration::minutes(quarter_hours * 15),
                value: Decimal::new(mantissa, scale),
                key: format!("k{key}"),
            })
            .collect()
    })
}

fn aggregation() -> impl Strategy<Value = Aggregation> {
    let property = || "p".to_owned();
    prop::sample::select(vec![
        Aggregation::Count,
        Aggregation::Sum {
            property: property(),
        },
        Aggregation::Max {
            property: property(),
        },
        Aggregation::Min {
            property: property(),
        },
        Aggregation::UniqueCount {
            property: property(),
        },
        Aggregation::Latest {
            property: property(),
        },
        Aggregation::TimeWeightedSum {
            property: property(),
            unit: TimeUnit::Hour,
        },
        Aggregation::TimeWeightedSum {
            property: property(),
            unit: TimeUnit::Second,
        },
    ])
}

fn reading<'a>(aggregation: &Aggregation, sample: &'a Sample) -> Reading<'a> {
    let measure = match aggregation {
        Aggregation::Count => Measure::One,
        Aggregation::UniqueCount { .. } => Measure::Key(Cow::Borrowed(&sample.key)),
        Aggregation::Sum { .. }
        | Aggregation::Max { .. }
        | Aggregation::Min { .. }
        | Aggregation::Latest { .. }
        | Aggregation::TimeWeightedSum { .. } => Measure::Number(sample.value),
    };
    Reading {
        event_id: &sample.event_id,
        timestamp: sample.timestamp,
        measure,
    }
}

proptest! {
    #[test]
    fn incremental_equals_batch_for_any_order_and_any_split(
        (samples, shuffled) in samples().prop_flat_map(|samples| (Just(samples.clone()), Just(samples).prop_shuffle())),
        aggregation in aggregation(),
        split in 0_usize..=40,
    ) {
        let batch_readings: Vec<Reading<'_>> = samples.iter().map(|sample| reading(&aggregation, sample)).collect();
        let batch = aggregation.aggregate(&batch_readings, &period()).unwrap();

        let split = split.min(shuffled.len());
        let mut left = AggregateState::new(&aggregation);
        let mut right = AggregateState::new(&aggregation);
        for sample in &shuffled[..split] {
            left.absorb(&reading(&aggregation, sample)).unwrap();
        }
        for sample in &shuffled[split..] {
            right.absorb(&reading(&aggregation, sample)).unwrap();
        }
        // The state survives a trip through storage.
        let stored: AggregateState = serde_json::from_str(&serde_json::to_string(&right).unwrap()).unwrap();
        left.merge(&stored).unwrap();
        prop_assert_eq!(left.value(&period()).unwrap(), batch);

        let mut sequential = AggregateState::new(&aggregation);
        for sample in &shuffled {
            sequential.absorb(&reading(&aggregation, sample)).unwrap();
        }
        prop_assert_eq!(sequential, left);
    }
}

#[test]
fn batch_reference_for_a_hand_computed_gauge() {
    // 4 GB from 00:00 to 06:00 and 1 GB from 06:00 to 24:00: 24 + 18 = 42 GB·h.
    let samples = [
        Sample {
            event_id: EventId::parse("a").unwrap(),
            timestamp: start(),
            value: Decimal::from(4),
            key: String::new(),
        },
        Sample {
            event_id: EventId::parse("b").unwrap(),
            timestamp: start() + Duration::hours(6),
            value: Decimal::ONE,
            key: String::new(),
        },
    ];
    let aggregation = Aggregation::TimeWeightedSum {
        property: "gb".into(),
        unit: TimeUnit::Hour,
    };
    let readings: Vec<_> = samples
        .iter()
        .rev()
        .map(|sample| reading(&aggregation, sample))
        .collect();
    assert_eq!(
        aggregation.aggregate(&readings, &period()).unwrap(),
        Decimal::from(42)
    );
}
