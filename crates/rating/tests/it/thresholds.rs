//! Spend and usage thresholds: validated on `SetThreshold`, crossed at most
//! once per threshold and billing period, published through rating's outbox.

use prost::Message as _;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::events::{ThresholdCrossed, threshold_crossed};
use tally_proto::rating::*;
use tonic::Code;

use crate::usage::*;

fn spend(key: &str, amount: &str) -> SetThresholdRequest {
    SetThresholdRequest {
        subscription_id: "sub_acme".into(),
        key: key.into(),
        limit: Some(set_threshold_request::Limit::Spend(usd(amount).unwrap())),
    }
}

fn calls_limit(key: &str, quantity: &str) -> SetThresholdRequest {
    SetThresholdRequest {
        subscription_id: "sub_acme".into(),
        key: key.into(),
        limit: Some(set_threshold_request::Limit::Usage(UsageLimit {
            meter_code: "api_calls".into(),
            quantity: decimal(quantity),
        })),
    }
}

async fn set(h: &mut Harness, request: SetThresholdRequest) -> Threshold {
    h.usage
        .set_threshold(request)
        .await
        .unwrap()
        .into_inner()
        .threshold
        .unwrap()
}

async fn listed(h: &mut Harness) -> Vec<(String, bool)> {
    h.usage
        .list_thresholds(ListThresholdsRequest {
            subscription_id: "sub_acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .thresholds
        .into_iter()
        .map(|threshold| (threshold.key, threshold.crossed_in_current_period))
        .collect()
}

/// The `ThresholdCrossed` messages in rating's outbox, in order.
async fn crossed(h: &Harness) -> Vec<ThresholdCrossed> {
    let payloads: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT message_type, payload FROM rating.outbox WHERE topic = 'rating-events' ORDER BY seq",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    payloads
        .into_iter()
        .map(|(message_type, payload)| {
            assert_eq!(message_type, "tally.events.v1.ThresholdCrossed");
            ThresholdCrossed::decode(payload.as_slice()).unwrap()
        })
        .collect()
}

fn value(message: &ThresholdCrossed) -> Decimal {
    match message.value.as_ref().unwrap() {
        threshold_crossed::Value::Spend(money) => money.amount.parse().unwrap(),
        threshold_crossed::Value::Quantity(quantity) => quantity.value.parse().unwrap(),
    }
}

fn call(n: u64, day: u32) -> tally_rating::usage::AcceptedEvent {
    accepted(
        100 + n,
        "cus_acme",
        &format!("call-{n}"),
        "api_calls",
        at(day, 9, 0, 0),
        &[],
    )
}

#[tokio::test]
async fn thresholds_are_crossed_once_per_period_when_usage_reaches_them() {
    let (mut h, _) = standard().await;
    let spend_threshold = set(&mut h, spend("spend_1usd", "1.00")).await;
    set(&mut h, calls_limit("calls_4", "4")).await;
    assert_eq!(
        listed(&mut h).await,
        vec![("calls_4".into(), false), ("spend_1usd".into(), false)]
    );

    // Three calls cost 0.30: nothing is crossed.
    rate(&h, &[call(1, 2), call(2, 3), call(3, 4)]).await;
    assert!(crossed(&h).await.is_empty());

    // 1,000 tokens (2.10) take the period to 2.40: the spend threshold fires.
    let tokens = accepted(
        200,
        "cus_acme",
        "tok-1",
        "llm.tokens",
        at(5, 0, 0, 0),
        &[("tokens", "1000")],
    );
    rate(&h, std::slice::from_ref(&tokens)).await;
    let messages = crossed(&h).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].threshold.as_ref().unwrap().key, "spend_1usd");
    assert_eq!(value(&messages[0]), dec!(2.40));
    assert_eq!(messages[0].triggering_event_id, "tok-1");
    assert_eq!(messages[0].crossed_at, Some(ts(at(5, 0, 0, 0))));
    assert_eq!(messages[0].period, Some(november()));
    assert_eq!(messages[0].customer_id, "cus_acme");

    // The fourth and fifth calls cross the usage threshold; spend stays crossed once.
    rate(&h, &[call(4, 6), call(5, 7)]).await;
    // Redelivery and more usage in the same period emit nothing new.
    rate(&h, &[call(4, 6), call(5, 7), tokens]).await;
    rate(&h, &[call(6, 8)]).await;
    let messages = crossed(&h).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1].threshold.as_ref().unwrap().key, "calls_4");
    assert_eq!(value(&messages[1]), dec!(5));
    assert_eq!(messages[1].triggering_event_id, "call-5");
    assert_ne!(messages[0].event_id, messages[1].event_id);
    assert_eq!(
        listed(&mut h).await,
        vec![("calls_4".into(), true), ("spend_1usd".into(), true)]
    );

    // Raising the limit forgets the crossing; the same key keeps its id.
    let raised = set(&mut h, spend("spend_1usd", "10.00")).await;
    assert_eq!(raised.id, spend_threshold.id);
    assert!(!raised.crossed_in_current_period);
    assert_eq!(raised.last_crossed_at, None);

    // Usage in December is another period: the usage threshold can fire again.
    let december = accepted(
        300,
        "cus_acme",
        "dec-calls",
        "api_calls",
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 2, 0, 0, 0).unwrap(),
        &[],
    );
    let more: Vec<_> = (0..4)
        .map(|n| {
            accepted(
                301 + n,
                "cus_acme",
                &format!("dec-{n}"),
                "api_calls",
                chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 3, 0, 0, 0).unwrap(),
                &[],
            )
        })
        .chain([december])
        .collect();
    rate(&h, &more).await;
    let messages = crossed(&h).await;
    assert_eq!(messages.len(), 3);
    assert_eq!(value(&messages[2]), dec!(5));
    assert_ne!(messages[2].period, Some(november()));
}

#[tokio::test]
async fn threshold_requests_are_validated_field_by_field() {
    let (mut h, _) = standard().await;
    let refused = [
        (
            SetThresholdRequest {
                subscription_id: String::new(),
                ..spend("a", "1")
            },
            Code::InvalidArgument,
            "subscription_id",
        ),
        (
            SetThresholdRequest {
                subscription_id: "sub_nobody".into(),
                ..spend("a", "1")
            },
            Code::NotFound,
            "subscription_id",
        ),
        (
            SetThresholdRequest {
                subscription_id: "cus_000001".into(),
                ..spend("a", "1")
            },
            Code::InvalidArgument,
            "subscription_id",
        ),
        (spend("", "1"), Code::InvalidArgument, "key"),
        (spend("spend at 80%", "1"), Code::InvalidArgument, "key"),
        (
            SetThresholdRequest {
                limit: None,
                ..spend("a", "1")
            },
            Code::InvalidArgument,
            "limit",
        ),
        (spend("a", "0"), Code::InvalidArgument, "spend.amount"),
        (spend("a", "-5"), Code::InvalidArgument, "spend.amount"),
        (
            SetThresholdRequest {
                limit: Some(set_threshold_request::Limit::Spend(
                    money("EUR", "5").unwrap(),
                )),
                ..spend("a", "1")
            },
            Code::InvalidArgument,
            "spend.currency",
        ),
        (
            calls_limit("a", "0"),
            Code::InvalidArgument,
            "usage.quantity",
        ),
        (
            SetThresholdRequest {
                limit: Some(set_threshold_request::Limit::Usage(UsageLimit {
                    meter_code: "storage".into(),
                    quantity: decimal("1"),
                })),
                ..spend("a", "1")
            },
            Code::InvalidArgument,
            "usage.meter_code",
        ),
    ];
    for (request, code, field) in refused {
        let status = h.usage.set_threshold(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{request:?}: {status:?}"
        );
    }

    // Amounts and quantities are read by the one decimal reader: every
    // refused input is `invalid_decimal`, as in every service.
    for text in tally_proto::convert::REFUSED_DECIMAL_EXAMPLES {
        for (request, field) in [
            (spend("a", text), "spend.amount"),
            (calls_limit("a", text), "usage.quantity"),
        ] {
            let status = h.usage.set_threshold(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{text:?}");
            let violations = tally_runtime::error::status_violations(&status);
            assert_eq!(violations.len(), 1, "{text:?}: {status:?}");
            assert_eq!(violations[0].field, field, "{text:?}");
            assert_eq!(violations[0].rule, "invalid_decimal", "{text:?}");
        }
    }

    let threshold = set(&mut h, calls_limit("calls", "100")).await;
    let missing = h
        .usage
        .delete_threshold(DeleteThresholdRequest {
            threshold_id: "thr_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.usage
        .delete_threshold(DeleteThresholdRequest {
            threshold_id: threshold.id,
        })
        .await
        .unwrap();
    assert!(listed(&mut h).await.is_empty());
}
