#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;
use crate::ids::{ChargeCode, MeterCode, PlanId};
use crate::money::Currency;
use crate::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
use crate::pricing::PriceModel;
use crate::pricing::{ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PerUnit, PerUnitSpec};
use crate::subscription::PlanRef;
use crate::terms::{OverridePrice, PriceOverride, RampPhase, SubscriptionTermsSpec, TermSet};

fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

/// A monthly AI plan: a 1 000.00 platform fee in advance, tokens at 0.000002 and a
/// 2 000.00 minimum commitment.
fn plan(interval: BillingInterval) -> Plan {
    let price = |model| ChargePrice::new(ChargePriceSpec::plain(model)).unwrap();
    Plan::new(PlanSpec {
        id: PlanId::parse("plan_ai").unwrap(),
        version: 3,
        name: "AI inference".into(),
        currency: Currency::USD,
        interval,
        anchor: AnchorPolicy::SubscriptionStart,
        trial_days: 0,
        minimum_commitment: Some(dec!(2000)),
        charges: vec![
            PlanCharge {
                code: ChargeCode::parse("platform").unwrap(),
                name: "Platform".into(),
                kind: ChargeKind::Recurring {
                    timing: BillingTiming::InAdvance,
                },
                price: price(PriceModel::Flat(
                    FlatFee::new(FlatFeeSpec { amount: dec!(1000) }).unwrap(),
                )),
            },
            PlanCharge {
                code: ChargeCode::parse("tokens").unwrap(),
                name: "Tokens".into(),
                kind: ChargeKind::Usage {
                    meter: MeterCode::parse("tokens").unwrap(),
                },
                price: price(PriceModel::PerUnit(
                    PerUnit::new(PerUnitSpec {
                        unit_price: dec!(0.000002),
                    })
                    .unwrap(),
                )),
            },
        ],
    })
    .unwrap()
}

fn terms(
    plan: &Plan,
    start: DateTime<Utc>,
    edit: impl FnOnce(&mut SubscriptionTermsSpec),
) -> SubscriptionTerms {
    let mut spec = SubscriptionTermsSpec::list_price(PlanRef::from(plan), Currency::USD, start);
    edit(&mut spec);
    SubscriptionTerms::new(spec, plan).unwrap()
}

#[test]
fn the_machine_allows_only_the_documented_moves() {
    use QuoteStatus::{Accepted, Canceled, Declined, Draft, Expired, Open};
    let all = [Draft, Open, Accepted, Declined, Expired, Canceled];
    let allowed = [
        (Draft, Open),
        (Draft, Canceled),
        (Open, Accepted),
        (Open, Declined),
        (Open, Expired),
        (Open, Canceled),
    ];
    for from in all {
        for to in all {
            assert_eq!(
                from.can_transition_to(to),
                allowed.contains(&(from, to)),
                "{from} → {to}"
            );
        }
    }
    assert_eq!(
        Accepted.transition(Canceled),
        Err(QuoteError::Transition {
            from: Accepted,
            to: Canceled
        })
    );
}

#[test]
fn an_open_quote_expires_at_its_expiry_instant() {
    let expiry = at(2027, 1, 31);
    assert_eq!(
        QuoteStatus::Open.at(expiry, at(2027, 1, 30)),
        QuoteStatus::Open
    );
    assert_eq!(QuoteStatus::Open.at(expiry, expiry), QuoteStatus::Expired);
    assert_eq!(
        QuoteStatus::Accepted.at(expiry, at(2027, 3, 1)),
        QuoteStatus::Accepted
    );
    assert_eq!(
        QuoteStatus::Draft.at(expiry, at(2027, 3, 1)),
        QuoteStatus::Draft
    );
}

#[test]
fn the_term_is_whole_billing_periods() {
    let monthly = terms(&plan(BillingInterval::Month), at(2027, 1, 31), |_| {});
    assert_eq!(contract_end(&monthly, 1).unwrap(), at(2027, 2, 28));
    assert_eq!(contract_end(&monthly, 13).unwrap(), at(2028, 2, 29));
    let quarterly = terms(&plan(BillingInterval::Quarter), at(2027, 1, 1), |_| {});
    assert_eq!(contract_end(&quarterly, 12).unwrap(), at(2028, 1, 1));
    for (terms, months) in [(&quarterly, 4), (&monthly, 0), (&monthly, 121)] {
        assert!(matches!(
            contract_end(terms, months),
            Err(QuoteError::TermNotWholePeriods { .. })
        ));
    }
    let weekly = terms(&plan(BillingInterval::Week), at(2027, 1, 1), |_| {});
    assert!(contract_end(&weekly, 12).is_err());
}

/// A negotiated deal: months 1–3 at a 5 000.00 minimum and the platform fee at 600.00,
/// months 4–12 at a 20 000.00 minimum; the preview is committed spend, to the cent.
#[test]
fn a_ramp_previews_each_period_and_the_total_in_exact_cents() {
    let plan = plan(BillingInterval::Month);
    let start = at(2027, 1, 1);
    let terms = terms(&plan, start, |spec| {
        spec.ramp = vec![
            RampPhase {
                name: "Months 1–3".into(),
                starts_at: start,
                ends_at: Some(at(2027, 4, 1)),
                terms: TermSet {
                    overrides: vec![PriceOverride {
                        charge: ChargeCode::parse("platform").unwrap(),
                        price: OverridePrice::UnitPrice {
                            unit_price: dec!(600),
                        },
                        starts_at: None,
                        ends_at: None,
                    }],
                    minimum: Some(usd(dec!(5000))),
                    ..TermSet::default()
                },
            },
            RampPhase {
                name: "Months 4–12".into(),
                starts_at: at(2027, 4, 1),
                ends_at: None,
                terms: TermSet {
                    minimum: Some(usd(dec!(20000))),
                    ..TermSet::default()
                },
            },
        ];
    });
    let end = contract_end(&terms, 12).unwrap();
    assert_eq!(end, at(2028, 1, 1));
    let preview = preview(&terms, end, RoundingMode::HalfEven).unwrap();
    let amounts: Vec<Decimal> = preview.periods.iter().map(|p| p.amount.amount()).collect();
    let mut expected = vec![dec!(5600.00); 3];
    expected.extend([dec!(21000.00); 9]);
    assert_eq!(amounts, expected);
    assert_eq!(preview.periods[0].phase.as_deref(), Some("Months 1–3"));
    assert_eq!(preview.periods[3].phase.as_deref(), Some("Months 4–12"));
    assert_eq!(preview.first_period, usd(dec!(5600.00)));
    assert_eq!(preview.recurring, None);
    assert_eq!(preview.total_contract_value, usd(dec!(205800.00)));
}

#[test]
fn list_price_recurs_and_a_co_terminated_end_must_be_a_boundary() {
    let plan = plan(BillingInterval::Month);
    // An amendment starting on the 15th of a contract anchored on the 15th, ending with it.
    let terms = terms(&plan, at(2027, 3, 15), |_| {});
    let preview = preview(&terms, at(2027, 9, 15), RoundingMode::HalfEven).unwrap();
    assert_eq!(preview.periods.len(), 6);
    assert_eq!(preview.recurring, Some(usd(dec!(3000.00))));
    assert_eq!(preview.total_contract_value, usd(dec!(18000.00)));
    assert!(matches!(
        preview_of(&terms, at(2027, 9, 1)),
        Err(QuoteError::EndNotOnCycle { .. })
    ));
    assert!(matches!(
        preview_of(&terms, at(2027, 3, 15)),
        Err(QuoteError::EmptyContract { .. })
    ));
}

fn preview_of(terms: &SubscriptionTerms, end: DateTime<Utc>) -> Result<QuotePreview, QuoteError> {
    preview(terms, end, RoundingMode::HalfEven)
}
