//! Charges under terms: added, removed, shared free units, phase over base, the plan's
//! minimum, override models.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::fixtures::{
    at, code, flat, meter, month, on, percent_off, plan, spec, terms, unit_price_override, usage,
    usd,
};
use super::*;
use crate::meter::GroupKey;
use crate::money::RoundingMode;
use crate::period::Period;
use crate::plan::{BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
use crate::pricing::{
    BreakdownItem, ChargePrice, ChargePriceSpec, Matrix, MatrixCell, MatrixSpec, PerUnit,
    PerUnitSpec, PriceModel,
};

fn bill(terms: &SubscriptionTerms, period: Period, usage: &PeriodUsage) -> PricedPeriod {
    let effective = terms_for_period(terms, &period).unwrap();
    price_period(
        &effective,
        usage,
        RoundingMode::HalfEven,
        PricingScope::WholePeriod,
    )
    .unwrap()
}

fn line_amount(priced: &PricedPeriod, charge: &str) -> Decimal {
    priced.line(&code(charge)).unwrap().amount().amount()
}

fn model(name: &str) -> GroupKey {
    GroupKey::from_pairs([("model", name)])
}

#[test]
fn free_units_are_shared_by_the_charges_of_a_meter_and_taken_group_by_group() {
    let mut spec = spec();
    let by_model = Matrix::new(MatrixSpec {
        cells: vec![MatrixCell {
            key: model("large"),
            unit_price: dec!(0.03),
        }],
        default_unit_price: Some(dec!(0.01)),
    })
    .unwrap();
    spec.added_charges = vec![PlanCharge {
        code: code("tokens_by_model"),
        name: "Tokens by model".into(),
        kind: ChargeKind::Usage {
            meter: meter("tokens"),
        },
        price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::Matrix(by_model))).unwrap(),
    }];
    spec.base.usage_discounts = vec![UsageDiscount {
        name: "5 000 tokens included".into(),
        meter: meter("tokens"),
        free_units: dec!(5000),
    }];
    let terms = terms(spec);
    let mut usage = usage(3_000, 0);
    usage.insert(
        code("tokens_by_model"),
        ChargeUsage::Grouped(BTreeMap::from([
            (model("large"), dec!(4000)),
            (model("small"), dec!(2000)),
        ])),
    );
    let priced = bill(&terms, month(2026, 1), &usage);
    // `tokens` (first in order) uses 3 000; the other 2 000 go to the first group, `large`:
    // 2 000 × 0.03 + 2 000 × 0.01 = 80.00.
    assert_eq!(line_amount(&priced, "tokens"), dec!(0.00));
    assert_eq!(line_amount(&priced, "tokens_by_model"), dec!(80.00));
    let by_model_line = priced.line(&code("tokens_by_model")).unwrap();
    assert_eq!(by_model_line.quantity(), Some(dec!(6000)));
    assert!(matches!(
        by_model_line.steps()[0],
        TermStep::FreeUnits { quantity, .. } if quantity == dec!(2000)
    ));
}

#[test]
fn removed_charges_are_not_billed_and_added_ones_are() {
    let mut spec = spec();
    spec.removed_charges = vec![code("images")];
    spec.added_charges = vec![PlanCharge {
        code: code("support"),
        name: "Premium support".into(),
        kind: ChargeKind::Recurring {
            timing: BillingTiming::InAdvance,
        },
        price: flat(dec!(200)),
    }];
    let priced = bill(&terms(spec), month(2026, 1), &usage(1_000, 5_000));
    let charges: Vec<&str> = priced
        .lines()
        .iter()
        .filter_map(|line| line.charge().map(|charge| charge.as_str()))
        .collect();
    assert_eq!(charges, ["platform", "tokens", "support"]);
    assert_eq!(priced.total().unwrap(), usd(dec!(710.00)));
}

#[test]
fn a_phase_discount_starts_with_its_phase_and_its_override_wins_over_the_base_one() {
    let mut spec = spec();
    spec.base.overrides = vec![unit_price_override("tokens", dec!(0.008), None)];
    spec.ramp = vec![RampPhase {
        name: "Q2 promotion".into(),
        starts_at: at(2026, 4, 1),
        ends_at: Some(at(2026, 7, 1)),
        terms: TermSet {
            overrides: vec![unit_price_override("tokens", dec!(0.006), None)],
            discounts: vec![percent_off(
                "Half off",
                dec!(50),
                on(&["tokens"]),
                DiscountDuration::Periods { count: 2 },
            )],
            ..TermSet::default()
        },
    }];
    let terms = terms(spec);
    // (period, tokens line for 10 000 tokens, the override's term)
    let table = [
        (month(2026, 3), dec!(80.00), "overrides[0]"),
        (month(2026, 4), dec!(30.00), "ramp[0].overrides[0]"),
        (month(2026, 5), dec!(30.00), "ramp[0].overrides[0]"),
        (month(2026, 6), dec!(60.00), "ramp[0].overrides[0]"),
        (month(2026, 7), dec!(80.00), "overrides[0]"),
    ];
    for (period, tokens, override_term) in table {
        let priced = bill(&terms, period, &usage(10_000, 0));
        let line = priced.line(&code("tokens")).unwrap();
        assert_eq!(line.amount().amount(), tokens, "{period}");
        assert!(
            matches!(&line.steps()[0], TermStep::PriceOverride { term, .. } if term == override_term),
            "{period}"
        );
    }
}

#[test]
fn the_plan_minimum_applies_until_a_phase_sets_its_own() {
    let plan = Plan::new(PlanSpec {
        minimum_commitment: Some(dec!(200)),
        ..plan().spec().clone()
    })
    .unwrap();
    let mut spec = spec();
    spec.ramp = vec![RampPhase {
        name: "Committed".into(),
        starts_at: at(2026, 4, 1),
        ends_at: None,
        terms: TermSet {
            minimum: Some(usd(dec!(300))),
            ..TermSet::default()
        },
    }];
    let terms = SubscriptionTerms::new(spec, &plan).unwrap();
    // (period, true-up for 10 000 tokens, the minimum's term)
    let table = [
        (month(2026, 1), dec!(100.00), "plan.minimum_commitment"),
        (month(2026, 4), dec!(200.00), "ramp[0].minimum"),
    ];
    for (period, true_up, minimum_term) in table {
        let priced = bill(&terms, period, &usage(10_000, 0));
        let line = priced.line_of_kind(TermsLineKind::MinimumTrueUp).unwrap();
        assert_eq!(line.amount().amount(), true_up, "{period}");
        assert!(matches!(
            &line.steps()[0],
            TermStep::MinimumCommitment { term, .. } if term == minimum_term
        ));
    }
}

#[test]
fn an_override_with_its_own_price_and_a_negative_net_quantity() {
    let mut spec = spec();
    let capped = ChargePrice::new(ChargePriceSpec {
        maximum: Some(dec!(50)),
        ..ChargePriceSpec::plain(PriceModel::PerUnit(
            PerUnit::new(PerUnitSpec {
                unit_price: dec!(0.02),
            })
            .unwrap(),
        ))
    })
    .unwrap();
    spec.base.overrides = vec![PriceOverride {
        charge: code("tokens"),
        price: OverridePrice::Price { price: capped },
        starts_at: None,
        ends_at: None,
    }];
    let terms = terms(spec);
    let priced = bill(&terms, month(2026, 1), &usage(10_000, 0));
    let tokens = priced.line(&code("tokens")).unwrap();
    assert_eq!(tokens.amount().amount(), dec!(50.00));
    let breakdown = tokens.price_breakdown().unwrap();
    assert!(matches!(
        breakdown.items().last(),
        Some(BreakdownItem::Maximum { adjustment, .. }) if *adjustment == dec!(-150)
    ));
    // A net reading below zero prices as zero, as in rating.
    let priced = bill(&terms, month(2026, 1), &usage(-500, 0));
    assert_eq!(line_amount(&priced, "tokens"), dec!(0.00));
}
