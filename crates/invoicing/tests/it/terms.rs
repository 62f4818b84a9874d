//! Contract terms on subscriptions: checked against the plan version when the
//! subscription is created (a broken term is INVALID_ARGUMENT on its path), stored
//! with it, returned by its read API and carried on its snapshot.

use tally_proto::common::{Decimal as WireDecimal, Money};
use tally_proto::convert::timestamp;
use tally_proto::invoicing::*;
use tally_runtime::error::status_violations;
use tonic::Code;

use crate::support::*;

fn percent(value: &str) -> Option<discount::Value> {
    Some(discount::Value::Percent(WireDecimal {
        value: value.into(),
    }))
}

/// API calls at 0.008 for 12 months, 20 % off the first 3 periods, a 500.00 minimum, and a
/// second-year phase with a 1,000.00 minimum.
fn deal() -> SubscriptionTerms {
    SubscriptionTerms {
        overrides: vec![PriceOverride {
            charge_key: "calls".into(),
            price: Some(price_override::Price::UnitPrice(WireDecimal {
                value: "0.008".into(),
            })),
            ends_at: Some(timestamp(at(2026, 1, 1))),
            ..Default::default()
        }],
        discounts: vec![Discount {
            name: "Launch".into(),
            value: percent("20"),
            duration: Some(discount::Duration::Periods(3)),
            ..Default::default()
        }],
        minimum: usd("500.00"),
        ramp: vec![RampPhase {
            name: "Year 2".into(),
            starts_at: Some(timestamp(at(2026, 1, 1))),
            minimum: usd("1000.00"),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn create(
    customer: &str,
    plan: &str,
    key: &str,
    terms: SubscriptionTerms,
) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        plan_version_id: plan.into(),
        start_at: Some(ts(at(2025, 1, 1))),
        trial_days: Some(0),
        terms: Some(terms),
        ..Default::default()
    }
}

#[tokio::test]
async fn terms_are_checked_stored_and_returned() {
    let mut h = harness(at(2025, 1, 10), config(0)).await;
    let plan = h
        .plan("ai", PlanSpec::advance("100.00").calls("0.01"))
        .await;
    let customer = h.customer("acme").await;
    let created = h
        .subscriptions
        .create_subscription(create(&customer, &plan, "with-terms", deal()))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(created.terms, Some(deal()));
    let read = h.subscription(&created.id).await;
    assert_eq!(read.terms, Some(deal()));
    // Without terms, none come back.
    let list_price = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            terms: None,
            ..create(&customer, &plan, "list-price", deal())
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(h.subscription(&list_price.id).await.terms, None);
    // A plan change would leave the terms unchecked: refused.
    let refused = h
        .subscriptions
        .change_plan(ChangePlanRequest {
            idempotency_key: "change".into(),
            subscription_id: created.id.clone(),
            plan_version_id: plan.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

#[tokio::test]
async fn a_broken_term_is_refused_on_its_path() {
    let mut h = harness(at(2025, 1, 10), config(0)).await;
    let plan = h
        .plan("ai", PlanSpec::advance("100.00").calls("0.01"))
        .await;
    let customer = h.customer("acme").await;
    let refusal = |refused: tonic::Status| {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let violations = status_violations(&refused);
        assert_eq!(violations.len(), 1, "{refused:?}");
        (violations[0].field.clone(), violations[0].rule.clone())
    };
    let mut unknown = deal();
    unknown.ramp[0].overrides = vec![PriceOverride {
        charge_key: "images".into(),
        price: Some(price_override::Price::UnitPrice(WireDecimal {
            value: "1".into(),
        })),
        ..Default::default()
    }];
    let refused = h
        .subscriptions
        .create_subscription(create(&customer, &plan, "unknown", unknown))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        ("terms.ramp[0].overrides[0]".into(), "invalid_terms".into())
    );
    let mut euros = deal();
    euros.minimum = Some(Money {
        currency: "EUR".into(),
        amount: "500.00".into(),
    });
    let refused = h
        .subscriptions
        .create_subscription(create(&customer, &plan, "euros", euros))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        ("terms.minimum.currency".into(), "currency_mismatch".into())
    );
    let mut too_much = deal();
    too_much.discounts[0].value = percent("120");
    let refused = h
        .subscriptions
        .create_subscription(create(&customer, &plan, "too-much", too_much))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        ("terms.discounts[0]".into(), "invalid_terms".into())
    );
    // A trial moves the anchor off the terms' cycle.
    let refused = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            trial_days: Some(14),
            ..create(&customer, &plan, "trial", deal())
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(refused).0, "billing_anchor_at");
    // A calendar anchor is on the cycle: the first period is a stub.
    let stub = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            start_at: Some(ts(at(2025, 1, 15))),
            billing_anchor_at: Some(ts(at(2025, 2, 1))),
            ..create(&customer, &plan, "stub", deal())
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(stub.terms, Some(deal()));
}
