//! Contract terms on the wire: read into the domain's spec, checked by the domain against
//! the plan version, written back unchanged; a broken rule is a violation on the term's path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use tally_domain::money::Currency;
use tally_domain::subscription::PlanRef;
use tally_domain::terms::SubscriptionTerms;
use tally_proto::common::{Decimal, Money};
use tally_proto::convert::catalog::plan_version;
use tally_proto::convert::terms::{
    TermsContext, subscription_terms, subscription_terms_value, terms_violation,
};
use tally_proto::convert::{rule, timestamp};
use tally_proto::invoicing::{self as wire, discount, price_override};
use tally_proto::rating;

fn decimal(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.into(),
    })
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

fn per_unit(unit_price: &str) -> Option<rating::Price> {
    Some(rating::Price {
        model: Some(rating::price::Model::PerUnit(rating::PerUnitPrice {
            unit_price: decimal(unit_price),
        })),
    })
}

/// `plan_ai` v1: tokens at 0.00002 per unit, a 500.00 platform fee in advance.
fn plan() -> rating::PlanVersion {
    rating::PlanVersion {
        id: "pv_ai1".into(),
        plan_id: "plan_ai".into(),
        version: 1,
        status: rating::PlanVersionStatus::Published.into(),
        spec: Some(rating::PlanVersionSpec {
            currency: "USD".into(),
            billing_interval: rating::BillingInterval::Month.into(),
            interval_count: 1,
            charges: vec![
                rating::Charge {
                    key: "tokens".into(),
                    name: "Tokens".into(),
                    meter_code: "tokens".into(),
                    billing_timing: rating::BillingTiming::InArrears.into(),
                    price: per_unit("0.00002"),
                    ..Default::default()
                },
                rating::Charge {
                    key: "platform".into(),
                    name: "Platform".into(),
                    billing_timing: rating::BillingTiming::InAdvance.into(),
                    price: Some(rating::Price {
                        model: Some(rating::price::Model::FlatFee(rating::FlatFeePrice {
                            amount: usd("500.00"),
                        })),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn context() -> TermsContext {
    TermsContext {
        plan: PlanRef {
            plan: "plan_ai".parse().unwrap(),
            version: 1,
        },
        currency: Currency::USD,
        starts_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    }
}

/// An AI-inference deal: tokens at 0.000015 for 12 months, 20 % off for 3 periods, 1M
/// free tokens, a 1,000.00 minimum, and a second-year ramp phase with a 2,000.00 minimum.
fn deal() -> wire::SubscriptionTerms {
    let year_two = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    wire::SubscriptionTerms {
        overrides: vec![wire::PriceOverride {
            charge_key: "tokens".into(),
            price: Some(price_override::Price::UnitPrice(
                decimal("0.000015").unwrap(),
            )),
            starts_at: None,
            ends_at: Some(timestamp(year_two)),
        }],
        discounts: vec![wire::Discount {
            name: "Launch".into(),
            value: Some(discount::Value::Percent(decimal("20").unwrap())),
            charge_keys: Vec::new(),
            starts_at: None,
            duration: Some(discount::Duration::Periods(3)),
        }],
        usage_discounts: vec![wire::UsageDiscount {
            name: "1M tokens included".into(),
            meter_code: "tokens".into(),
            free_units: decimal("1000000"),
        }],
        minimum: usd("1000.00"),
        ramp: vec![wire::RampPhase {
            name: "Year 2".into(),
            starts_at: Some(timestamp(year_two)),
            minimum: usd("2000.00"),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn terms_read_check_and_write_back_unchanged() {
    let plan = plan_version(&plan()).unwrap();
    let spec = subscription_terms(&deal(), context(), "terms").unwrap();
    let terms = SubscriptionTerms::new(spec.clone(), &plan).unwrap();
    assert_eq!(terms.spec(), &spec);
    assert_eq!(subscription_terms_value(&spec), deal());
    // An added charge and a whole-price override survive the round trip too.
    let mut with_prices = deal();
    with_prices.added_charges = vec![rating::Charge {
        key: "support".into(),
        name: "Premium support".into(),
        billing_timing: rating::BillingTiming::InAdvance.into(),
        price: per_unit("300"),
        ..Default::default()
    }];
    with_prices.overrides[0].price = Some(price_override::Price::ChargePrice(
        wire::OverrideChargePrice {
            price: per_unit("0.00001"),
            included_quantity: decimal("500"),
            minimum_amount: usd("5.00"),
            maximum_amount: None,
        },
    ));
    let spec = subscription_terms(&with_prices, context(), "terms").unwrap();
    SubscriptionTerms::new(spec.clone(), &plan).unwrap();
    assert_eq!(subscription_terms_value(&spec), with_prices);
}

#[test]
fn a_broken_term_is_a_violation_on_its_path() {
    let plan = plan_version(&plan()).unwrap();
    let check = |terms: wire::SubscriptionTerms| {
        let spec = subscription_terms(&terms, context(), "terms")
            .map_err(|violation| (violation.field, violation.rule))?;
        SubscriptionTerms::new(spec, &plan)
            .map(|_| ())
            .map_err(|error| {
                let violation = terms_violation(&error, "terms");
                (violation.field, violation.rule)
            })
    };
    let mut unknown = deal();
    unknown.ramp[0].overrides = vec![wire::PriceOverride {
        charge_key: "images".into(),
        price: Some(price_override::Price::UnitPrice(decimal("1").unwrap())),
        ..Default::default()
    }];
    assert_eq!(
        check(unknown),
        Err(("terms.ramp[0].overrides[0]".into(), rule::INVALID_TERMS))
    );
    let mut euros = deal();
    euros.minimum = Some(Money {
        currency: "EUR".into(),
        amount: "1000.00".into(),
    });
    assert_eq!(
        check(euros),
        Err(("terms.minimum.currency".into(), rule::CURRENCY_MISMATCH))
    );
    let mut too_much = deal();
    too_much.discounts[0].value = Some(discount::Value::Percent(decimal("120").unwrap()));
    assert_eq!(
        check(too_much),
        Err(("terms.discounts[0]".into(), rule::INVALID_TERMS))
    );
    let mut no_price = deal();
    no_price.overrides[0].price = None;
    assert_eq!(
        check(no_price),
        Err(("terms.overrides[0]".into(), rule::REQUIRED))
    );
    let mut bad_decimal = deal();
    bad_decimal.usage_discounts[0].free_units = decimal("1e6");
    assert_eq!(
        check(bad_decimal),
        Err((
            "terms.usage_discounts[0].free_units".into(),
            rule::INVALID_DECIMAL
        ))
    );
}
