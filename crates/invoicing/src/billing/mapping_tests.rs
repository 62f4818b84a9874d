//! Every explanation and every price model reads back from the model (and
//! from its stored JSON) exactly as it was written on the wire, and a wire
//! value the model has no place for is refused.

use std::collections::HashMap;

use tally_proto::common;
use tally_proto::invoicing::{self as wire, invoice_line::Detail};
use tally_proto::rating::{self, price::Model};

use super::{explanation_from_wire, explanation_to_wire};
use crate::billing::model::Explanation;
use crate::wire::time_range;

fn decimal(text: &str) -> Option<common::Decimal> {
    Some(common::Decimal { value: text.into() })
}

fn usd(text: &str) -> Option<common::Money> {
    Some(common::Money {
        currency: "USD".into(),
        amount: text.into(),
    })
}

fn period() -> Option<common::TimeRange> {
    Some(time_range(
        chrono::DateTime::from_timestamp(1_735_689_600, 0).unwrap_or_default(),
        chrono::DateTime::from_timestamp(1_738_368_000, 0).unwrap_or_default(),
    ))
}

fn tier(up_to: Option<&str>, unit_price: &str, flat: Option<&str>) -> rating::PriceTier {
    rating::PriceTier {
        up_to: up_to.and_then(decimal),
        unit_price: decimal(unit_price),
        flat_amount: flat.and_then(usd),
    }
}

fn every_price() -> Vec<Model> {
    vec![
        Model::PerUnit(rating::PerUnitPrice {
            unit_price: decimal("0.0000021"),
        }),
        Model::Package(rating::PackagePrice {
            package_size: decimal("1000"),
            package_price: usd("2.50"),
            rounding: rating::PackageRounding::Up as i32,
            free_units: decimal("100"),
        }),
        Model::Graduated(rating::TieredPrice {
            tiers: vec![
                tier(Some("1000"), "0", None),
                tier(None, "0.0008", Some("1.00")),
            ],
        }),
        Model::Volume(rating::TieredPrice {
            tiers: vec![tier(Some("10"), "1.50", None), tier(None, "1.20", None)],
        }),
        Model::Bulk(rating::BulkPrice {
            brackets: vec![rating::BulkBracket {
                up_to: decimal("10"),
                amount: usd("9.00"),
            }],
        }),
        Model::Percentage(rating::PercentagePrice {
            rate_percent: decimal("2.9"),
            fixed_fee_per_event: usd("0.30"),
            minimum_per_event: usd("0.50"),
            maximum_per_event: None,
            free_events: 10,
            free_amount: decimal("100.00"),
            // Unset is kept unset (rating reads it as sequential).
            allowance_policy: rating::PercentageAllowancePolicy::Unspecified as i32,
        }),
        Model::Matrix(rating::MatrixPrice {
            dimensions: vec!["region".into(), "tier".into()],
            cells: vec![rating::MatrixCell {
                dimension_values: HashMap::from([
                    ("region".into(), "eu".into()),
                    ("tier".into(), "gold".into()),
                ]),
                unit_price: decimal("0.010"),
            }],
            default_unit_price: decimal("0.02"),
        }),
        Model::FlatFee(rating::FlatFeePrice {
            amount: usd("49.00"),
        }),
    ]
}

fn charge(model: Model) -> rating::UsageCharge {
    rating::UsageCharge {
        charge_key: "calls".into(),
        charge_name: "API calls".into(),
        plan_version_id: "pv_1".into(),
        meter_code: "api_calls".into(),
        aggregation: rating::Aggregation::Sum as i32,
        group: HashMap::from([("region".into(), "eu".into())]),
        period: period(),
        quantity: decimal("1234.500"),
        billable_quantity: decimal("234.5"),
        event_count: 17,
        price: Some(rating::Price { model: Some(model) }),
        breakdown: vec![rating::BreakdownStep {
            kind: rating::BreakdownStepKind::Tier as i32,
            description: "units 1,001–10,000 at 0.0008".into(),
            tier_index: 1,
            from_quantity: decimal("1000"),
            to_quantity: None,
            quantity: decimal("234.5"),
            unit_price: decimal("0.0008"),
            flat_amount: usd("1.00"),
            amount: usd("1.1876"),
        }],
        precise_amount: usd("1.1876"),
        amount: usd("1.19"),
        as_of_sequence_number: 42,
    }
}

fn every_detail() -> Vec<Detail> {
    let mut details: Vec<Detail> = every_price()
        .into_iter()
        .map(|model| {
            Detail::Usage(wire::UsageLineDetail {
                charge: Some(charge(model)),
            })
        })
        .collect();
    details.extend([
        Detail::Recurring(wire::RecurringLineDetail {
            plan_version_id: "pv_1".into(),
            charge_key: "base".into(),
            billing_timing: rating::BillingTiming::InAdvance as i32,
            period_amount: usd("40.00"),
        }),
        Detail::Proration(wire::ProrationLineDetail {
            plan_version_id: "pv_1".into(),
            charge_key: "base".into(),
            policy: wire::ProrationPolicy::ProrateByDay as i32,
            full_period: period(),
            prorated_period: period(),
            factor: decimal("0.4838709677419354838709677"),
            period_amount: usd("40.00"),
        }),
        Detail::MinimumTrueUp(wire::MinimumTrueUpLineDetail {
            minimum_commitment: usd("100.00"),
            charges_total: usd("61.19"),
            prorated_minimum: usd("51.61"),
            full_period: period(),
            prorated_period: period(),
            factor: decimal("0.5161290322580645161290323"),
        }),
        Detail::CreditsApplied(wire::CreditsAppliedLineDetail {
            applications: vec![wire::CreditApplication {
                credit_grant_id: "grant_1".into(),
                amount: usd("15.00"),
            }],
        }),
        Detail::Adjustment(wire::AdjustmentLineDetail {
            original_invoice_id: "inv_1".into(),
            original_line_id: String::new(),
            reason: "late usage after finalization".into(),
            repriced_charge: Some(charge(Model::PerUnit(rating::PerUnitPrice {
                unit_price: decimal("-0.0000021"),
            }))),
        }),
    ]);
    details
}

#[test]
fn every_explanation_reads_back_exactly_through_the_model_and_its_json() {
    for detail in every_detail() {
        let model = explanation_from_wire(&detail).unwrap();
        assert_eq!(explanation_to_wire(&model), detail);
        let json = serde_json::to_string(&model).unwrap();
        let stored: Explanation = serde_json::from_str(&json).unwrap();
        assert_eq!(stored, model, "{json}");
        assert_eq!(explanation_to_wire(&stored), detail, "{json}");
    }
}

#[test]
fn an_explanation_the_model_has_no_place_for_is_refused() {
    let unset_timing = Detail::Recurring(wire::RecurringLineDetail {
        billing_timing: 0,
        ..Default::default()
    });
    assert!(explanation_from_wire(&unset_timing).is_err());
    let mut unknown_kind = charge(Model::PerUnit(rating::PerUnitPrice::default()));
    unknown_kind.breakdown[0].kind = 99;
    let unknown_kind = Detail::Usage(wire::UsageLineDetail {
        charge: Some(unknown_kind),
    });
    assert!(explanation_from_wire(&unknown_kind).is_err());
    let bad_decimal = Detail::Proration(wire::ProrationLineDetail {
        policy: wire::ProrationPolicy::Prorate as i32,
        factor: decimal("1e3"),
        ..Default::default()
    });
    assert!(explanation_from_wire(&bad_decimal).is_err());
    let stored = r#"{"type":"recurring","plan_version_id":"pv_1","charge_key":"base","billing_timing":"someday","period_amount":null}"#;
    assert!(serde_json::from_str::<Explanation>(stored).is_err());
}
