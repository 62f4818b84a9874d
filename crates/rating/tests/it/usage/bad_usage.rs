//! Bad usage cannot stop billing: a negative reading nets out and a net below
//! zero is priced as zero; an event that would overflow an aggregate or its
//! line is kept as unrated usage (OUT_OF_RANGE) and acked, never
//! dead-lettered, while the customer's other events are rated; a batch of
//! usage charges answers every pair even when one subscription's stored
//! aggregate cannot be priced; the catalog refuses prices beyond its bounds.

use std::sync::{Arc, Mutex};

use tally_bus::consumer::Verdict;
use tally_bus::message::Acknowledger;
use tally_bus::{Delivery, Message};
use tally_rating::usage::consumer::USAGE_ACCEPTED_TYPE;

use super::*;

/// Records how each delivery was settled.
#[derive(Debug, Clone, Default)]
struct Settlements(Arc<Mutex<Vec<&'static str>>>);

#[derive(Debug)]
struct Recorder(Settlements);

impl Acknowledger for Recorder {
    fn ack(self: Box<Self>) {
        self.0.0.lock().unwrap().push("ack");
    }

    fn nack(self: Box<Self>) {
        self.0.0.lock().unwrap().push("nack");
    }
}

/// `events` as deliveries on their last attempt (5 of 5): a failure would
/// dead-letter them.
fn last_attempts(events: &[AcceptedEvent], settlements: &Settlements) -> Vec<Delivery> {
    events
        .iter()
        .map(|event| {
            let message = Message::new(USAGE_ACCEPTED_TYPE, 1, event.accepted.clone())
                .with_ordering_key(event.customer_id.clone());
            Delivery::new(message, 5, Box::new(Recorder(settlements.clone())))
        })
        .collect()
}

fn tokens(seq: u64, customer: &str, id: &str, day: u32, value: &str) -> AcceptedEvent {
    accepted(
        seq,
        customer,
        id,
        "llm.tokens",
        at(day, 0, 0, 0),
        &[("tokens", value)],
    )
}

/// `(event id, reason, detail)` of every unrated event, sorted.
async fn unrated_details(h: &mut Harness) -> Vec<(String, i32, String)> {
    let listed = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut details: Vec<(String, i32, String)> = listed
        .unrated_usage
        .into_iter()
        .map(|unrated| (unrated.event_id, unrated.reason, unrated.detail))
        .collect();
    details.sort();
    details
}

async fn subscribe(h: &Harness, subscription: &str, customer: &str, version: &str) {
    let applied = apply(
        h,
        &snapshot(
            subscription,
            customer,
            1,
            at(1, 0, 0, 0),
            &[(version, at(1, 0, 0, 0), None)],
        ),
    )
    .await;
    assert!(matches!(applied, Applied::Applied { .. }), "{applied:?}");
}

#[tokio::test]
async fn an_event_that_would_overflow_is_unrated_with_its_reason_acked_and_the_rest_is_rated() {
    let (mut h, version) = standard().await;
    subscribe(&h, "sub_beta", "cus_beta", &version).await;
    let consumer = h.rating.usage_consumer();
    let settlements = Settlements::default();
    let max = Decimal::MAX.to_string();
    assert_eq!(max, "79228162514264337593543950335");

    // The running total exists (committed by an earlier batch)...
    let first = [tokens(1, "cus_acme", "tok-1", 3, "1000")];
    let verdicts = consumer.process(last_attempts(&first, &settlements)).await;
    assert_eq!(verdicts, [Verdict::Acked]);
    // ... then a second event with Decimal::MAX tokens arrives with others of
    // the customer: one that fits, one whose line alone would price beyond
    // 10^12 (10^15 tokens at 0.0021 = 2.1·10^12), and a call.
    let second = [
        tokens(2, "cus_acme", "tok-max", 4, &max),
        tokens(3, "cus_acme", "tok-2", 5, "250"),
        tokens(4, "cus_acme", "tok-huge", 6, "1000000000000000"),
        accepted(5, "cus_acme", "call-1", "api_calls", at(6, 9, 0, 0), &[]),
        // Another customer's first event is Decimal::MAX: out of range alone.
        tokens(6, "cus_beta", "beta-max", 4, &max),
        tokens(7, "cus_beta", "beta-1", 5, "100"),
    ];
    let verdicts = consumer.process(last_attempts(&second, &settlements)).await;
    assert_eq!(
        verdicts,
        [Verdict::Acked; 6],
        "nothing is retried or dead-lettered"
    );
    // A second Decimal::MAX event of the same customer, alone in its batch.
    let third = [tokens(8, "cus_acme", "tok-max-2", 7, &max)];
    let verdicts = consumer.process(last_attempts(&third, &settlements)).await;
    assert_eq!(verdicts, [Verdict::Acked]);
    assert_eq!(*settlements.0.lock().unwrap(), ["ack"; 8]);

    let details = unrated_details(&mut h).await;
    let reasons: Vec<(&str, i32)> = details
        .iter()
        .map(|(id, reason, _)| (id.as_str(), *reason))
        .collect();
    let out_of_range = UnratedReason::OutOfRange as i32;
    assert_eq!(
        reasons,
        [
            ("beta-max", out_of_range),
            ("tok-huge", out_of_range),
            ("tok-max", out_of_range),
            ("tok-max-2", out_of_range),
        ]
    );
    let detail = |id: &str| {
        details
            .iter()
            .find(|(event, _, _)| event == id)
            .map(|(_, _, detail)| detail.clone())
            .unwrap()
    };
    let period = "period from 2026-11-01T00:00:00+00:00";
    assert_eq!(
        detail("tok-max"),
        format!(
            "adding it to charge tokens of sub_acme (plan version {version}, {period}) would \
             take the aggregate (sum 1000) out of range: aggregate overflow: the result does \
             not fit a 28-digit decimal exactly"
        )
    );
    assert_eq!(
        detail("tok-max-2"),
        format!(
            "adding it to charge tokens of sub_acme (plan version {version}, {period}) would \
             take the aggregate (sum 1250) out of range: aggregate overflow: the result does \
             not fit a 28-digit decimal exactly"
        )
    );
    assert_eq!(
        detail("tok-huge"),
        format!(
            "adding it to charge tokens of sub_acme (plan version {version}, {period}) would \
             take the aggregate (sum 1250) out of range: its line amount \
             2100000000002.6250 is beyond the largest allowed value, 1000000000000"
        )
    );
    assert_eq!(
        detail("beta-max"),
        format!(
            "adding it to charge tokens of sub_beta (plan version {version}, {period}) would \
             take the aggregate (sum 0) out of range: its quantity \
             79228162514264337593543950335 is beyond the largest allowed value, \
             1000000000000000000"
        )
    );

    // The customers' other events are rated, exactly.
    let acme = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&acme),
        [
            row("api_requests", dec!(1), dec!(0.10), dec!(0.10)),
            row("exports", dec!(0), dec!(0), dec!(0)),
            row("tokens", dec!(1250), dec!(2.625), dec!(2.62)),
        ]
    );
    let token_line = acme.charges.iter().find(|line| line.charge_key == "tokens");
    assert_eq!(token_line.unwrap().event_count, 2);
    assert_eq!(amount(acme.total.as_ref()), dec!(2.72));
    let beta = charges(&mut h, "sub_beta").await;
    assert_eq!(
        table(&beta).last(),
        Some(&row("tokens", dec!(100), dec!(0.21), dec!(0.21)))
    );

    // Redelivered, an out-of-range event stays unrated (never half-rated).
    let again = rate(&h, &[second[0].clone(), third[0].clone()]).await;
    assert_eq!(again, summary(0, 0, 2));
    let still: Vec<(String, i32)> = unrated_details(&mut h)
        .await
        .into_iter()
        .map(|(id, reason, _)| (id, reason))
        .collect();
    let before: Vec<(String, i32)> = reasons
        .iter()
        .map(|(id, reason)| ((*id).to_owned(), *reason))
        .collect();
    assert_eq!(still, before);
    assert_eq!(
        amount(charges(&mut h, "sub_acme").await.total.as_ref()),
        dec!(2.72)
    );
}

#[tokio::test]
async fn a_negative_reading_nets_out_and_a_net_below_zero_is_priced_as_zero() {
    let mut h = harness().await;
    h.meter(meter_request("gpu.seconds", Aggregation::Sum, "seconds"))
        .await;
    let version = published(
        &mut h,
        "gpu",
        vec![per_unit("gpu", "gpu.seconds", "0.0025")],
    )
    .await;
    subscribe(&h, "sub_acme", "cus_acme", &version).await;
    subscribe(&h, "sub_beta", "cus_beta", &version).await;
    let gpu = |seq, customer: &str, id: &str, seconds: &str| {
        accepted(
            seq,
            customer,
            id,
            "gpu.seconds",
            at(3, 0, 0, 0),
            &[("seconds", seconds), ("gpu_type", "h100")],
        )
    };
    let events = [
        gpu(1, "cus_acme", "run-1", "3600"),
        gpu(2, "cus_acme", "fix-1", "-1"),
        // The event, alone: the customer's usage goes below zero.
        gpu(3, "cus_beta", "fix-2", "-1"),
    ];
    assert_eq!(rate(&h, &events).await, summary(3, 0, 0));

    // A correction nets out: 3,599 s at 0.0025 = 8.9975 → 9.00.
    let acme = charges(&mut h, "sub_acme").await;
    assert_eq!(
        table(&acme),
        [row("gpu", dec!(3599), dec!(8.9975), dec!(9.00))]
    );
    // Below zero: the line says so and is priced on zero, never negative.
    let response = h
        .usage
        .batch_get_usage_charges(BatchGetUsageChargesRequest {
            requests: vec![
                GetUsageChargesRequest {
                    subscription_id: "sub_beta".into(),
                    period: Some(november()),
                },
                GetUsageChargesRequest {
                    subscription_id: "sub_acme".into(),
                    period: Some(november()),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let answers: Vec<GetUsageChargesResponse> = response
        .results
        .into_iter()
        .map(|result| match result.result {
            Some(usage_charges_result::Result::Charges(charges)) => charges,
            other => panic!("every pair is priced: {other:?}"),
        })
        .collect();
    let beta = &answers[0];
    assert_eq!(table(beta), [row("gpu", dec!(-1), dec!(0), dec!(0.00))]);
    let line = &beta.charges[0];
    assert_eq!(line.billable_quantity.as_ref().unwrap().value, "0");
    let steps: Vec<(i32, String, String)> = line
        .breakdown
        .iter()
        .map(|step| {
            (
                step.kind,
                step.description.clone(),
                step.quantity.as_ref().unwrap().value.clone(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (
                BreakdownStepKind::BelowZero as i32,
                "net quantity -1 is below zero: negative readings net out, the line is priced on 0"
                    .to_owned(),
                "-1".to_owned()
            ),
            (
                BreakdownStepKind::PerUnit as i32,
                "0 units at 0.0025".to_owned(),
                "0".to_owned()
            ),
        ]
    );
    assert_eq!(amount(beta.total.as_ref()), dec!(0.00));
    assert_eq!(answers[1].charges, acme.charges);
    // The live cost (now is 21 November) agrees.
    let cost = h
        .usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_beta".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(amount(cost.costs[0].usage_total.as_ref()), dec!(0.00));
}

#[tokio::test]
async fn a_batch_answers_every_pair_when_one_stored_aggregate_cannot_be_priced() {
    let (mut h, version) = standard().await;
    subscribe(&h, "sub_beta", "cus_beta", &version).await;
    rate(&h, &standard_events()).await;
    rate(&h, &[tokens(50, "cus_beta", "beta-1", 3, "100")]).await;
    // A row written before rating checked its bounds (or edited by hand):
    // Decimal::MAX tokens at 0.0021 cannot be priced exactly.
    sqlx::query(
        "UPDATE rating.aggregates SET state = jsonb_build_object('kind', 'sum', 'sum', $1::text) \
         WHERE subscription_id = 'sub_beta' AND charge_code = 'tokens'",
    )
    .bind(Decimal::MAX.to_string())
    .execute(&h.db.pool)
    .await
    .unwrap();
    let request = |subscription: &str| GetUsageChargesRequest {
        subscription_id: subscription.into(),
        period: Some(november()),
    };
    let response = h
        .usage
        .batch_get_usage_charges(BatchGetUsageChargesRequest {
            requests: vec![request("sub_beta"), request("sub_acme")],
        })
        .await
        .unwrap()
        .into_inner();
    match &response.results[0].result {
        Some(usage_charges_result::Result::Error(error)) => {
            assert_eq!(error.code, Code::FailedPrecondition as i32);
            assert_eq!(
                error.message,
                format!(
                    "subscription sub_beta, 2026-11-01T00:00:00+00:00 .. 2026-12-01T00:00:00+00:00: \
                     charge \
tokens of plan version {version} cannot price \
                     79228162514264337593543950335: arithmetic overflow while pricing: an \
                     amount does not fit a 28-digit decimal exactly"
                )
            );
        }
        other => panic!("the bad pair is an error: {other:?}"),
    }
    match &response.results[1].result {
        Some(usage_charges_result::Result::Charges(charges)) => {
            assert_eq!(amount(charges.total.as_ref()), dec!(6.02));
        }
        other => panic!("the good pair is priced: {other:?}"),
    }
}

#[tokio::test]
async fn prices_beyond_the_catalog_bounds_are_refused_with_the_field_named() {
    let mut h = harness().await;
    meters(&mut h).await;
    let plan = h.plan("extreme").await;
    // 10^28 − 1: the largest 28-digit price the decimal reader accepts.
    let ten_to_the_28 = "9999999999999999999999999999";
    let draft = h
        .draft(
            &plan,
            "extreme",
            monthly(vec![
                per_unit("tokens", "llm.tokens", ten_to_the_28),
                per_unit("fine", "exports", "0.0000000000001"),
                usage(
                    "calls",
                    "api_calls",
                    price::Model::Graduated(TieredPrice {
                        tiers: vec![
                            tier(Some("10000000000000000"), "0.1", Some(ten_to_the_28)),
                            tier(None, "0.05", None),
                        ],
                    }),
                ),
            ]),
        )
        .await;
    let violations = expected(&[
        ("spec.charges[0].price.per_unit.unit_price", "max_value"),
        (
            "spec.charges[1].price.per_unit.unit_price",
            "max_decimal_places",
        ),
        (
            "spec.charges[2].price.graduated.tiers[0].up_to",
            "max_value",
        ),
        (
            "spec.charges[2].price.graduated.tiers[0].flat_amount.amount",
            "max_value",
        ),
    ]);
    assert_eq!(h.validate(&draft.id).await, (false, violations.clone()));
    let refused = h.publish(&draft.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(status_pairs(&refused), violations);
    let described = tally_rating::catalog::status_violations(&refused);
    assert_eq!(
        described[0].description,
        "spec.charges[0].price.per_unit.unit_price 9999999999999999999999999999 is above the \
         largest allowed value, 1000000000"
    );

    // At the bounds, a version publishes.
    let plan = h.plan("bounded").await;
    let draft = h
        .draft(
            &plan,
            "bounded",
            monthly(vec![per_unit("tokens", "llm.tokens", "1000000000")]),
        )
        .await;
    assert!(h.publish(&draft.id).await.is_ok());
}
