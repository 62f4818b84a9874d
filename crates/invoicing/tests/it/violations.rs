//! Every INVALID_ARGUMENT carries the `Violations` detail, through the
//! runtime's one error table, with the same rule for the same bad decimal.

use tally_proto::common::Money;
use tally_proto::convert::REFUSED_DECIMAL_EXAMPLES;
use tally_proto::invoicing::*;
use tally_runtime::error::status_violations;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn invalid_requests_name_field_and_rule_and_every_bad_decimal_is_invalid_decimal() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let customer = h.customer("acme").await;
    let grant = |key: String, amount: &str| GrantCreditRequest {
        idempotency_key: key,
        customer_id: customer.clone(),
        kind: CreditGrantKind::Prepaid as i32,
        amount: Some(Money {
            currency: "USD".into(),
            amount: amount.to_owned(),
        }),
        description: "prepaid".into(),
        ..Default::default()
    };

    let mut anonymous = grant("anonymous".into(), "10.00");
    anonymous.customer_id.clear();
    let refused = h.credits.grant_credit(anonymous).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = status_violations(&refused);
    assert_eq!(violations.len(), 1, "{refused:?}");
    assert_eq!(violations[0].field, "customer_id");
    assert_eq!(violations[0].rule, "required");

    for (index, text) in REFUSED_DECIMAL_EXAMPLES.iter().enumerate() {
        let refused = h
            .credits
            .grant_credit(grant(format!("bad-{index}"), text))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{text:?}");
        let violations = status_violations(&refused);
        assert_eq!(violations.len(), 1, "{text:?}: {refused:?}");
        assert_eq!(violations[0].field, "amount.amount", "{text:?}");
        assert_eq!(violations[0].rule, "invalid_decimal", "{text:?}");
    }
}

#[tokio::test]
async fn ids_of_another_type_are_refused_at_the_edge() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let customer = h.customer("acme").await;
    let rule_of = tally_testkit::only_violation;
    let expected = |field: &str| (field.to_owned(), "invalid_prefix".to_owned());

    let refused = h
        .invoices
        .get_invoice(GetInvoiceRequest {
            invoice_id: customer.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("invoice_id"));
    assert!(refused.message().contains("inv_"), "{refused:?}");

    let refused = h
        .credits
        .get_credit_balance(GetCreditBalanceRequest {
            customer_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("customer_id"));

    let refused = h
        .invoices
        .list_invoices(ListInvoicesRequest {
            subscription_id: customer.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("subscription_id"));

    let refused = h
        .invoices
        .void_invoice(VoidInvoiceRequest {
            idempotency_key: "void-1".into(),
            invoice_id: "sub_000001".into(),
            reason: "duplicate".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("invoice_id"));

    let refused = h
        .subscriptions
        .get_subscription(GetSubscriptionRequest {
            subscription_id: customer.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("subscription_id"));

    let refused = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            idempotency_key: "subscribe-1".into(),
            customer_id: customer.clone(),
            plan_version_id: "plan_000001".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("plan_version_id"));
}
