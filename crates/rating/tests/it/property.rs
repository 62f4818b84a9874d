//! Property: for generated event sets (any order, with redeliveries), every
//! usage line equals pricing the batch aggregate of the period's events
//! through the domain crate directly (`Aggregation::aggregate`, then the
//! charge's `ChargePrice`), to the exact precise amount.
//!
//! The cases come from a deterministic proptest runner (no shrinking: each
//! case needs the database, so the cases run inside one async test).

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;
use tally_domain::meter::{GroupKey, Reading};
use tally_domain::money::RoundingMode;
use tally_domain::period::Period;
use tally_domain::plan::ChargeKind;
use tally_domain::pricing::{PriceModel, Usage};
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_rating::catalog::store;
use tally_rating::usage::AcceptedEvent;

use crate::support::*;
use crate::usage::{accepted, amount, at, november, per_unit, published, snapshot};

/// (meter, day, minute of day, value, user, region) of one generated event.
type Generated = (usize, u32, u32, u32, u32, usize);

const TYPES: [&str; 5] = [
    "api_calls",
    "llm.tokens",
    "peak",
    "users",
    "calls_by_region",
];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn events_strategy() -> impl Strategy<Value = (Vec<Generated>, Vec<usize>)> {
    prop::collection::vec(
        (
            0..TYPES.len(),
            1u32..=30,
            0u32..1440,
            0u32..100_000,
            0u32..6,
            0..REGIONS.len(),
        ),
        1..40,
    )
    .prop_flat_map(|events| {
        let count = events.len();
        // A delivery order: a permutation plus some redeliveries.
        let order = prop::collection::vec(0..count, count..count * 2);
        (Just(events), order)
    })
}

async fn catalog(h: &mut Harness) -> String {
    h.meter(meter_request("api_calls", Aggregation::Count, ""))
        .await;
    h.meter(meter_request("llm.tokens", Aggregation::Sum, "tokens"))
        .await;
    h.meter(meter_request("peak", Aggregation::Max, "conc"))
        .await;
    h.meter(meter_request("users", Aggregation::UniqueCount, "user"))
        .await;
    h.meter(CreateMeterRequest {
        group_by: vec!["region".into()],
        ..meter_request("calls_by_region", Aggregation::Count, "")
    })
    .await;
    let mut calls = usage(
        "calls",
        "api_calls",
        Model::Graduated(TieredPrice {
            tiers: vec![
                tier(Some("5"), "0.10", Some("1")),
                tier(None, "0.033", None),
            ],
        }),
    );
    calls.included_quantity = decimal("2");
    let mut tokens = usage(
        "tokens",
        "llm.tokens",
        Model::Volume(TieredPrice {
            tiers: vec![
                tier(Some("1000"), "0.0021", None),
                tier(None, "0.0017", None),
            ],
        }),
    );
    tokens.maximum_amount = usd("1000");
    let charges = vec![
        calls,
        tokens,
        usage(
            "peak",
            "peak",
            Model::Bulk(BulkPrice {
                brackets: vec![
                    BulkBracket {
                        up_to: decimal("100"),
                        amount: usd("5"),
                    },
                    BulkBracket {
                        up_to: None,
                        amount: usd("12.5"),
                    },
                ],
            }),
        ),
        usage(
            "users",
            "users",
            Model::Package(PackagePrice {
                package_size: decimal("3"),
                package_price: usd("7.77"),
                rounding: PackageRounding::Up as i32,
                free_units: None,
            }),
        ),
        usage(
            "regions",
            "calls_by_region",
            Model::Matrix(MatrixPrice {
                dimensions: vec!["region".into()],
                cells: vec![
                    cell(&[("region", "eu")], "0.015"),
                    cell(&[("region", "us")], "0.0105"),
                ],
                default_unit_price: decimal("0.02"),
            }),
        ),
        per_unit("calls_flat", "api_calls", "0.005"),
    ];
    published(h, "everything", charges).await
}

fn to_event(index: usize, customer: &str, generated: &Generated) -> AcceptedEvent {
    let (kind, day, minute, value, user, region) = *generated;
    let time = at(day, 0, 0, 0) + Duration::minutes(i64::from(minute));
    let number = Decimal::new(i64::from(value), 2).to_string();
    let user = format!("u{user}");
    let properties: Vec<(&str, &str)> = match kind {
        1 => vec![("tokens", &number)],
        2 => vec![("conc", &number)],
        3 => vec![("user", &user)],
        4 => vec![("region", REGIONS[region])],
        _ => vec![],
    };
    accepted(
        u64::try_from(index).unwrap() + 1,
        customer,
        &format!("e{index}"),
        TYPES[kind],
        time,
        &properties,
    )
}

#[tokio::test]
async fn usage_charges_equal_pricing_the_batch_aggregate_directly() {
    let mut h = harness().await;
    let version = catalog(&mut h).await;
    let plan = store::published_version(&h.db.pool, &version)
        .await
        .unwrap()
        .unwrap()
        .plan;
    let period = Period::new(
        at(1, 0, 0, 0),
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    )
    .unwrap();
    let mut runner = TestRunner::deterministic();
    let strategy = events_strategy();
    for case in 0..12 {
        let (generated, order) = strategy.new_tree(&mut runner).unwrap().current();
        let customer = format!("cus_p{case}");
        let subscription = format!("sub_p{case}");
        h.rating
            .replica()
            .apply(&snapshot(
                &subscription,
                &customer,
                1,
                at(1, 0, 0, 0),
                &[(&version, at(1, 0, 0, 0), None)],
            ))
            .await
            .unwrap();
        let events: Vec<AcceptedEvent> = generated
            .iter()
            .enumerate()
            .map(|(index, event)| to_event(index, &customer, event))
            .collect();
        // Every event at least once, in generated order of deliveries, in small batches.
        let mut deliveries: Vec<AcceptedEvent> =
            order.iter().map(|index| events[*index].clone()).collect();
        deliveries.extend(events.iter().cloned());
        for batch in deliveries.chunks(7) {
            h.rating.usage_consumer().rate(batch).await.unwrap();
        }

        // The reference: the batch aggregate of each charge (and group), priced directly.
        let mut expected: BTreeMap<(String, GroupKey), Decimal> = BTreeMap::new();
        for charge in plan.charges() {
            let ChargeKind::Usage { meter: code } = &charge.kind else {
                continue;
            };
            let meter = store::meter(&h.db.pool, code.as_str())
                .await
                .unwrap()
                .unwrap();
            let mut groups: BTreeMap<GroupKey, Vec<Reading<'_>>> = BTreeMap::new();
            groups.entry(GroupKey::empty()).or_default();
            for event in &events {
                let event = event.event.as_ref().unwrap();
                if let Some(reading) = meter.reading(event).unwrap() {
                    groups
                        .entry(meter.group_key(event))
                        .or_default()
                        .push(reading);
                }
            }
            if groups.len() > 1 {
                groups.retain(|key, readings| !key.is_empty() || !readings.is_empty());
            }
            for (group, readings) in groups {
                let quantity = meter.aggregation().aggregate(&readings, &period).unwrap();
                let breakdown = match charge.price.model() {
                    PriceModel::Matrix(_) => charge
                        .price
                        .price(Usage::Grouped(&BTreeMap::from([(group.clone(), quantity)]))),
                    _ => charge.price.price(Usage::Quantity(quantity)),
                }
                .unwrap();
                expected.insert((charge.code.as_str().to_owned(), group), breakdown.total());
            }
        }

        let response = h
            .usage
            .get_usage_charges(GetUsageChargesRequest {
                subscription_id: subscription.clone(),
                period: Some(november()),
            })
            .await
            .unwrap()
            .into_inner();
        let actual: BTreeMap<(String, GroupKey), Decimal> = response
            .charges
            .iter()
            .map(|line| {
                let group =
                    GroupKey::from_pairs(line.group.iter().collect::<HashMap<_, _>>().into_iter());
                (
                    (line.charge_key.clone(), group),
                    amount(line.precise_amount.as_ref()),
                )
            })
            .collect();
        assert_eq!(actual, expected, "case {case}: {generated:?}");
        let rounded: Decimal = expected
            .values()
            .map(|precise| RoundingMode::HalfEven.round(*precise, 2))
            .sum();
        assert_eq!(amount(response.total.as_ref()), rounded, "case {case}");
    }
}
