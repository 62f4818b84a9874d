//! Every INVALID_ARGUMENT carries the `Violations` detail, through the
//! runtime's one error table, with the same rule for the same bad decimal.

use tally_proto::convert::REFUSED_DECIMAL_EXAMPLES;
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_runtime::error::status_violations;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn invalid_requests_name_field_and_rule_and_every_bad_decimal_is_invalid_decimal() {
    let mut h = harness().await;

    let refused = h
        .usage
        .get_usage(GetUsageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = status_violations(&refused);
    assert!(!violations.is_empty(), "{refused:?}");
    assert!(
        violations
            .iter()
            .all(|violation| !violation.rule.is_empty())
    );
    assert_eq!(violations[0].field, "customer_id");
    assert_eq!(violations[0].rule, "required");

    let plan_id = h.plan("bad_decimals").await;
    for (index, text) in REFUSED_DECIMAL_EXAMPLES.iter().enumerate() {
        let spec = monthly(vec![usage(
            "calls",
            "api_calls",
            Model::PerUnit(PerUnitPrice {
                unit_price: decimal(text),
            }),
        )]);
        let refused = h
            .client
            .create_plan_version(CreatePlanVersionRequest {
                idempotency_key: format!("bad-decimal-{index}"),
                plan_id: plan_id.clone(),
                source: Some(create_plan_version_request::Source::Spec(spec)),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{text:?}");
        assert_eq!(
            status_pairs(&refused),
            expected(&[(
                "spec.charges[0].price.per_unit.unit_price",
                "invalid_decimal"
            )]),
            "{text:?}"
        );
    }
}

#[tokio::test]
async fn ids_of_another_type_are_refused_at_the_edge() {
    let mut h = harness().await;
    let rule_of = tally_testkit::only_violation;
    let expected = |field: &str| (field.to_owned(), "invalid_prefix".to_owned());

    let refused = h
        .usage
        .get_usage(GetUsageRequest {
            customer_id: "sub_000001".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("customer_id"));
    assert!(refused.message().contains("cus_"), "{refused:?}");

    let refused = h
        .usage
        .delete_threshold(DeleteThresholdRequest {
            threshold_id: "sub_000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("threshold_id"));

    let refused = h
        .usage
        .list_thresholds(ListThresholdsRequest {
            subscription_id: "cus_000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("subscription_id"));
}
