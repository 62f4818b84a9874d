//! Scenario tables in exact cents, one per kind of term, and the validation rules.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::fixtures::{
    amount_off, at, code, meter, month, on, percent_off, spec, terms, unit_price_override, usage,
    usd,
};
use super::*;
use crate::money::RoundingMode;
use crate::period::Period;

const ROUNDING: RoundingMode = RoundingMode::HalfEven;

fn bill(terms: &SubscriptionTerms, period: Period, usage: &PeriodUsage) -> PricedPeriod {
    let effective = terms_for_period(terms, &period).unwrap();
    price_period(&effective, usage, ROUNDING, PricingScope::WholePeriod).unwrap()
}

fn line_amount(priced: &PricedPeriod, charge: &str) -> Decimal {
    priced.line(&code(charge)).unwrap().amount().amount()
}

fn total(priced: &PricedPeriod) -> Decimal {
    priced.total().unwrap().amount()
}

#[test]
fn an_override_for_twelve_months_then_the_list_price() {
    let mut spec = spec();
    spec.base.overrides = vec![unit_price_override(
        "tokens",
        dec!(0.008),
        Some(at(2027, 1, 1)),
    )];
    let terms = terms(spec);
    // (period, period number, tokens line for 10 000 tokens)
    let table = [
        (month(2026, 1), 1, dec!(80.00)),
        (month(2026, 6), 6, dec!(80.00)),
        (month(2026, 12), 12, dec!(80.00)),
        (month(2027, 1), 13, dec!(100.00)),
        (month(2027, 2), 14, dec!(100.00)),
    ];
    for (period, number, tokens) in table {
        let effective = terms_for_period(&terms, &period).unwrap();
        assert_eq!(effective.period_number(), number, "{period}");
        let priced = bill(&terms, period, &usage(10_000, 0));
        assert_eq!(line_amount(&priced, "tokens"), tokens, "{period}");
        assert_eq!(total(&priced), dec!(500) + tokens, "{period}");
    }
    let january = bill(&terms, month(2026, 1), &usage(10_000, 0));
    assert!(matches!(
        &january.line(&code("tokens")).unwrap().steps()[0],
        TermStep::PriceOverride { term, list_amount, .. }
            if term == "overrides[0]" && *list_amount == dec!(100.00)
    ));
    let january_2027 = bill(&terms, month(2027, 1), &usage(10_000, 0));
    assert!(matches!(
        &january_2027.line(&code("tokens")).unwrap().steps()[0],
        TermStep::ListPrice { .. }
    ));
}

#[test]
fn a_twenty_percent_discount_for_three_periods_then_none() {
    let mut spec = spec();
    spec.base.discounts = vec![percent_off(
        "Launch",
        dec!(20),
        DiscountTarget::Invoice,
        DiscountDuration::Periods { count: 3 },
    )];
    let terms = terms(spec);
    // (period, platform, tokens for 12 345 tokens, total)
    let table = [
        (month(2026, 1), dec!(400.00), dec!(98.76), dec!(498.76)),
        (month(2026, 2), dec!(400.00), dec!(98.76), dec!(498.76)),
        (month(2026, 3), dec!(400.00), dec!(98.76), dec!(498.76)),
        (month(2026, 4), dec!(500.00), dec!(123.45), dec!(623.45)),
        (month(2026, 5), dec!(500.00), dec!(123.45), dec!(623.45)),
    ];
    for (period, platform, tokens, expected_total) in table {
        let priced = bill(&terms, period, &usage(12_345, 0));
        assert_eq!(line_amount(&priced, "platform"), platform, "{period}");
        assert_eq!(line_amount(&priced, "tokens"), tokens, "{period}");
        assert_eq!(total(&priced), expected_total, "{period}");
    }
}

#[test]
fn a_discount_counts_periods_from_its_own_start_and_until_a_date() {
    let mut spec = spec();
    let mut from_march = percent_off(
        "Spring",
        dec!(50),
        on(&["platform"]),
        DiscountDuration::Periods { count: 2 },
    );
    // Mid-period: the first period it applies to is April.
    from_march.starts_at = Some(at(2026, 3, 10));
    let until_may = percent_off(
        "Pilot",
        dec!(10),
        on(&["tokens"]),
        DiscountDuration::Until {
            ends_at: at(2026, 5, 1),
        },
    );
    spec.base.discounts = vec![from_march, until_may];
    let terms = terms(spec);
    // (period, platform, tokens for 1 000 tokens)
    let table = [
        (month(2026, 3), dec!(500.00), dec!(9.00)),
        (month(2026, 4), dec!(250.00), dec!(9.00)),
        (month(2026, 5), dec!(250.00), dec!(10.00)),
        (month(2026, 6), dec!(500.00), dec!(10.00)),
    ];
    for (period, platform, tokens) in table {
        let priced = bill(&terms, period, &usage(1_000, 0));
        assert_eq!(line_amount(&priced, "platform"), platform, "{period}");
        assert_eq!(line_amount(&priced, "tokens"), tokens, "{period}");
    }
}

#[test]
fn a_fixed_discount_comes_after_a_percentage_whatever_the_order_written() {
    // 100 000 tokens = 1 000.00; 10 % off is 900.00; then 30.00 off is 870.00.
    // The other order would give (1 000.00 − 30.00) × 90 % = 873.00.
    let fixed = amount_off("Credit", dec!(30), on(&["tokens"]));
    let percentage = percent_off(
        "Volume",
        dec!(10),
        on(&["tokens"]),
        DiscountDuration::Forever,
    );
    for discounts in [
        vec![fixed.clone(), percentage.clone()],
        vec![percentage, fixed],
    ] {
        let mut spec = spec();
        spec.base.discounts = discounts;
        let priced = bill(&terms(spec), month(2026, 1), &usage(100_000, 0));
        let tokens = priced.line(&code("tokens")).unwrap();
        assert_eq!(tokens.amount().amount(), dec!(870.00));
        let kinds: Vec<&str> = tokens
            .steps()
            .iter()
            .map(|step| match step {
                TermStep::ListPrice { .. } => "list",
                TermStep::PercentageDiscount { amount, .. } => {
                    assert_eq!(*amount, dec!(-100.00));
                    "percentage"
                }
                TermStep::FixedDiscount { amount, .. } => {
                    assert_eq!(*amount, dec!(-30));
                    "fixed"
                }
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["list", "percentage", "fixed"]);
    }
}

#[test]
fn an_invoice_fixed_discount_is_spread_over_lines_and_never_pays_out() {
    // platform 500.00, tokens 33.33, images 10 × 0.05 = 0.50: 100.00 off in proportion.
    let mut spec = spec();
    spec.base.discounts = vec![amount_off("Goodwill", dec!(100), DiscountTarget::Invoice)];
    let terms = terms(spec);
    let priced = bill(&terms, month(2026, 1), &usage(3_333, 10));
    // 100.00 × 500 / 533.83 = 93.66…, × 33.33 / 533.83 = 6.24…, × 0.50 / 533.83 = 0.09…
    assert_eq!(line_amount(&priced, "platform"), dec!(406.34));
    assert_eq!(line_amount(&priced, "tokens"), dec!(27.09));
    assert_eq!(line_amount(&priced, "images"), dec!(0.40));
    assert_eq!(total(&priced), dec!(433.83));
    let mut spec = super::fixtures::spec();
    spec.base.discounts = vec![amount_off("Too much", dec!(10000), on(&["tokens"]))];
    let priced = bill(
        &super::fixtures::terms(spec),
        month(2026, 1),
        &usage(3_333, 0),
    );
    assert_eq!(line_amount(&priced, "tokens"), dec!(0.00));
    assert_eq!(total(&priced), dec!(500.00));
}

#[test]
fn free_units_are_used_once_across_the_progressive_invoices_of_a_period() {
    let mut spec = spec();
    spec.base.usage_discounts = vec![UsageDiscount {
        name: "1 000 tokens included".into(),
        meter: meter("tokens"),
        free_units: dec!(1000),
    }];
    spec.invoicing_threshold = Some(usd(dec!(20)));
    let terms = terms(spec);
    let effective = terms_for_period(&terms, &month(2026, 1)).unwrap();
    let mut billed = Vec::new();
    // (tokens so far, threshold invoice due)
    let table = [
        (2_500, None),
        (3_500, Some(dec!(25.00))),
        (4_000, None),
        (6_000, Some(dec!(25.00))),
    ];
    for (tokens, due) in table {
        let invoice = threshold_invoice(&effective, &usage(tokens, 0), &billed, ROUNDING).unwrap();
        assert_eq!(invoice.as_ref().map(total), due, "{tokens} tokens");
        if let Some(invoice) = invoice {
            let tokens_line = invoice.line(&code("tokens")).unwrap();
            assert!(matches!(
                tokens_line.steps()[0],
                TermStep::FreeUnits { quantity, .. } if quantity == dec!(1000)
            ));
            billed.push(invoice.total().unwrap());
        }
    }
    // Period end: 10 000 tokens → (10 000 − 1 000) × 0.01 = 90.00, + 500.00 platform, − 50.00.
    let last = period_end_invoice(&effective, &usage(10_000, 0), &billed, ROUNDING).unwrap();
    assert_eq!(line_amount(&last, "tokens"), dec!(90.00));
    let deduction = last.line_of_kind(TermsLineKind::BilledEarlier).unwrap();
    assert_eq!(deduction.amount().amount(), dec!(-50.00));
    assert_eq!(total(&last), dec!(540.00));
    // 25.00 + 25.00 + 540.00 = 590.00, the period's single invoice (free units taken once).
    let single = bill(&terms, month(2026, 1), &usage(10_000, 0));
    assert_eq!(total(&single), dec!(590.00));
}

#[test]
fn a_ramp_of_two_phases() {
    let mut spec = spec();
    let phase = |name: &str, starts_at, ends_at, unit_price, platform| RampPhase {
        name: name.into(),
        starts_at,
        ends_at,
        terms: TermSet {
            overrides: vec![
                unit_price_override("tokens", unit_price, None),
                PriceOverride {
                    charge: code("platform"),
                    price: OverridePrice::Price {
                        price: super::fixtures::flat(platform),
                    },
                    starts_at: None,
                    ends_at: None,
                },
            ],
            ..TermSet::default()
        },
    };
    spec.ramp = vec![
        phase(
            "Months 1–3",
            at(2026, 1, 1),
            Some(at(2026, 4, 1)),
            dec!(0.005),
            dec!(250),
        ),
        phase(
            "Months 4–12",
            at(2026, 4, 1),
            Some(at(2027, 1, 1)),
            dec!(0.008),
            dec!(2000),
        ),
    ];
    let terms = terms(spec);
    // (period, phase, platform, tokens for 100 000 tokens)
    let table = [
        (month(2026, 1), Some("ramp[0]"), dec!(250.00), dec!(500.00)),
        (month(2026, 3), Some("ramp[0]"), dec!(250.00), dec!(500.00)),
        (month(2026, 4), Some("ramp[1]"), dec!(2000.00), dec!(800.00)),
        (
            month(2026, 12),
            Some("ramp[1]"),
            dec!(2000.00),
            dec!(800.00),
        ),
        (month(2027, 1), None, dec!(500.00), dec!(1000.00)),
    ];
    for (period, phase, platform, tokens) in table {
        let effective = terms_for_period(&terms, &period).unwrap();
        assert_eq!(
            effective.phase().map(|phase| phase.term.as_str()),
            phase,
            "{period}"
        );
        let priced = bill(&terms, period, &usage(100_000, 0));
        assert_eq!(line_amount(&priced, "platform"), platform, "{period}");
        assert_eq!(line_amount(&priced, "tokens"), tokens, "{period}");
    }
}

#[test]
fn a_minimum_commitment_trues_up_and_is_prorated_for_a_stub() {
    let mut spec = spec();
    spec.base.minimum = Some(usd(dec!(1000)));
    // A calendar plan started on 16 March: the stub is 16 – 31 March, 16 of 31 days.
    spec.starts_at = at(2026, 3, 16);
    let terms = terms(spec);
    let stub = Period::new(at(2026, 3, 16), at(2026, 4, 1)).unwrap();
    // (period, tokens, tokens line, true-up, minimum this period)
    let table = [
        (stub, 10_000, dec!(100.00), Some(dec!(416.13)), dec!(516.13)),
        (stub, 60_000, dec!(600.00), None, dec!(516.13)),
        (
            month(2026, 4),
            10_000,
            dec!(100.00),
            Some(dec!(900.00)),
            dec!(1000.00),
        ),
        (month(2026, 5), 100_000, dec!(1000.00), None, dec!(1000.00)),
    ];
    for (period, tokens, tokens_line, true_up, minimum) in table {
        let effective = terms_for_period(&terms, &period).unwrap();
        assert_eq!(effective.minimum().unwrap().amount.amount(), minimum);
        let priced = bill(&terms, period, &usage(tokens, 0));
        assert_eq!(line_amount(&priced, "tokens"), tokens_line, "{period}");
        let line = priced.line_of_kind(TermsLineKind::MinimumTrueUp);
        assert_eq!(line.map(|line| line.amount().amount()), true_up, "{period}");
    }
    let priced = bill(&terms, stub, &usage(10_000, 0));
    let true_up = priced.line_of_kind(TermsLineKind::MinimumTrueUp).unwrap();
    assert_eq!(
        true_up.steps(),
        [TermStep::MinimumCommitment {
            term: "minimum".into(),
            per_period: dec!(1000),
            minimum: dec!(516.13),
            share: Some(PeriodShare {
                days: 16,
                of_days: 31
            }),
            usage: dec!(100.00),
        }]
    );
    // The recurring fee is not counted: 500.00 + 100.00 usage + 416.13 true-up.
    assert_eq!(total(&priced), dec!(1016.13));
}

#[test]
fn a_cap_takes_off_what_usage_bills_above_the_maximum() {
    let mut spec = spec();
    spec.base.maximum = Some(usd(dec!(150)));
    let terms = terms(spec);
    // (tokens, images, cap adjustment, total)
    let table = [
        (10_000, 0, None, dec!(600.00)),
        (15_000, 0, None, dec!(650.00)),
        (20_000, 0, Some(dec!(-50.00)), dec!(650.00)),
        (20_000, 2_000, Some(dec!(-110.00)), dec!(650.00)),
    ];
    for (tokens, images, adjustment, expected_total) in table {
        let priced = bill(&terms, month(2026, 1), &usage(tokens, images));
        let line = priced.line_of_kind(TermsLineKind::MaximumAdjustment);
        assert_eq!(line.map(|line| line.amount().amount()), adjustment);
        assert_eq!(total(&priced), expected_total, "{tokens} {images}");
    }
}

#[test]
fn an_invoicing_threshold_reached_twice_then_the_period_end_invoice() {
    let mut spec = spec();
    spec.invoicing_threshold = Some(usd(dec!(100)));
    spec.base.discounts = vec![percent_off(
        "Partner",
        dec!(10),
        DiscountTarget::Invoice,
        DiscountDuration::Forever,
    )];
    let terms = terms(spec);
    let effective = terms_for_period(&terms, &month(2026, 1)).unwrap();
    // (tokens so far, images so far, threshold invoice due)
    let table = [
        (5_000, 500, None),                  // 45.00 + 22.50 = 67.50
        (10_000, 900, Some(dec!(130.50))),   // 90.00 + 40.50
        (15_000, 1_000, None),               // 135.00 + 45.00 − 130.50 = 49.50
        (20_000, 3_000, Some(dec!(130.50))), // 180.00 + 81.00 − 130.50
    ];
    let mut billed = Vec::new();
    for (tokens, images, due) in table {
        let invoice =
            threshold_invoice(&effective, &usage(tokens, images), &billed, ROUNDING).unwrap();
        assert_eq!(invoice.as_ref().map(total), due, "{tokens} {images}");
        if let Some(invoice) = invoice {
            assert!(invoice.line(&code("platform")).is_none());
            billed.push(invoice.total().unwrap());
        }
    }
    // Period end: 450.00 platform + 198.00 tokens + 81.00 images − 261.00 billed.
    let last = period_end_invoice(&effective, &usage(22_000, 3_000), &billed, ROUNDING).unwrap();
    assert_eq!(total(&last), dec!(468.00));
    let single = bill(&terms, month(2026, 1), &usage(22_000, 3_000));
    assert_eq!(total(&single), dec!(729.00));
    assert_eq!(dec!(130.50) + dec!(130.50) + dec!(468.00), dec!(729.00));
    // Without a threshold there is never a threshold invoice.
    let plain = super::fixtures::terms(super::fixtures::spec());
    let effective = terms_for_period(&plain, &month(2026, 1)).unwrap();
    assert_eq!(
        threshold_invoice(&effective, &usage(1_000_000, 0), &[], ROUNDING).unwrap(),
        None
    );
}

#[test]
fn lines_become_invoice_lines_with_the_same_rounding() {
    let mut spec = spec();
    spec.base.maximum = Some(usd(dec!(10)));
    let terms = terms(spec);
    let priced = bill(&terms, month(2026, 1), &usage(1_234, 0));
    for line in priced.lines() {
        let invoice_line = line.to_invoice_line(month(2026, 1), ROUNDING).unwrap();
        assert_eq!(invoice_line.amount(), line.amount());
        assert_eq!(invoice_line.kind(), line.kind().invoice_kind());
    }
    let json = serde_json::to_string(&terms).unwrap();
    let spec: SubscriptionTermsSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(
        SubscriptionTerms::new(spec, &super::fixtures::plan()).unwrap(),
        terms
    );
}

#[test]
fn periods_off_the_contract_cycle_are_refused() {
    let terms = terms(spec());
    for period in [
        month(2025, 12),
        Period::new(at(2026, 1, 2), at(2026, 2, 1)).unwrap(),
        Period::new(at(2026, 1, 1), at(2026, 2, 2)).unwrap(),
    ] {
        assert!(
            matches!(
                terms_for_period(&terms, &period),
                Err(TermsError::PeriodNotOnCycle { .. })
            ),
            "{period}"
        );
    }
    // A last period that ends early (a cancellation) is a period of the contract.
    let last = Period::new(at(2026, 3, 1), at(2026, 3, 20)).unwrap();
    assert_eq!(terms_for_period(&terms, &last).unwrap().period_number(), 3);
}
