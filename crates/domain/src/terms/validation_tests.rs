//! One row per validation rule: the broken term, and the error that names it.

use rust_decimal_macros::dec;

use super::fixtures::{
    amount_off, at, code, meter, on, percent_off, plan, spec, unit_price_override, usd,
};
use super::*;
use crate::money::Money;
use crate::plan::ChargeKind;

type Edit = Box<dyn Fn(&mut SubscriptionTermsSpec)>;

fn phase(starts_at: (i32, u32), ends_at: Option<(i32, u32)>, terms: TermSet) -> RampPhase {
    RampPhase {
        name: "Phase".into(),
        starts_at: at(starts_at.0, starts_at.1, 1),
        ends_at: ends_at.map(|(year, month)| at(year, month, 1)),
        terms,
    }
}

fn charge_rows() -> Vec<(&'static str, Edit, TermsError)> {
    let eur = Money::new(dec!(10), crate::money::Currency::EUR);
    let term = |text: &str| text.to_owned();
    vec![
        (
            "another plan version",
            Box::new(|spec| spec.plan.version = 2),
            TermsError::PlanMismatch {
                terms: crate::subscription::PlanRef {
                    plan: plan().id().clone(),
                    version: 2,
                },
                plan: (&plan()).into(),
            },
        ),
        (
            "terms in another currency",
            Box::new(|spec| spec.currency = crate::money::Currency::EUR),
            TermsError::CurrencyMismatch {
                term: term("currency"),
                expected: crate::money::Currency::USD,
                found: crate::money::Currency::EUR,
            },
        ),
        (
            "a fixed discount in another currency",
            Box::new(move |spec| {
                let mut discount = amount_off("x", dec!(1), DiscountTarget::Invoice);
                discount.value = DiscountValue::Amount { amount: eur };
                spec.base.discounts = vec![discount];
            }),
            TermsError::CurrencyMismatch {
                term: term("discounts[0]"),
                expected: crate::money::Currency::USD,
                found: crate::money::Currency::EUR,
            },
        ),
        (
            "an override of a charge the plan does not have",
            Box::new(|spec| {
                spec.base.overrides = vec![unit_price_override("gpu", dec!(1), None)];
            }),
            TermsError::UnknownCharge {
                term: term("overrides[0]"),
                charge: code("gpu"),
            },
        ),
        (
            "an override of a removed charge, in a phase",
            Box::new(|spec| {
                spec.removed_charges = vec![code("images")];
                let terms = TermSet {
                    overrides: vec![unit_price_override("images", dec!(1), None)],
                    ..TermSet::default()
                };
                spec.ramp = vec![phase((2026, 1), None, terms)];
            }),
            TermsError::RemovedCharge {
                term: term("ramp[0].overrides[0]"),
                charge: code("images"),
            },
        ),
        (
            "removing a charge the plan does not have",
            Box::new(|spec| spec.removed_charges = vec![code("gpu")]),
            TermsError::UnknownCharge {
                term: term("removed_charges[0]"),
                charge: code("gpu"),
            },
        ),
        (
            "adding a charge with a plan charge's code",
            Box::new(|spec| {
                spec.added_charges = vec![crate::plan::PlanCharge {
                    code: code("tokens"),
                    name: "Tokens again".into(),
                    kind: ChargeKind::Usage {
                        meter: meter("tokens"),
                    },
                    price: super::fixtures::per_unit(dec!(1)),
                }];
            }),
            TermsError::DuplicateCharge {
                term: term("added_charges[0]"),
                charge: code("tokens"),
            },
        ),
    ]
}

fn amount_rows() -> Vec<(&'static str, Edit, TermsError)> {
    let term = |text: &str| text.to_owned();
    vec![
        (
            "a percentage above 100",
            Box::new(|spec| {
                spec.base.discounts = vec![percent_off(
                    "x",
                    dec!(120),
                    DiscountTarget::Invoice,
                    DiscountDuration::Forever,
                )];
            }),
            TermsError::PercentageOutOfRange {
                term: term("discounts[0]"),
                percent: dec!(120),
            },
        ),
        (
            "a negative percentage",
            Box::new(|spec| {
                spec.base.discounts = vec![percent_off(
                    "x",
                    dec!(-5),
                    on(&["tokens"]),
                    DiscountDuration::Forever,
                )];
            }),
            TermsError::PercentageOutOfRange {
                term: term("discounts[0]"),
                percent: dec!(-5),
            },
        ),
        (
            "a negative fixed discount",
            Box::new(|spec| {
                spec.base.discounts = vec![amount_off("x", dec!(-1), DiscountTarget::Invoice)];
            }),
            TermsError::NegativeAmount {
                term: term("discounts[0]"),
                amount: usd(dec!(-1)),
            },
        ),
        (
            "a fixed discount in fractions of a cent",
            Box::new(|spec| {
                spec.base.discounts = vec![amount_off("x", dec!(10.005), DiscountTarget::Invoice)];
            }),
            TermsError::NotInMinorUnits {
                term: term("discounts[0]"),
                amount: usd(dec!(10.005)),
            },
        ),
        (
            "a discount on a charge the plan does not have",
            Box::new(|spec| {
                spec.base.discounts = vec![amount_off("x", dec!(1), on(&["gpu"]))];
            }),
            TermsError::UnknownCharge {
                term: term("discounts[0]"),
                charge: code("gpu"),
            },
        ),
        (
            "a negative minimum",
            Box::new(|spec| spec.base.minimum = Some(usd(dec!(-100)))),
            TermsError::NegativeAmount {
                term: term("minimum"),
                amount: usd(dec!(-100)),
            },
        ),
        (
            "a minimum above the maximum",
            Box::new(|spec| {
                spec.base.minimum = Some(usd(dec!(200)));
                spec.base.maximum = Some(usd(dec!(100)));
            }),
            TermsError::MinimumAboveMaximum {
                term: term("base"),
                minimum: usd(dec!(200)),
                maximum: usd(dec!(100)),
            },
        ),
        (
            "a phase's minimum above the base maximum",
            Box::new(|spec| {
                spec.base.maximum = Some(usd(dec!(100)));
                let terms = TermSet {
                    minimum: Some(usd(dec!(150))),
                    ..TermSet::default()
                };
                spec.ramp = vec![phase((2026, 1), None, terms)];
            }),
            TermsError::MinimumAboveMaximum {
                term: term("ramp[0]"),
                minimum: usd(dec!(150)),
                maximum: usd(dec!(100)),
            },
        ),
    ]
}

fn range_rows() -> Vec<(&'static str, Edit, TermsError)> {
    let term = |text: &str| text.to_owned();
    vec![
        (
            "overlapping ramp phases",
            Box::new(|spec| {
                spec.ramp = vec![
                    phase((2026, 1), Some((2026, 4)), TermSet::default()),
                    phase((2026, 3), Some((2027, 1)), TermSet::default()),
                ];
            }),
            TermsError::OverlappingPhases {
                first: 0,
                second: 1,
            },
        ),
        (
            "an empty ramp phase",
            Box::new(|spec| {
                spec.ramp = vec![phase((2026, 4), Some((2026, 4)), TermSet::default())];
            }),
            TermsError::EmptyRange {
                term: term("ramp[0]"),
                starts_at: at(2026, 4, 1),
                ends_at: at(2026, 4, 1),
            },
        ),
        (
            "two overrides of one charge at once",
            Box::new(|spec| {
                spec.base.overrides = vec![
                    unit_price_override("tokens", dec!(0.008), Some(at(2027, 1, 1))),
                    unit_price_override("tokens", dec!(0.009), None),
                ];
            }),
            TermsError::OverlappingOverrides {
                term: term("overrides[1]"),
                other: term("overrides[0]"),
                charge: code("tokens"),
            },
        ),
        (
            "a negative unit price",
            Box::new(|spec| {
                spec.base.overrides = vec![unit_price_override("tokens", dec!(-0.01), None)];
            }),
            TermsError::InvalidPrice {
                term: term("overrides[0]"),
                source: crate::pricing::PricingError::NegativeAmount {
                    field: "unit_price".into(),
                    value: dec!(-0.01),
                },
            },
        ),
        (
            "free units of a meter no charge reads",
            Box::new(|spec| {
                spec.base.usage_discounts = vec![UsageDiscount {
                    name: "x".into(),
                    meter: meter("gpu"),
                    free_units: dec!(10),
                }];
            }),
            TermsError::MeterNotPricedOnUnits {
                term: term("usage_discounts[0]"),
                meter: meter("gpu"),
            },
        ),
        (
            "negative free units",
            Box::new(|spec| {
                spec.base.usage_discounts = vec![UsageDiscount {
                    name: "x".into(),
                    meter: meter("tokens"),
                    free_units: dec!(-10),
                }];
            }),
            TermsError::NegativeQuantity {
                term: term("usage_discounts[0]"),
                quantity: dec!(-10),
            },
        ),
        (
            "a discount for zero periods",
            Box::new(|spec| {
                spec.base.discounts = vec![percent_off(
                    "x",
                    dec!(5),
                    DiscountTarget::Invoice,
                    DiscountDuration::Periods { count: 0 },
                )];
            }),
            TermsError::ZeroPeriods {
                term: term("discounts[0]"),
            },
        ),
        (
            "a discount starting before the contract",
            Box::new(|spec| {
                let mut discount = amount_off("x", dec!(1), DiscountTarget::Invoice);
                discount.starts_at = Some(at(2025, 12, 1));
                spec.base.discounts = vec![discount];
            }),
            TermsError::BeforeContractStart {
                term: term("discounts[0]"),
                at: at(2025, 12, 1),
                contract_start: at(2026, 1, 1),
            },
        ),
        (
            "an invoicing threshold of zero",
            Box::new(|spec| spec.invoicing_threshold = Some(usd(dec!(0)))),
            TermsError::NotPositive {
                term: term("invoicing_threshold"),
                amount: usd(dec!(0)),
            },
        ),
    ]
}

#[test]
fn each_rule_names_the_broken_term() {
    let rows = charge_rows()
        .into_iter()
        .chain(amount_rows())
        .chain(range_rows());
    for (rule, edit, expected) in rows {
        let mut broken = spec();
        edit(&mut broken);
        assert_eq!(
            SubscriptionTerms::new(broken, &plan()),
            Err(expected),
            "{rule}"
        );
    }
    assert!(SubscriptionTerms::new(spec(), &plan()).is_ok());
}
