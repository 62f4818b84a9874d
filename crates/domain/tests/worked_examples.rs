//! Worked examples with exact expected amounts. Each case names its source: a public
//! pricing page, or a hand computation written out beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_domain::ids::EventId;
use tally_domain::meter::GroupKey;
use tally_domain::money::{Currency, Money, RoundingMode};
use tally_domain::pricing::{
    AllowancePolicy, Bracket, Bulk, BulkSpec, ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec,
    Matrix, MatrixCell, MatrixSpec, Package, PackageRounding, PackageSpec, PerUnit, PerUnitSpec,
    Percentage, PercentageSpec, PriceModel, Tier, Tiered, TieredSpec, Transaction, Usage,
};

/// Stripe's tiered pricing page: 1–5 units $7, 6–10 $6.50, 11+ $6.
fn stripe_tiers() -> Tiered {
    Tiered::new(TieredSpec {
        tiers: vec![
            Tier::unit(Some(dec!(5)), dec!(7)),
            Tier::unit(Some(dec!(10)), dec!(6.50)),
            Tier::unit(None, dec!(6)),
        ],
    })
    .unwrap()
}

#[test]
fn stripe_tiered_pricing_page() {
    // Source: https://docs.stripe.com/products-prices/pricing-models#tiered-pricing
    let volume = PriceModel::Volume(stripe_tiers());
    let graduated = PriceModel::Graduated(stripe_tiers());
    let cases = [
        (&volume, dec!(1), dec!(7)),
        (&volume, dec!(5), dec!(35)),
        (&volume, dec!(6), dec!(39)),
        (&volume, dec!(20), dec!(120)),
        (&volume, dec!(25), dec!(150)),
        (&graduated, dec!(5), dec!(35)),
        // Hand computation: 5 × 7 + 1 × 6.50.
        (&graduated, dec!(6), dec!(41.50)),
        // Hand computation: 5 × 7 + 5 × 6.50 + 10 × 6.
        (&graduated, dec!(20), dec!(127.50)),
        // Hand computation: 5 × 7 + 5 × 6.50 + 15 × 6.
        (&graduated, dec!(25), dec!(157.50)),
        (&graduated, dec!(0), dec!(0)),
    ];
    for (model, quantity, expected) in cases {
        assert_eq!(
            model.price_quantity(quantity).unwrap().total(),
            expected,
            "{} of {quantity}",
            model.name()
        );
    }
}

fn model_cases() -> Vec<(&'static str, PriceModel, Decimal, Decimal)> {
    let per_unit = PriceModel::PerUnit(
        PerUnit::new(PerUnitSpec {
            unit_price: dec!(0.0000021),
        })
        .unwrap(),
    );
    // Modelled on Stripe's package pricing (transform_quantity: divide_by 5, round up).
    let package_up = PriceModel::Package(
        Package::new(PackageSpec {
            package_size: dec!(5),
            package_price: dec!(25),
            rounding: PackageRounding::Up,
            free_units: dec!(0),
        })
        .unwrap(),
    );
    let package_down = PriceModel::Package(
        Package::new(PackageSpec {
            package_size: dec!(5),
            package_price: dec!(25),
            rounding: PackageRounding::Down,
            free_units: dec!(0),
        })
        .unwrap(),
    );
    // Volume with a flat fee per tier (Stripe's flat_amount): up to 10 $5/unit + $20, then $4/unit + $30.
    let flat_fee_tiers = Tiered::new(TieredSpec {
        tiers: vec![
            Tier {
                up_to: Some(dec!(10)),
                unit_price: dec!(5),
                flat_fee: dec!(20),
            },
            Tier {
                up_to: None,
                unit_price: dec!(4),
                flat_fee: dec!(30),
            },
        ],
    })
    .unwrap();
    let volume_flat = PriceModel::Volume(flat_fee_tiers.clone());
    let graduated_flat = PriceModel::Graduated(flat_fee_tiers);
    let bulk = PriceModel::Bulk(
        Bulk::new(BulkSpec {
            brackets: vec![
                Bracket {
                    up_to: Some(dec!(10)),
                    amount: dec!(100),
                },
                Bracket {
                    up_to: Some(dec!(25)),
                    amount: dec!(200),
                },
                Bracket {
                    up_to: None,
                    amount: dec!(350),
                },
            ],
        })
        .unwrap(),
    );
    let flat = PriceModel::Flat(
        FlatFee::new(FlatFeeSpec {
            amount: dec!(49.99),
        })
        .unwrap(),
    );
    vec![
        // 1,234,567 tokens × $0.0000021 = $2.5925907 (hand computation, kept exact).
        ("per-unit tokens", per_unit, dec!(1234567), dec!(2.5925907)),
        // 8 units in packages of 5, rounded up: 2 packages × $25.
        ("package up", package_up.clone(), dec!(8), dec!(50)),
        ("package up, exact multiple", package_up, dec!(10), dec!(50)),
        // 8 units, complete packages only: 1 × $25.
        ("package down", package_down, dec!(8), dec!(25)),
        // 10 units stay in tier 1: 10 × 5 + 20.
        (
            "volume flat, boundary",
            volume_flat.clone(),
            dec!(10),
            dec!(70),
        ),
        // 11 units: all in tier 2: 11 × 4 + 30.
        (
            "volume flat, past boundary",
            volume_flat,
            dec!(11),
            dec!(74),
        ),
        // 11 units graduated: 10 × 5 + 20 + 1 × 4 + 30.
        ("graduated flat", graduated_flat, dec!(11), dec!(104)),
        ("bulk bracket 2", bulk.clone(), dec!(25), dec!(200)),
        ("bulk bracket 3", bulk, dec!(25.5), dec!(350)),
        ("flat fee", flat, dec!(3), dec!(49.99)),
    ]
}

#[test]
fn every_model_has_a_worked_example() {
    for (name, model, quantity, expected) in model_cases() {
        assert_eq!(
            model.price(Usage::Quantity(quantity)).unwrap().total(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn percentage_card_fees() {
    // Stripe's standard US card pricing, 2.9 % + 30¢ per successful charge (stripe.com/pricing).
    // Hand computation: 2.9 % of 100 + 0.30 = 3.20; of 10 + 0.30 = 0.59; of 0.50 + 0.30 = 0.3145.
    let model = PriceModel::Percentage(
        Percentage::new(PercentageSpec {
            rate_percent: dec!(2.9),
            fixed_fee: dec!(0.30),
            min_per_transaction: None,
            max_per_transaction: None,
            free_transactions: 0,
            free_volume: dec!(0),
            allowance_policy: Default::default(),
        })
        .unwrap(),
    );
    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let transactions: Vec<Transaction> = [dec!(100), dec!(10), dec!(0.50)]
        .into_iter()
        .enumerate()
        .map(|(index, amount)| Transaction {
            event_id: EventId::parse(&format!("ch_{index}")).unwrap(),
            timestamp: at,
            amount,
        })
        .collect();
    let breakdown = model.price(Usage::Transactions(&transactions)).unwrap();
    assert_eq!(breakdown.total(), dec!(4.1045));
}

/// One row of the allowance-policy table: a percentage price with both allowances, a period's
/// transactions in time order, and the exact and billed (USD, half-even) amounts under each
/// policy.
struct AllowanceCase {
    name: &'static str,
    rate_percent: Decimal,
    fixed_fee: Decimal,
    limits: (Option<Decimal>, Option<Decimal>),
    free_transactions: u64,
    free_volume: Decimal,
    amounts: Vec<Decimal>,
    sequential: (Decimal, Decimal),
    first_exhausted: (Decimal, Decimal),
}

#[test]
fn percentage_allowance_policies_to_the_cent() {
    let cases = [
        // Source: Lago's percentage charge model page (getlago.com/docs/guide/plans/charges/
        // charge-models/percentage): 1.2 % + 0.10, "the first 3 events or $500 are free";
        // the 4th transaction pays 0.10 + 1.2 % × 50 = 0.70. Sequential: 1–3 free, the 50 of
        // the 4th is inside the free amount, its fixed fee is due: 0.10.
        AllowanceCase {
            name: "lago: free transactions run out first",
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 3,
            free_volume: dec!(500),
            amounts: vec![dec!(200), dec!(100), dec!(100), dec!(50)],
            sequential: (dec!(0.10), dec!(0.10)),
            first_exhausted: (dec!(0.70), dec!(0.70)),
        },
        // Hand computation. First exhausted: 40 and 50 free (90 drawn); 30 exceeds the 10
        // left: 1.2 % × 20 + 0.10 = 0.34, allowances end; 20: 0.34. Sequential: 1–3 free,
        // 20 exempt: 0.10.
        AllowanceCase {
            name: "free amount runs out inside a transaction",
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 3,
            free_volume: dec!(100),
            amounts: vec![dec!(40), dec!(50), dec!(30), dec!(20)],
            sequential: (dec!(0.10), dec!(0.10)),
            first_exhausted: (dec!(0.68), dec!(0.68)),
        },
        // Hand computation. First exhausted: 200 and 100 free, both allowances used up
        // together at the 2nd; 50: 0.60 + 0.10. Sequential: 1–2 free, 50 exempt: 0.10.
        AllowanceCase {
            name: "both run out on the same transaction",
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 2,
            free_volume: dec!(300),
            amounts: vec![dec!(200), dec!(100), dec!(50)],
            sequential: (dec!(0.10), dec!(0.10)),
            first_exhausted: (dec!(0.70), dec!(0.70)),
        },
        // Hand computation, one allowance only: both policies agree. 200 exempt: 0.10;
        // 50 of 100 exempt: 0.60 + 0.10; 50: 0.60 + 0.10.
        AllowanceCase {
            name: "only a free amount",
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 0,
            free_volume: dec!(250),
            amounts: vec![dec!(200), dec!(100), dec!(50)],
            sequential: (dec!(1.50), dec!(1.50)),
            first_exhausted: (dec!(1.50), dec!(1.50)),
        },
        // Hand computation, one allowance only: 1–2 free; 50: 0.60 + 0.10.
        AllowanceCase {
            name: "only free transactions",
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 2,
            free_volume: dec!(0),
            amounts: vec![dec!(200), dec!(100), dec!(50)],
            sequential: (dec!(0.70), dec!(0.70)),
            first_exhausted: (dec!(0.70), dec!(0.70)),
        },
        // Hand computation, 2.9 % + 0.30 held in 0.50–2.00. First exhausted: 100 free, the
        // one free transaction is used (900 of the free amount forfeited); 3.20 → 2.00;
        // 58.30 → 2.00. Sequential: 100 free; 100 exempt: 0.30 → 0.50; 800 exempt,
        // 2.9 % × 1,200 + 0.30 = 35.10 → 2.00.
        AllowanceCase {
            name: "per-transaction limits",
            rate_percent: dec!(2.9),
            fixed_fee: dec!(0.30),
            limits: (Some(dec!(0.50)), Some(dec!(2.00))),
            free_transactions: 1,
            free_volume: dec!(1000),
            amounts: vec![dec!(100), dec!(100), dec!(2000)],
            sequential: (dec!(2.50), dec!(2.50)),
            first_exhausted: (dec!(4.00), dec!(4.00)),
        },
        // Hand computation, 1 % with a 0.25 minimum. First exhausted: 30 free; 40 exceeds the
        // 20 left: 1 % × 20 = 0.20 → 0.25, 4 free transactions forfeited; 10: 0.10 → 0.25.
        // Sequential: all three inside the 5 free transactions.
        AllowanceCase {
            name: "the crossing transaction still meets the minimum",
            rate_percent: dec!(1),
            fixed_fee: dec!(0),
            limits: (Some(dec!(0.25)), None),
            free_transactions: 5,
            free_volume: dec!(50),
            amounts: vec![dec!(30), dec!(40), dec!(10)],
            sequential: (dec!(0), dec!(0)),
            first_exhausted: (dec!(0.50), dec!(0.50)),
        },
        // Hand computation: zero-amount transactions use free transactions. First exhausted:
        // 0 and 0 free, 100 forfeited; 0: 0.10; 500: 5 + 0.10. Sequential: 0 and 0 free;
        // 0: 0.10; 100 of 500 exempt: 4 + 0.10.
        AllowanceCase {
            name: "zero amounts",
            rate_percent: dec!(1),
            fixed_fee: dec!(0.10),
            limits: (None, None),
            free_transactions: 2,
            free_volume: dec!(100),
            amounts: vec![dec!(0), dec!(0), dec!(0), dec!(500)],
            sequential: (dec!(4.20), dec!(4.20)),
            first_exhausted: (dec!(5.20), dec!(5.20)),
        },
        // Hand computation, 2.9 % + 0.30, one rounding per line. First exhausted: 60 exceeds
        // the free 50 at once: 2.9 % × 10 + 0.30 = 0.59, the free transaction forfeited;
        // 10.10: 0.2929 + 0.30; 25: 0.725 + 0.30; 2.2079 → 2.21. Sequential: 60 free; 10.10
        // and 25 inside the free 50: 0.30 each.
        AllowanceCase {
            name: "the first transaction exceeds the free amount",
            rate_percent: dec!(2.9),
            fixed_fee: dec!(0.30),
            limits: (None, None),
            free_transactions: 1,
            free_volume: dec!(50),
            amounts: vec![dec!(60), dec!(10.10), dec!(25)],
            sequential: (dec!(0.60), dec!(0.60)),
            first_exhausted: (dec!(2.2079), dec!(2.21)),
        },
        AllowanceCase {
            name: "no transactions",
            rate_percent: dec!(2.9),
            fixed_fee: dec!(0.30),
            limits: (Some(dec!(0.50)), None),
            free_transactions: 1,
            free_volume: dec!(50),
            amounts: vec![],
            sequential: (dec!(0), dec!(0)),
            first_exhausted: (dec!(0), dec!(0)),
        },
    ];
    let start = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    for case in cases {
        // Arrival order is the reverse of time order: the allowances follow time.
        let transactions: Vec<Transaction> = case
            .amounts
            .iter()
            .enumerate()
            .rev()
            .map(|(index, amount)| Transaction {
                event_id: EventId::parse(&format!("tx-{index}")).unwrap(),
                timestamp: start + chrono::Duration::minutes(i64::try_from(index).unwrap()),
                amount: *amount,
            })
            .collect();
        for (policy, (precise, billed)) in [
            (AllowancePolicy::Sequential, case.sequential),
            (AllowancePolicy::FirstExhausted, case.first_exhausted),
        ] {
            let model = Percentage::new(PercentageSpec {
                rate_percent: case.rate_percent,
                fixed_fee: case.fixed_fee,
                min_per_transaction: case.limits.0,
                max_per_transaction: case.limits.1,
                free_transactions: case.free_transactions,
                free_volume: case.free_volume,
                allowance_policy: policy,
            })
            .unwrap();
            let total = model.price(&transactions).unwrap().total();
            assert_eq!(total, precise, "{}, {policy:?}", case.name);
            let line = Money::new(total, Currency::USD).round(RoundingMode::HalfEven);
            assert_eq!(line.amount(), billed, "{}, {policy:?}", case.name);
        }
    }
}

#[test]
fn matrix_and_charge_terms() {
    // Hand computation: eu 10 h × 2.10 + us 5 h × 1.90 + ap (default) 2 h × 2.50 = 35.50.
    let eu = GroupKey::from_pairs([("region", "eu")]);
    let us = GroupKey::from_pairs([("region", "us")]);
    let ap = GroupKey::from_pairs([("region", "ap")]);
    let model = PriceModel::Matrix(
        Matrix::new(MatrixSpec {
            cells: vec![
                MatrixCell {
                    key: eu.clone(),
                    unit_price: dec!(2.10),
                },
                MatrixCell {
                    key: us.clone(),
                    unit_price: dec!(1.90),
                },
            ],
            default_unit_price: Some(dec!(2.50)),
        })
        .unwrap(),
    );
    let usage = BTreeMap::from([(eu, dec!(10)), (us, dec!(5)), (ap, dec!(2))]);
    assert_eq!(
        model.price(Usage::Grouped(&usage)).unwrap().total(),
        dec!(35.50)
    );
    // With a charge maximum of $30 the line is capped.
    let capped = ChargePrice::new(ChargePriceSpec {
        maximum: Some(dec!(30)),
        ..ChargePriceSpec::plain(model)
    })
    .unwrap();
    assert_eq!(
        capped.price(Usage::Grouped(&usage)).unwrap().total(),
        dec!(30)
    );

    // Graduated with 100 included units (Stripe tiers): 112 units → 12 billable → 5×7 + 5×6.50 + 2×6.
    let included = ChargePrice::new(ChargePriceSpec {
        free_units: dec!(100),
        ..ChargePriceSpec::plain(PriceModel::Graduated(stripe_tiers()))
    })
    .unwrap();
    assert_eq!(
        included.price_quantity(dec!(112)).unwrap().total(),
        dec!(79.50)
    );
    assert_eq!(included.price_quantity(dec!(60)).unwrap().total(), dec!(0));
}
