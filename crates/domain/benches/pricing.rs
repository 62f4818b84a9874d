//! Pricing benchmarks: every model, tiered models with 1 to 20 tiers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

mod support;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_domain::ids::EventId;
use tally_domain::meter::GroupKey;
use tally_domain::pricing::{
    Bracket, Bulk, BulkSpec, ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, Matrix,
    MatrixCell, MatrixSpec, Package, PackageRounding, PackageSpec, PerUnit, PerUnitSpec,
    Percentage, PercentageSpec, PriceModel, Tier, Tiered, TieredSpec, Transaction, Usage,
};

/// `count` tiers of 1,000 units each, prices falling by a cent per tier, the last open.
fn tiers(count: usize) -> Tiered {
    let tiers = (0..count)
        .map(|index| {
            let up_to = (index + 1 < count).then(|| Decimal::from((index + 1) * 1000));
            Tier {
                up_to,
                unit_price: dec!(0.25) - Decimal::new(i64::try_from(index).unwrap(), 2),
                flat_fee: dec!(0),
            }
        })
        .collect();
    Tiered::new(TieredSpec { tiers }).unwrap()
}

fn brackets(count: usize) -> Bulk {
    let brackets = (0..count)
        .map(|index| Bracket {
            up_to: (index + 1 < count).then(|| Decimal::from((index + 1) * 1000)),
            amount: Decimal::from((index + 1) * 100),
        })
        .collect();
    Bulk::new(BulkSpec { brackets }).unwrap()
}

fn tiered_models(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tiered");
    for count in [1_usize, 5, 10, 20] {
        // A quantity in the last tier: graduated walks every tier.
        let quantity = Decimal::from(count * 1000 - 500);
        let graduated = PriceModel::Graduated(tiers(count));
        let volume = PriceModel::Volume(tiers(count));
        let bulk = PriceModel::Bulk(brackets(count));
        group.bench_with_input(
            BenchmarkId::new("graduated", count),
            &quantity,
            |bench, quantity| {
                bench.iter(|| {
                    graduated
                        .price(Usage::Quantity(black_box(*quantity)))
                        .unwrap()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("volume", count),
            &quantity,
            |bench, quantity| {
                bench.iter(|| volume.price(Usage::Quantity(black_box(*quantity))).unwrap());
            },
        );
        group.bench_with_input(
            BenchmarkId::new("bulk", count),
            &quantity,
            |bench, quantity| {
                bench.iter(|| bulk.price(Usage::Quantity(black_box(*quantity))).unwrap());
            },
        );
    }
    group.finish();
}

fn other_models(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("model");
    let quantity = dec!(123456.789);
    let per_unit = PriceModel::PerUnit(
        PerUnit::new(PerUnitSpec {
            unit_price: dec!(0.0000021),
        })
        .unwrap(),
    );
    let package = PriceModel::Package(
        Package::new(PackageSpec {
            package_size: dec!(1000),
            package_price: dec!(5),
            rounding: PackageRounding::Up,
            free_units: dec!(100),
        })
        .unwrap(),
    );
    let flat = PriceModel::Flat(FlatFee::new(FlatFeeSpec { amount: dec!(49) }).unwrap());
    let charge = ChargePrice::new(ChargePriceSpec {
        model: PriceModel::Graduated(tiers(5)),
        free_units: dec!(1000),
        minimum: Some(dec!(10)),
        maximum: Some(dec!(10000)),
    })
    .unwrap();
    for (name, model) in [
        ("per_unit", &per_unit),
        ("package", &package),
        ("flat", &flat),
    ] {
        group.bench_function(name, |bench| {
            bench.iter(|| model.price(Usage::Quantity(black_box(quantity))).unwrap())
        });
    }
    group.bench_function("charge_graduated_5_with_free_units_and_limits", |bench| {
        bench.iter(|| charge.price(Usage::Quantity(black_box(quantity))).unwrap());
    });

    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let transactions: Vec<Transaction> = (0..100)
        .map(|index| Transaction {
            event_id: EventId::parse(&format!("pay-{index}")).unwrap(),
            timestamp: at + chrono::Duration::seconds(100 - index),
            amount: Decimal::new(1000 + index * 37, 2),
        })
        .collect();
    let percentage = PriceModel::Percentage(
        Percentage::new(PercentageSpec {
            rate_percent: dec!(2.9),
            fixed_fee: dec!(0.30),
            min_per_transaction: Some(dec!(0.50)),
            max_per_transaction: Some(dec!(5)),
            free_transactions: 10,
            free_volume: dec!(100),
            allowance_policy: Default::default(),
        })
        .unwrap(),
    );
    group.bench_function("percentage_100_transactions", |bench| {
        bench.iter(|| {
            percentage
                .price(Usage::Transactions(black_box(&transactions)))
                .unwrap()
        });
    });

    let keys: Vec<GroupKey> = (0..10)
        .map(|index| GroupKey::from_pairs([("region", format!("r{index}"))]))
        .collect();
    let matrix = PriceModel::Matrix(
        Matrix::new(MatrixSpec {
            cells: keys[..8]
                .iter()
                .map(|key| MatrixCell {
                    key: key.clone(),
                    unit_price: dec!(1.25),
                })
                .collect(),
            default_unit_price: Some(dec!(2)),
        })
        .unwrap(),
    );
    let usage: BTreeMap<GroupKey, Decimal> =
        keys.into_iter().map(|key| (key, dec!(17.5))).collect();
    group.bench_function("matrix_10_groups", |bench| {
        bench.iter(|| matrix.price(Usage::Grouped(black_box(&usage))).unwrap());
    });
    group.finish();
}

criterion_group! { name = benches; config = support::config(); targets = tiered_models, other_models }
criterion_main!(benches);
