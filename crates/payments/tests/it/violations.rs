//! Every INVALID_ARGUMENT carries the `Violations` detail, through the
//! runtime's one error table, with the same rule for the same bad decimal.

use tally_proto::common::Money;
use tally_proto::convert::REFUSED_DECIMAL_EXAMPLES;
use tally_proto::payments::{RefundReason, RefundRequest};
use tally_runtime::error::status_violations;
use tonic::Code;

use crate::support::*;

fn refund(amount: Option<Money>) -> RefundRequest {
    RefundRequest {
        idempotency_key: "refund-1".into(),
        payment_id: "pay_unknown".into(),
        amount,
        reason: RefundReason::RequestedByCustomer.into(),
        memo: String::new(),
    }
}

#[tokio::test]
async fn invalid_requests_name_field_and_rule_and_every_bad_decimal_is_invalid_decimal() {
    let mut h = harness().await;

    let mut missing_key = refund(None);
    missing_key.idempotency_key.clear();
    let refused = h.client.refund(missing_key).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = status_violations(&refused);
    assert_eq!(violations.len(), 1, "{refused:?}");
    assert_eq!(violations[0].field, "idempotency_key");
    assert_eq!(violations[0].rule, "required");

    for text in REFUSED_DECIMAL_EXAMPLES {
        let refused = h
            .client
            .refund(refund(Some(Money {
                currency: "USD".into(),
                amount: (*text).to_owned(),
            })))
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
    use tally_proto::payments::{GetPaymentRequest, ListPaymentsRequest, RetryPaymentRequest};

    let mut h = harness().await;
    let rule_of = tally_testkit::only_violation;
    let expected = |field: &str| (field.to_owned(), "invalid_prefix".to_owned());

    let mut invoice_as_payment = refund(None);
    invoice_as_payment.payment_id = "inv_000001".into();
    let refused = h.client.refund(invoice_as_payment).await.unwrap_err();
    assert_eq!(rule_of(&refused), expected("payment_id"));
    assert!(refused.message().contains("pay_"), "{refused:?}");

    let refused = h
        .client
        .get_payment(GetPaymentRequest {
            payment_id: "inv_000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("payment_id"));

    let refused = h
        .client
        .retry_payment(RetryPaymentRequest {
            idempotency_key: "retry-1".into(),
            payment_id: "ref_000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("payment_id"));

    let refused = h
        .client
        .list_payments(ListPaymentsRequest {
            invoice_id: "cus_000001".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rule_of(&refused), expected("invoice_id"));
}
