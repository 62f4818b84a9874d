//! The catalog through its gRPC API: meters, plans, drafts, validation,
//! publication and immutability, pagination, and the loaders pricing uses.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_domain::ids::{ChargeCode, EventId};
use tally_domain::meter::{Aggregation as DomainAggregation, GroupKey};
use tally_domain::pricing::{Transaction, Usage};
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_rating::catalog::store;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn create_meter_is_idempotent_by_code() {
    let mut h = harness().await;
    let request = CreateMeterRequest {
        filters: vec![MeterFilter {
            property: "plan".into(),
            operator: FilterOperator::NotIn as i32,
            values: vec!["internal".into()],
        }],
        unit: "request".into(),
        ..meter_request("api_calls", Aggregation::Count, "")
    };
    let first = h
        .client
        .create_meter(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let meter = first.meter.unwrap();
    assert!(meter.id.starts_with("mtr_"), "{}", meter.id);
    assert_eq!(
        meter.created_at,
        Some(tally_runtime::clock_service::chrono_to_timestamp(
            start_time()
        ))
    );

    let replay = h
        .client
        .create_meter(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!replay.created, "the same request is a replay");
    assert_eq!(
        replay.meter.unwrap(),
        meter,
        "a replay returns the first result"
    );

    let different = h
        .client
        .create_meter(CreateMeterRequest {
            unit: "call".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(different.code(), Code::AlreadyExists, "{different:?}");
    assert!(
        different.message().contains("api_calls"),
        "{}",
        different.message()
    );

    for lookup in [
        get_meter_request::Lookup::Code("api_calls".into()),
        get_meter_request::Lookup::MeterId(meter.id.clone()),
    ] {
        let found = h
            .client
            .get_meter(GetMeterRequest {
                lookup: Some(lookup),
            })
            .await
            .unwrap()
            .into_inner()
            .meter
            .unwrap();
        assert_eq!(found, meter);
    }
    let missing = h
        .client
        .get_meter(GetMeterRequest {
            lookup: Some(get_meter_request::Lookup::Code("nope".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_malformed_meter_is_refused_naming_every_field() {
    let mut h = harness().await;
    let broken = CreateMeterRequest {
        filters: vec![
            MeterFilter {
                property: "region".into(),
                operator: FilterOperator::In as i32,
                values: vec![],
            },
            MeterFilter {
                property: "tier".into(),
                operator: FilterOperator::Exists as i32,
                values: vec!["gold".into()],
            },
        ],
        group_by: vec![String::new(), "model".into()],
        ..meter_request("Tokens", Aggregation::Sum, "")
    };
    let status = h.client.create_meter(broken).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("property"),
        "{}",
        status.message()
    );
    assert_eq!(
        status_pairs(&status),
        expected(&[
            ("code", "invalid_characters"),
            ("property", "required"),
            ("filters[0].values", "required"),
            ("filters[1].values", "not_allowed"),
            ("group_by[0]", "required"),
        ])
    );

    let no_aggregation = h
        .client
        .create_meter(meter_request("tokens", Aggregation::Unspecified, "tokens"))
        .await
        .unwrap_err();
    assert_eq!(
        status_pairs(&no_aggregation),
        expected(&[("aggregation", "required")])
    );
    let count_with_property = h
        .client
        .create_meter(meter_request("tokens", Aggregation::Count, "tokens"))
        .await
        .unwrap_err();
    assert_eq!(
        status_pairs(&count_with_property),
        expected(&[("property", "not_allowed")])
    );
    let unknown = h
        .client
        .create_meter(CreateMeterRequest {
            aggregation: 99,
            ..meter_request("tokens", Aggregation::Sum, "tokens")
        })
        .await
        .unwrap_err();
    assert_eq!(
        status_pairs(&unknown),
        expected(&[("aggregation", "unknown_value")])
    );
}

/// The meters the plans below use.
async fn standard_meters(h: &mut Harness) {
    h.meter(meter_request("api_calls", Aggregation::Count, ""))
        .await;
    h.meter(meter_request("exports", Aggregation::Count, ""))
        .await;
    h.meter(meter_request("payments", Aggregation::Sum, "amount"))
        .await;
    h.meter(meter_request(
        "storage_gb",
        Aggregation::TimeWeightedSum,
        "gb",
    ))
    .await;
    h.meter(CreateMeterRequest {
        group_by: vec!["model".into(), "region".into()],
        ..meter_request("llm.tokens", Aggregation::Sum, "tokens")
    })
    .await;
}

/// A version using every price model the contract offers, plus charge terms.
fn every_model() -> PlanVersionSpec {
    let mut seats = charge(
        "seats",
        "",
        BillingTiming::InAdvance,
        Model::PerUnit(PerUnitPrice {
            unit_price: decimal("10"),
        }),
    );
    seats.included_quantity = decimal("2");
    let mut api = usage(
        "api_requests",
        "api_calls",
        Model::Graduated(TieredPrice {
            tiers: vec![
                tier(Some("1000"), "0", None),
                tier(Some("10000"), "0.002", None),
                tier(None, "0.001", Some("5")),
            ],
        }),
    );
    api.minimum_amount = usd("1");
    api.maximum_amount = usd("500");
    PlanVersionSpec {
        minimum_commitment: usd("100"),
        trial_days: 14,
        description: "every model".into(),
        ..monthly(vec![
            charge(
                "platform_fee",
                "",
                BillingTiming::InAdvance,
                Model::FlatFee(FlatFeePrice {
                    amount: usd("49.00"),
                }),
            ),
            seats,
            api,
            usage(
                "api_packs",
                "api_calls",
                Model::Package(PackagePrice {
                    package_size: decimal("1000"),
                    package_price: usd("1.50"),
                    rounding: PackageRounding::Up as i32,
                    free_units: decimal("500"),
                }),
            ),
            usage(
                "storage",
                "storage_gb",
                Model::Volume(TieredPrice {
                    tiers: vec![tier(Some("100"), "0.10", None), tier(None, "0.08", None)],
                }),
            ),
            usage(
                "exports",
                "exports",
                Model::Bulk(BulkPrice {
                    brackets: vec![
                        BulkBracket {
                            up_to: decimal("10"),
                            amount: usd("0"),
                        },
                        BulkBracket {
                            up_to: decimal("100"),
                            amount: usd("25"),
                        },
                        BulkBracket {
                            up_to: None,
                            amount: usd("100"),
                        },
                    ],
                }),
            ),
            usage(
                "card_fees",
                "payments",
                Model::Percentage(PercentagePrice {
                    rate_percent: decimal("2.9"),
                    fixed_fee_per_event: usd("0.30"),
                    minimum_per_event: usd("0.50"),
                    maximum_per_event: usd("20"),
                    free_events: 10,
                    free_amount: decimal("1000"),
                    // As stored before the policy existed: sequential.
                    allowance_policy: PercentageAllowancePolicy::Unspecified as i32,
                }),
            ),
            usage(
                "tokens",
                "llm.tokens",
                Model::Matrix(MatrixPrice {
                    dimensions: vec!["region".into(), "model".into()],
                    cells: vec![
                        cell(&[("model", "large"), ("region", "eu")], "0.00003"),
                        cell(&[("model", "small"), ("region", "eu")], "0.000001"),
                    ],
                    default_unit_price: decimal("0.00005"),
                }),
            ),
        ])
    }
}

#[tokio::test]
async fn a_draft_with_every_price_model_validates_publishes_and_prices_exactly() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("pro").await;
    let draft = h.draft(&plan_id, "pro-v1", every_model()).await;
    assert!(draft.id.starts_with("pv_"), "{}", draft.id);
    assert_eq!(draft.version, 1);
    assert_eq!(draft.status, PlanVersionStatus::Draft as i32);
    assert_eq!(draft.revision, 1);
    assert_eq!(draft.spec.as_ref(), Some(&every_model()));
    assert_eq!(h.validate(&draft.id).await, (true, vec![]));
    assert!(
        store::published_version(&h.db.pool, &draft.id)
            .await
            .unwrap()
            .is_none(),
        "a draft is not priced"
    );

    h.clock.advance(chrono::Duration::minutes(5)).unwrap();
    let published = h.publish(&draft.id).await.unwrap();
    assert_eq!(published.status, PlanVersionStatus::Published as i32);
    let published_at = tally_runtime::clock_service::chrono_to_timestamp(
        start_time() + chrono::Duration::minutes(5),
    );
    assert_eq!(published.published_at, Some(published_at));
    assert_eq!(
        published.spec.as_ref(),
        Some(&every_model()),
        "the spec is kept as written"
    );
    let again = h.publish(&draft.id).await.unwrap();
    assert_eq!(
        again, published,
        "publishing a published version changes nothing"
    );
    let plan = h
        .client
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code("pro".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(plan.latest_published_version_id, draft.id);

    let loaded = store::published_version(&h.db.pool, &draft.id)
        .await
        .unwrap()
        .expect("published versions load");
    assert_eq!(
        (loaded.id.as_str(), loaded.plan_id.as_str(), loaded.version),
        (draft.id.as_str(), plan_id.as_str(), 1)
    );
    let plan = loaded.plan;
    assert_eq!(plan.id().as_str(), plan_id);
    assert_eq!(plan.version(), 1);
    assert_eq!(plan.currency().code(), "USD");
    assert_eq!(plan.charges().len(), 8);
    assert_eq!(plan.minimum_true_up(dec!(80)), Some(dec!(20)));
    let price = |code: &str, quantity: Decimal| -> Decimal {
        plan.charge(&ChargeCode::parse(code).unwrap())
            .unwrap()
            .price
            .price_quantity(quantity)
            .unwrap()
            .total()
    };
    // (charge, quantity, exact amount): worked by hand from every_model().
    let table = [
        ("platform_fee", dec!(0), dec!(49.00)),
        ("platform_fee", dec!(7), dec!(49.00)),
        ("seats", dec!(2), dec!(0)),
        ("seats", dec!(5), dec!(30)),               // 2 included
        ("api_requests", dec!(0), dec!(1)),         // raised to the minimum
        ("api_requests", dec!(1500), dec!(1.000)),  // 500 × 0.002
        ("api_requests", dec!(10000), dec!(18)),    // 9,000 × 0.002
        ("api_requests", dec!(25000), dec!(38)),    // 18 + 15,000 × 0.001 + 5
        ("api_requests", dec!(1000000), dec!(500)), // 1,013 capped
        ("api_packs", dec!(500), dec!(0)),          // all free
        ("api_packs", dec!(501), dec!(1.50)),       // one started package
        ("api_packs", dec!(2500), dec!(3.00)),
        ("api_packs", dec!(2501), dec!(4.50)),
        ("storage", dec!(50), dec!(5.00)),
        ("storage", dec!(100), dec!(10.00)),
        ("storage", dec!(100.5), dec!(8.04)), // every GB-hour at 0.08
        ("exports", dec!(10), dec!(0)),
        ("exports", dec!(11), dec!(25)),
        ("exports", dec!(101), dec!(100)),
    ];
    for (code, quantity, amount) in table {
        assert_eq!(price(code, quantity), amount, "{code} × {quantity}");
    }

    let tokens = plan.charge(&ChargeCode::parse("tokens").unwrap()).unwrap();
    let groups = BTreeMap::from([
        (
            GroupKey::from_pairs([("model", "large"), ("region", "eu")]),
            dec!(1000000),
        ),
        (
            GroupKey::from_pairs([("model", "small"), ("region", "us")]),
            dec!(2000000),
        ),
    ]);
    // 1,000,000 × 0.00003 + 2,000,000 × 0.00005 (default).
    assert_eq!(
        tokens.price.price(Usage::Grouped(&groups)).unwrap().total(),
        dec!(130)
    );

    let card_fees = plan
        .charge(&ChargeCode::parse("card_fees").unwrap())
        .unwrap();
    let payment = |index: u32, amount: Decimal| Transaction {
        event_id: EventId::parse(&format!("pay-{index:02}")).unwrap(),
        timestamp: start_time() + chrono::Duration::seconds(i64::from(index)),
        amount,
    };
    let mut payments: Vec<Transaction> = (0..10).map(|index| payment(index, dec!(100))).collect();
    payments.push(payment(10, dec!(100))); // inside the free 1,000: 0.30 → minimum 0.50
    payments.push(payment(11, dec!(2000))); // 1,100 × 2.9 % + 0.30 = 32.20 → maximum 20
    assert_eq!(
        card_fees
            .price
            .price(Usage::Transactions(&payments))
            .unwrap()
            .total(),
        dec!(20.50)
    );

    let tokens_meter = store::meter(&h.db.pool, "llm.tokens")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tokens_meter.aggregation(),
        &DomainAggregation::Sum {
            property: "tokens".into()
        }
    );
    assert_eq!(tokens_meter.spec().group_by, ["model", "region"]);
    assert!(store::meter(&h.db.pool, "nope").await.unwrap().is_none());
    let codes: Vec<String> = store::meters(&h.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|meter| meter.code().to_string())
        .collect();
    assert_eq!(
        codes,
        [
            "api_calls",
            "exports",
            "llm.tokens",
            "payments",
            "storage_gb"
        ]
    );
}

/// A draft breaking one rule per charge (and the commitment).
fn broken() -> PlanVersionSpec {
    PlanVersionSpec {
        minimum_commitment: money("EUR", "100"),
        ..monthly(vec![
            usage(
                "api",
                "api_calls",
                Model::Graduated(TieredPrice {
                    tiers: vec![
                        tier(Some("1000"), "0", None),
                        tier(Some("500"), "0.002", None),
                        tier(None, "0.001", None),
                    ],
                }),
            ),
            charge(
                "seats",
                "",
                BillingTiming::InAdvance,
                Model::PerUnit(PerUnitPrice {
                    unit_price: decimal("-1"),
                }),
            ),
            usage(
                "ghost",
                "ghost_meter",
                Model::PerUnit(PerUnitPrice {
                    unit_price: decimal("1"),
                }),
            ),
            charge(
                "fee",
                "",
                BillingTiming::InArrears,
                Model::FlatFee(FlatFeePrice {
                    amount: money("EUR", "10"),
                }),
            ),
            charge(
                "api",
                "api_calls",
                BillingTiming::InAdvance,
                Model::Bulk(BulkPrice {
                    brackets: vec![
                        BulkBracket {
                            up_to: decimal("10"),
                            amount: usd("5"),
                        },
                        BulkBracket {
                            up_to: decimal("20"),
                            amount: usd("10"),
                        },
                    ],
                }),
            ),
            usage(
                "cards",
                "api_calls",
                Model::Percentage(PercentagePrice {
                    rate_percent: decimal("150"),
                    ..Default::default()
                }),
            ),
            charge(
                "by_region",
                "",
                BillingTiming::InArrears,
                Model::Matrix(MatrixPrice {
                    default_unit_price: decimal("1"),
                    ..Default::default()
                }),
            ),
        ])
    }
}

#[tokio::test]
async fn validation_reports_every_violation_with_its_path() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("broken").await;
    let draft = h.draft(&plan_id, "broken-v1", broken()).await;
    let every = expected(&[
        ("spec.minimum_commitment.currency", "currency_mismatch"),
        (
            "spec.charges[0].price.graduated.tiers[1].up_to",
            "tiers_not_ascending",
        ),
        (
            "spec.charges[1].price.per_unit.unit_price",
            "must_not_be_negative",
        ),
        ("spec.charges[2].meter_code", "unknown_meter"),
        (
            "spec.charges[3].price.flat_fee.amount.currency",
            "currency_mismatch",
        ),
        ("spec.charges[4].key", "duplicate"),
        ("spec.charges[4].billing_timing", "usage_charge_in_arrears"),
        (
            "spec.charges[4].price.bulk.brackets[1].up_to",
            "last_tier_not_open_ended",
        ),
        ("spec.charges[5].price.percentage", "requires_sum_meter"),
        (
            "spec.charges[5].price.percentage.rate_percent",
            "rate_out_of_range",
        ),
        ("spec.charges[6].price", "not_allowed_for_recurring"),
    ]);
    assert_eq!(h.validate(&draft.id).await, (false, every.clone()));

    let refused = h.publish(&draft.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        status_pairs(&refused),
        every,
        "publish names the same violations"
    );
    let still = h
        .client
        .get_plan_version(GetPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    assert_eq!(still.status, PlanVersionStatus::Draft as i32);

    // Only malformed values stop a draft from being stored.
    let mut unparsable = broken();
    unparsable.charges[2].price = Some(Price {
        model: Some(Model::PerUnit(PerUnitPrice {
            unit_price: decimal("1,5"),
        })),
    });
    unparsable.billing_interval = 42;
    let status = h
        .client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "broken-v2".into(),
            plan_id: plan_id.clone(),
            source: Some(create_plan_version_request::Source::Spec(unparsable)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status_pairs(&status),
        expected(&[
            ("spec.billing_interval", "unknown_value"),
            (
                "spec.charges[2].price.per_unit.unit_price",
                "invalid_decimal"
            ),
        ])
    );

    // Fixing the draft makes it publishable.
    let updated = h
        .client
        .update_draft_plan_version(UpdateDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
            spec: Some(every_model()),
            expected_revision: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(h.validate(&draft.id).await, (true, vec![]));
    h.publish(&draft.id).await.unwrap();
}

#[tokio::test]
async fn a_published_version_is_immutable_and_the_next_one_is_a_draft() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("team").await;
    let first = h.draft(&plan_id, "team-v1", every_model()).await;
    h.publish(&first.id).await.unwrap();

    let refused = h
        .client
        .update_draft_plan_version(UpdateDraftPlanVersionRequest {
            plan_version_id: first.id.clone(),
            spec: Some(monthly(vec![])),
            expected_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("immutable"),
        "{}",
        refused.message()
    );

    // The database refuses too, whoever asks.
    for statement in [
        "UPDATE rating.plan_versions SET spec = '{}'::jsonb WHERE id = $1",
        "UPDATE rating.plan_versions SET content = '\\x'::bytea WHERE id = $1",
        "UPDATE rating.plan_versions SET status = 'draft', spec = NULL, published_at = NULL WHERE id = $1",
        "DELETE FROM rating.plan_versions WHERE id = $1",
    ] {
        let error = sqlx::query(statement)
            .bind(&first.id)
            .execute(&h.db.pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("published"),
            "{statement}: {error}"
        );
    }
    let error = sqlx::query("UPDATE rating.meters SET spec = '{}'::jsonb")
        .execute(&h.db.pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("immutable"), "{error}");
    let archived = sqlx::query("UPDATE rating.plan_versions SET status = 'archived' WHERE id = $1")
        .bind(&first.id)
        .execute(&h.db.pool)
        .await;
    assert!(
        archived.is_ok(),
        "published → archived is the one allowed change"
    );
    let archived_still_loads = store::published_version(&h.db.pool, &first.id)
        .await
        .unwrap();
    assert!(
        archived_still_loads.is_some(),
        "existing subscriptions keep an archived version"
    );
    let refused = h.publish(&first.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let second = h
        .client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "team-v2".into(),
            plan_id: plan_id.clone(),
            source: Some(create_plan_version_request::Source::CopyFromVersionId(
                first.id.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.status, PlanVersionStatus::Draft as i32);
    assert_eq!(
        second.spec, first.spec,
        "a copy starts from the source's spec"
    );

    let stale = h
        .client
        .update_draft_plan_version(UpdateDraftPlanVersionRequest {
            plan_version_id: second.id.clone(),
            spec: Some(monthly(vec![])),
            expected_revision: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    for (expected_revision, revision) in [(1, 2), (0, 3)] {
        let updated = h
            .client
            .update_draft_plan_version(UpdateDraftPlanVersionRequest {
                plan_version_id: second.id.clone(),
                spec: Some(monthly(vec![])),
                expected_revision,
            })
            .await
            .unwrap()
            .into_inner()
            .plan_version
            .unwrap();
        assert_eq!(updated.revision, revision);
        assert_eq!(updated.spec, Some(monthly(vec![])));
    }
    assert_eq!(
        h.validate(&second.id).await,
        (false, expected(&[("spec.charges", "required")]))
    );

    let elsewhere = h.plan("other").await;
    let foreign_copy = h
        .client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "other-v1".into(),
            plan_id: elsewhere,
            source: Some(create_plan_version_request::Source::CopyFromVersionId(
                first.id,
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(
        foreign_copy.code(),
        Code::NotFound,
        "versions are copied within a plan"
    );
}

#[tokio::test]
async fn create_plan_version_is_idempotent_by_key() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("growth").await;
    let request = |key: &str, plan_id: &str, spec: PlanVersionSpec| CreatePlanVersionRequest {
        idempotency_key: key.into(),
        plan_id: plan_id.into(),
        source: Some(create_plan_version_request::Source::Spec(spec)),
    };
    let first = h.draft(&plan_id, "growth-1", every_model()).await;
    // Built anew: its matrix maps hash in another order, the request is the same.
    let replay = h
        .client
        .create_plan_version(request("growth-1", &plan_id, every_model()))
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    assert_eq!(replay, first);

    let mut changed = every_model();
    changed.trial_days = 30;
    let conflict = h
        .client
        .create_plan_version(request("growth-1", &plan_id, changed))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    let other_plan = h.plan("growth_eu").await;
    let conflict = h
        .client
        .create_plan_version(request("growth-1", &other_plan, every_model()))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let missing_plan = h
        .client
        .create_plan_version(request("growth-2", "plan_nothere", every_model()))
        .await
        .unwrap_err();
    assert_eq!(missing_plan.code(), Code::NotFound);
    let malformed = h
        .client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: String::new(),
            plan_id: "growth".into(),
            source: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status_pairs(&malformed),
        expected(&[
            ("idempotency_key", "required"),
            ("plan_id", "invalid_prefix"),
            ("source", "required"),
        ])
    );

    let plans = h
        .client
        .create_plan(CreatePlanRequest {
            code: "growth".into(),
            name: "Plan growth".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!plans.created, "the same plan again is a replay");
    assert_eq!(plans.plan.unwrap().id, plan_id);
    let renamed = h
        .client
        .create_plan(CreatePlanRequest {
            code: "growth".into(),
            name: "Growth".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(renamed.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn lists_are_ordered_and_paginated() {
    let mut h = harness().await;
    for code in ["m_e", "m_c", "m_a", "m_d", "m_b"] {
        h.meter(meter_request(code, Aggregation::Count, "")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .client
            .list_meters(ListMetersRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.meters.into_iter().map(|meter| meter.code));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["m_a", "m_b", "m_c", "m_d", "m_e"]);
    assert_eq!(pages, 3);

    for code in ["beta", "alpha", "gamma"] {
        h.plan(code).await;
    }
    let first = h
        .client
        .list_plans(ListPlansRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<&str> = first.plans.iter().map(|plan| plan.code.as_str()).collect();
    assert_eq!(codes, ["alpha", "beta"]);
    let rest = h
        .client
        .list_plans(ListPlansRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.plans.len(), 1);
    assert_eq!(rest.plans[0].code, "gamma");
    assert!(rest.next_page_token.is_empty());

    let foreign = h
        .client
        .list_meters(ListMetersRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(
        status_pairs(&foreign),
        expected(&[("page_token", "invalid_page_token")])
    );

    standard_meters(&mut h).await;
    let plan_id = h.plan("versions").await;
    let v1 = h.draft(&plan_id, "v1", every_model()).await;
    h.publish(&v1.id).await.unwrap();
    h.draft(&plan_id, "v2", every_model()).await;
    h.draft(&plan_id, "v3", monthly(vec![])).await;
    let list = |status: PlanVersionStatus, page_token: String| ListPlanVersionsRequest {
        plan_id: plan_id.clone(),
        status: status as i32,
        page_size: 2,
        page_token,
    };
    let newest = h
        .client
        .list_plan_versions(list(PlanVersionStatus::Unspecified, String::new()))
        .await
        .unwrap()
        .into_inner();
    let numbers: Vec<u32> = newest
        .plan_versions
        .iter()
        .map(|version| version.version)
        .collect();
    assert_eq!(numbers, [3, 2], "newest first");
    let oldest = h
        .client
        .list_plan_versions(list(
            PlanVersionStatus::Unspecified,
            newest.next_page_token.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    let numbers: Vec<u32> = oldest
        .plan_versions
        .iter()
        .map(|version| version.version)
        .collect();
    assert_eq!(numbers, [1]);
    assert!(oldest.next_page_token.is_empty());
    let published = h
        .client
        .list_plan_versions(list(PlanVersionStatus::Published, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.plan_versions.len(), 1);
    assert_eq!(published.plan_versions[0].id, v1.id);

    let other_plan = h.plan("elsewhere").await;
    let wrong_plan = h
        .client
        .list_plan_versions(ListPlanVersionsRequest {
            plan_id: other_plan,
            page_token: newest.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_plan.code(), Code::InvalidArgument);
    let unknown_plan = h
        .client
        .list_plan_versions(ListPlanVersionsRequest {
            plan_id: "plan_unknown".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_plan.code(), Code::NotFound);
    let unknown_version = h
        .client
        .get_plan_version(GetPlanVersionRequest {
            plan_version_id: "pv_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_version.code(), Code::NotFound);
}

/// `ValidateCatalogChanges`: publication's rules, with the same paths under
/// `plans[i].`, on a plan that does not exist yet; the request's meters are
/// known to its plans and checked with CreateMeter's rules; nothing is
/// written. Then what was never published is deleted.
#[tokio::test]
async fn catalog_changes_validate_as_publishing_would_and_unpublished_ones_can_be_deleted() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("broken").await;
    let draft = h.draft(&plan_id, "broken-v1", broken()).await;
    let (_, published_rules) = h.validate(&draft.id).await;
    let change = |meters: Vec<CreateMeterRequest>, name: &str| ValidateCatalogChangesRequest {
        meters,
        plans: vec![PlanChange {
            plan: Some(CreatePlanRequest {
                code: "fresh".into(),
                name: name.into(),
                ..CreatePlanRequest::default()
            }),
            spec: Some(broken()),
        }],
    };
    let answer = h
        .client
        .validate_catalog_changes(change(Vec::new(), "Fresh"))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.valid);
    let under_plan: Vec<(String, String)> = published_rules
        .iter()
        .map(|(field, rule)| (format!("plans[0].{field}"), rule.clone()))
        .collect();
    assert_eq!(pairs(&answer.violations), under_plan);

    // The ghost meter, created by the same change, is known; a malformed
    // meter and a nameless plan are named too.
    let answer = h
        .client
        .validate_catalog_changes(change(
            vec![
                meter_request("ghost_meter", Aggregation::Count, ""),
                meter_request("bad_meter", Aggregation::Count, "amount"),
            ],
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    let found = pairs(&answer.violations);
    assert!(
        !found.contains(&expected(&[("plans[0].spec.charges[2].meter_code", "unknown_meter")])[0])
    );
    assert_eq!(
        found
            .iter()
            .filter(|(field, _)| field.starts_with("meters[1]."))
            .count(),
        1,
        "{found:?}"
    );
    assert!(
        found.iter().any(|(field, _)| field == "plans[0].plan.name"),
        "{found:?}"
    );
    let empty = h
        .client
        .validate_catalog_changes(ValidateCatalogChangesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Nothing was written.
    for code in ["ghost_meter", "bad_meter"] {
        let missing = h
            .client
            .get_meter(GetMeterRequest {
                lookup: Some(get_meter_request::Lookup::Code(code.into())),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
    }
    let fresh = h
        .client
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code("fresh".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(fresh.code(), Code::NotFound);

    // The draft, then its plan, go; the code can be used again.
    let deleted = h
        .client
        .delete_draft_plan_version(DeleteDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.plan_version.unwrap().id, draft.id);
    let again = h
        .client
        .delete_draft_plan_version(DeleteDraftPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let gone = h
        .client
        .delete_plan(DeletePlanRequest {
            plan_id: plan_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.deleted_drafts, 0);
    assert_eq!(gone.plan.unwrap().code, "broken");
    assert_ne!(h.plan("broken").await, plan_id);
}

#[tokio::test]
async fn a_publication_is_audited_once_in_ratings_chain() {
    let mut h = harness().await;
    standard_meters(&mut h).await;
    let plan_id = h.plan("team").await;
    let draft = h.draft(&plan_id, "team-v1", every_model()).await;
    h.publish(&draft.id).await.unwrap();
    h.publish(&draft.id).await.unwrap(); // already published: nothing changes

    let publications = tally_audit::Filter {
        action: Some("catalog.plan_version.published".into()),
        ..Default::default()
    };
    let (entries, _) = tally_audit::list(
        &h.db.pool,
        &[tally_audit::Schema::Rating],
        &publications,
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        (entry.action.as_str(), entry.resource_id.as_str()),
        ("catalog.plan_version.published", draft.id.as_str())
    );
    assert_eq!(
        entry.actor_kind, "anonymous",
        "the harness serves without keys"
    );
    let state = |json: &Option<String>| -> serde_json::Value {
        serde_json::from_str(json.as_deref().unwrap()).unwrap()
    };
    let (before, after) = (state(&entry.before_state), state(&entry.after_state));
    assert_eq!(
        (before["status"].as_str(), after["status"].as_str()),
        (Some("draft"), Some("published"))
    );
    assert_eq!(before["spec_sha256"], after["spec_sha256"]);
    assert_eq!(after["spec_sha256"].as_str().map(str::len), Some(64));
    let verification = tally_audit::verify(&h.db.pool, tally_audit::Schema::Rating)
        .await
        .unwrap();
    assert_eq!(verification.broken, None);
}
