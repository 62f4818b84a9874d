//! Prices and lines: exact cents per price model, plan changes, minimums,
//! percentages, gauges, and the live cost.

use super::*;

#[tokio::test]
async fn a_graduated_per_unit_and_package_plan_bills_exact_cents() {
    let (mut h, version) = standard().await;
    assert_eq!(rate(&h, &standard_events()).await, summary(9, 0, 0));

    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&response),
        vec![
            // 3 × 0.10 + 2 × 0.05
            row("api_requests", dec!(5), dec!(0.40), dec!(0.40)),
            // 11 rows → 2 started packages × 1.50
            row("exports", dec!(11.0), dec!(3.00), dec!(3.00)),
            // 1,250 × 0.0021 = 2.625: a tie, half-even rounds to 2.62
            row("tokens", dec!(1250), dec!(2.625), dec!(2.62)),
        ]
    );
    assert_eq!(amount(response.total.as_ref()), dec!(6.02));
    assert_eq!(response.total.as_ref().unwrap().currency, "USD");
    assert_eq!(response.customer_id, "cus_acme");
    assert_eq!(response.as_of_sequence_number, 31);
    let calls = &response.charges[0];
    assert_eq!(calls.plan_version_id, version);
    assert_eq!(calls.meter_code, "api_calls");
    assert_eq!(calls.aggregation, Aggregation::Count as i32);
    assert_eq!(calls.event_count, 5);
    assert_eq!(calls.period, Some(november()));
    assert!(matches!(
        calls.price.as_ref().and_then(|price| price.model.as_ref()),
        Some(Model::Graduated(_))
    ));
    let tiers: Vec<(u32, Decimal)> = calls
        .breakdown
        .iter()
        .map(|step| {
            assert_eq!(step.kind, BreakdownStepKind::Tier as i32);
            (step.tier_index, amount(step.amount.as_ref()))
        })
        .collect();
    assert_eq!(tiers, vec![(0, dec!(0.30)), (1, dec!(0.10))]);

    let not_a_period = h
        .usage
        .get_usage_charges(GetUsageChargesRequest {
            subscription_id: "sub_acme".into(),
            period: Some(range(
                at(2, 0, 0, 0),
                Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_a_period.code(),
        Code::FailedPrecondition,
        "{not_a_period:?}"
    );
    let unknown = h
        .usage
        .get_usage_charges(GetUsageChargesRequest {
            subscription_id: "sub_nobody".into(),
            period: Some(november()),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_mid_period_plan_change_splits_usage_at_the_exact_instant() {
    let mut h = harness().await;
    meters(&mut h).await;
    let basic = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let pro = published(&mut h, "pro", vec![per_unit("calls", "api_calls", "0.02")]).await;
    let change = at(15, 12, 0, 0);
    apply(
        &h,
        &snapshot(
            "sub_acme",
            "cus_acme",
            2,
            at(1, 0, 0, 0),
            &[(&basic, at(1, 0, 0, 0), Some(change)), (&pro, change, None)],
        ),
    )
    .await;
    let just_before = change - Duration::milliseconds(1);
    let events = vec![
        accepted(1, "cus_acme", "a", "api_calls", at(2, 0, 0, 0), &[]),
        accepted(2, "cus_acme", "b", "api_calls", just_before, &[]),
        accepted(3, "cus_acme", "c", "api_calls", change, &[]),
        accepted(4, "cus_acme", "d", "api_calls", at(30, 23, 59, 59), &[]),
        accepted(5, "cus_acme", "e", "api_calls", at(20, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &events).await.rated, 5);

    let response = charges(&mut h, "sub_acme").await;
    let lines: Vec<(String, Option<tally_proto::common::TimeRange>, u64, Decimal)> = response
        .charges
        .iter()
        .map(|line| {
            (
                line.plan_version_id.clone(),
                line.period,
                line.event_count,
                amount(line.amount.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (basic, Some(range(at(1, 0, 0, 0), change)), 2, dec!(0.02)),
            (
                pro,
                Some(range(
                    change,
                    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
                )),
                3,
                dec!(0.06)
            ),
        ]
    );
    assert_eq!(amount(response.total.as_ref()), dec!(0.08));
}

#[tokio::test]
async fn a_charge_minimum_is_billed_without_usage() {
    let mut h = harness().await;
    meters(&mut h).await;
    let mut calls = per_unit("calls", "api_calls", "0.01");
    calls.minimum_amount = usd("5");
    let version = published(&mut h, "committed", vec![calls]).await;
    subscribe_acme(&h, &version).await;
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&response),
        vec![row("calls", dec!(0), dec!(5), dec!(5))]
    );
    let steps: Vec<i32> = response.charges[0]
        .breakdown
        .iter()
        .map(|step| step.kind)
        .collect();
    assert!(
        steps.contains(&(BreakdownStepKind::ChargeMinimum as i32)),
        "{steps:?}"
    );
    assert_eq!(response.charges[0].event_count, 0);
    assert_eq!(amount(response.total.as_ref()), dec!(5));
}

#[tokio::test]
async fn a_percentage_charge_prices_each_transaction_whatever_the_arrival_order() {
    let mut h = harness().await;
    h.meter(meter_request("payments", Aggregation::Sum, "amount"))
        .await;
    let card_fees = usage(
        "card_fees",
        "payments",
        Model::Percentage(PercentagePrice {
            rate_percent: decimal("2.9"),
            fixed_fee_per_event: usd("0.30"),
            free_events: 1,
            ..Default::default()
        }),
    );
    let version = published(&mut h, "payments", vec![card_fees]).await;
    subscribe_acme(&h, &version).await;
    let payment = |seq, id: &str, day, amount| {
        accepted(
            seq,
            "cus_acme",
            id,
            "payments",
            at(day, 0, 0, 0),
            &[("amount", amount)],
        )
    };
    // The first payment in time (the 2nd) is free whatever arrives first:
    // 2.9 % × 50 + 0.30 = 1.75 and 2.9 % × 10.10 + 0.30 = 0.5929.
    let events = vec![
        payment(3, "p3", 9, "10.10"),
        payment(2, "p2", 5, "50"),
        payment(1, "p1", 2, "100"),
        payment(4, "refund", 6, "-5"),
    ];
    assert_eq!(rate(&h, &events).await, summary(3, 0, 1));
    rate(&h, &events).await;
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&response),
        vec![row("card_fees", dec!(160.10), dec!(2.3429), dec!(2.34))]
    );
    let kinds: Vec<i32> = response.charges[0]
        .breakdown
        .iter()
        .map(|step| step.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            BreakdownStepKind::FreeEvents as i32,
            BreakdownStepKind::Percentage as i32,
            BreakdownStepKind::FixedFee as i32,
        ]
    );
}

/// `(kind, description, quantity, amount)` of each breakdown step of `line`.
fn steps(line: &UsageCharge) -> Vec<(BreakdownStepKind, String, Decimal, Decimal)> {
    line.breakdown
        .iter()
        .map(|step| {
            (
                BreakdownStepKind::try_from(step.kind).unwrap(),
                step.description.clone(),
                step.quantity.as_ref().unwrap().value.parse().unwrap(),
                amount(step.amount.as_ref()),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_published_percentage_price_applies_its_allowance_policy_and_says_which_transactions_were_free()
 {
    use BreakdownStepKind::{AllowancesEnded, FixedFee, FreeAmount, FreeEvents, Percentage};
    // Lago's documented example: 1.2 % + 0.10, "the first 3 events or $500 are free",
    // payments of 200, 100, 100 and 50 (arriving newest first).
    let payment = |seq, id: &str, day, amount| {
        accepted(
            seq,
            "cus_acme",
            id,
            "payments",
            at(day, 0, 0, 0),
            &[("amount", amount)],
        )
    };
    let events = vec![
        payment(1, "p4", 5, "50"),
        payment(2, "p3", 4, "100"),
        payment(3, "p2", 3, "100"),
        payment(4, "p1", 2, "200"),
    ];
    let sequential_steps = vec![
        (
            FreeEvents,
            "transactions 1–3 free (3 free transactions)".to_owned(),
            dec!(3),
            dec!(0),
        ),
        (
            FreeAmount,
            "first 50 of volume after the free transactions exempt from the rate \
             (free amount): transaction 4"
                .to_owned(),
            dec!(50),
            dec!(0),
        ),
        (
            Percentage,
            "4 transactions, volume 450: 1.2 % of 0".to_owned(),
            dec!(0),
            dec!(0),
        ),
        (
            FixedFee,
            "1 transaction charged at 0.10 each".to_owned(),
            dec!(1),
            dec!(0.10),
        ),
    ];
    let first_exhausted_steps = vec![
        (
            FreeEvents,
            "transactions 1–3 free (3 free transactions)".to_owned(),
            dec!(3),
            dec!(0),
        ),
        (
            FreeAmount,
            "first 400 of volume free (free amount, drawn with the free transactions): \
             transactions 1–3"
                .to_owned(),
            dec!(400),
            dec!(0),
        ),
        (
            AllowancesEnded,
            "allowances ended at transaction 3 (first exhausted): free transactions \
             exhausted, 100 of the free amount forfeited"
                .to_owned(),
            dec!(3),
            dec!(0),
        ),
        (
            Percentage,
            "4 transactions, volume 450: 1.2 % of 50".to_owned(),
            dec!(50),
            dec!(0.60),
        ),
        (
            FixedFee,
            "1 transaction charged at 0.10 each".to_owned(),
            dec!(1),
            dec!(0.10),
        ),
    ];
    let cases = [
        // A version written before the policy existed keeps its sequential price.
        (
            PercentageAllowancePolicy::Unspecified,
            dec!(0.10),
            &sequential_steps,
        ),
        (
            PercentageAllowancePolicy::Sequential,
            dec!(0.10),
            &sequential_steps,
        ),
        (
            PercentageAllowancePolicy::FirstExhausted,
            dec!(0.70),
            &first_exhausted_steps,
        ),
    ];
    for (policy, expected_amount, expected_steps) in cases {
        let mut h = harness().await;
        h.meter(meter_request("payments", Aggregation::Sum, "amount"))
            .await;
        let fees = usage(
            "fees",
            "payments",
            Model::Percentage(PercentagePrice {
                rate_percent: decimal("1.2"),
                fixed_fee_per_event: usd("0.10"),
                free_events: 3,
                free_amount: decimal("500"),
                allowance_policy: policy as i32,
                ..Default::default()
            }),
        );
        let version = published(&mut h, "transfers", vec![fees]).await;
        subscribe_acme(&h, &version).await;
        assert_eq!(rate(&h, &events).await, summary(4, 0, 0), "{policy:?}");
        let response = charges(&mut h, "sub_acme").await;
        assert_eq!(
            table(&response),
            vec![row("fees", dec!(450), expected_amount, expected_amount)],
            "{policy:?}"
        );
        let line = &response.charges[0];
        assert_eq!(&steps(line), expected_steps, "{policy:?}");
        let Some(Model::Percentage(snapshot)) =
            line.price.as_ref().and_then(|price| price.model.as_ref())
        else {
            panic!("{:?}", line.price);
        };
        assert_eq!(snapshot.allowance_policy, policy as i32);
    }
}

#[tokio::test]
async fn an_unknown_allowance_policy_is_refused_with_its_path() {
    let mut h = harness().await;
    h.meter(meter_request("payments", Aggregation::Sum, "amount"))
        .await;
    let plan_id = h.plan("transfers").await;
    let fees = usage(
        "fees",
        "payments",
        Model::Percentage(PercentagePrice {
            rate_percent: decimal("1.2"),
            allowance_policy: 7,
            ..Default::default()
        }),
    );
    let status = h
        .client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "transfers-v1".into(),
            plan_id,
            source: Some(create_plan_version_request::Source::Spec(monthly(vec![
                fees,
            ]))),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status_pairs(&status),
        expected(&[(
            "spec.charges[0].price.percentage.allowance_policy",
            "unknown_value"
        )])
    );
}

#[tokio::test]
async fn a_gauge_level_carries_into_the_next_period() {
    let mut h = harness().await;
    h.meter(meter_request(
        "storage_gb",
        Aggregation::TimeWeightedSum,
        "gb",
    ))
    .await;
    let version = published(
        &mut h,
        "storage",
        vec![per_unit("storage", "storage_gb", "0.001")],
    )
    .await;
    subscribe_acme(&h, &version).await;
    let readings = vec![
        accepted(
            2,
            "cus_acme",
            "resize",
            "storage_gb",
            at(16, 0, 0, 0),
            &[("gb", "20")],
        ),
        accepted(
            1,
            "cus_acme",
            "create",
            "storage_gb",
            at(1, 0, 0, 0),
            &[("gb", "10")],
        ),
    ];
    rate(&h, &readings).await;
    // November: 360 h at 10 GB + 360 h at 20 GB.
    let november_charges = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&november_charges),
        vec![row("storage", dec!(10800), dec!(10.8), dec!(10.80))]
    );
    // December has no reading: 744 h at the 20 GB carried over.
    let december = h
        .usage
        .get_usage_charges(GetUsageChargesRequest {
            subscription_id: "sub_acme".into(),
            period: Some(range(
                Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        table(&december),
        vec![row("storage", dec!(14880), dec!(14.88), dec!(14.88))]
    );
}

#[tokio::test]
async fn the_current_cost_equals_the_usage_charges_of_the_open_period() {
    let (mut h, _) = standard().await;
    rate(&h, &standard_events()).await;
    let cost = h
        .usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let period_charges = charges(&mut h, "sub_acme").await;
    assert_eq!(cost.costs.len(), 1);
    let open = &cost.costs[0];
    assert_eq!(open.subscription_id, "sub_acme");
    assert_eq!(open.period, Some(november()));
    assert_eq!(open.charges, period_charges.charges);
    assert_eq!(open.usage_total, period_charges.total);
    assert_eq!(
        cost.as_of_sequence_number,
        period_charges.as_of_sequence_number
    );
    assert_eq!(cost.computed_at, Some(ts(start_time())));

    let unknown = h
        .usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn malformed_queries_name_the_field() {
    let (mut h, _) = standard().await;
    let cases = [
        (
            GetUsageChargesRequest {
                subscription_id: String::new(),
                period: Some(november()),
            },
            "subscription_id",
        ),
        (
            GetUsageChargesRequest {
                subscription_id: "sub_acme".into(),
                period: None,
            },
            "period",
        ),
        (
            GetUsageChargesRequest {
                subscription_id: "sub_acme".into(),
                period: Some(range(at(2, 0, 0, 0), at(1, 0, 0, 0))),
            },
            "period.end_time",
        ),
    ];
    for (request, field) in cases {
        let status = h.usage.get_usage_charges(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
    let status = h
        .usage
        .get_current_cost(GetCurrentCostRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let other = h
        .usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_acme".into(),
            subscription_id: "sub_other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    let only = h
        .usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_acme".into(),
            subscription_id: "sub_acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only.costs.len(), 1);
    let unknown_reason = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            reason: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_reason.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_matrix_charge_without_a_default_price_bills_zero_before_any_usage() {
    let mut h = harness().await;
    meters(&mut h).await;
    h.meter(CreateMeterRequest {
        group_by: vec!["gpu".into()],
        ..meter_request("gpu.seconds", Aggregation::Sum, "seconds")
    })
    .await;
    let strict = usage(
        "gpu",
        "gpu.seconds",
        Model::Matrix(MatrixPrice {
            dimensions: vec!["gpu".into()],
            cells: vec![cell(&[("gpu", "h100")], "0.0012")],
            default_unit_price: None,
        }),
    );
    let version = published(&mut h, "gpu", vec![strict]).await;
    subscribe_acme(&h, &version).await;
    // No usage yet: the idle line is zero, not an error.
    assert_eq!(
        table(&charges(&mut h, "sub_acme").await),
        vec![row("gpu", dec!(0), dec!(0), dec!(0.00))]
    );
    rate(
        &h,
        &[accepted(
            1,
            "cus_acme",
            "g1",
            "gpu.seconds",
            at(2, 0, 0, 0),
            &[("gpu", "h100"), ("seconds", "100")],
        )],
    )
    .await;
    assert_eq!(
        table(&charges(&mut h, "sub_acme").await),
        vec![row("gpu", dec!(100), dec!(0.1200), dec!(0.12))]
    );
}

#[tokio::test]
async fn a_batch_answers_each_pair_as_get_usage_charges_would() {
    let (mut h, version) = standard().await;
    assert!(matches!(
        apply(
            &h,
            &snapshot(
                "sub_beta",
                "cus_beta",
                1,
                at(1, 0, 0, 0),
                &[(&version, at(1, 0, 0, 0), None)],
            ),
        )
        .await,
        Applied::Applied { .. }
    ));
    assert_eq!(rate(&h, &standard_events()).await, summary(9, 0, 0));
    let acme = charges(&mut h, "sub_acme").await;
    let beta = charges(&mut h, "sub_beta").await;
    let pair = |subscription: &str, period| GetUsageChargesRequest {
        subscription_id: subscription.into(),
        period: Some(period),
    };
    let december = range(
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
    );
    let results = h
        .usage
        .batch_get_usage_charges(BatchGetUsageChargesRequest {
            requests: vec![
                pair("sub_acme", november()),
                pair("sub_nobody", november()),
                pair("sub_beta", november()),
                pair("sub_acme", range(at(2, 0, 0, 0), at(20, 0, 0, 0))),
                // The same pair twice: its usage is not counted twice.
                pair("sub_acme", november()),
                pair("", november()),
                pair("sub_beta", december),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let outcome = |index: usize| -> Result<GetUsageChargesResponse, (i32, String)> {
        match results[index].result.clone().unwrap() {
            usage_charges_result::Result::Charges(charges) => Ok(charges),
            usage_charges_result::Result::Error(error) => Err((error.code, error.message)),
        }
    };
    let same = |left: GetUsageChargesResponse, right: &GetUsageChargesResponse| {
        let mut left = left;
        left.computed_at.clone_from(&right.computed_at);
        assert_eq!(&left, right);
    };
    assert_eq!(results.len(), 7);
    same(outcome(0).unwrap(), &acme);
    assert_eq!(outcome(1).unwrap_err().0, Code::NotFound as i32);
    same(outcome(2).unwrap(), &beta);
    assert_eq!(amount(beta.total.as_ref()), dec!(0));
    assert_eq!(outcome(3).unwrap_err().0, Code::FailedPrecondition as i32);
    same(outcome(4).unwrap(), &acme);
    assert_eq!(amount(acme.total.as_ref()), dec!(6.02));
    assert_eq!(
        outcome(5).unwrap_err(),
        (
            Code::InvalidArgument as i32,
            "subscription_id: is required".into()
        )
    );
    // December has no usage yet: every charge at zero (minimums apply).
    let december = outcome(6).unwrap();
    assert_eq!(december.charges.len(), acme.charges.len());

    for size in [0, 1001] {
        let refused = h
            .usage
            .batch_get_usage_charges(BatchGetUsageChargesRequest {
                requests: vec![pair("sub_acme", november()); size],
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused
                .message()
                .starts_with("requests: between 1 and 1000")
        );
    }
}
