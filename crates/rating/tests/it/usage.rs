//! Usage rating on a real PostgreSQL: subscription snapshots and accepted
//! events are given to the replica and the rating path directly, and the
//! results are read through the real gRPC `RatingService`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::events::{SubscriptionEvent, UsageAccepted, UsageEvent};
use tally_proto::invoicing::{Subscription, SubscriptionPhase};
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_rating::replica::Applied;
use tally_rating::usage::{AcceptedEvent, RateSummary, decode_accepted};
use tonic::Code;

use crate::support::*;

pub fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, second)
        .unwrap()
}

pub fn november() -> tally_proto::common::TimeRange {
    range(
        at(1, 0, 0, 0),
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    )
}

pub fn range(start: DateTime<Utc>, end: DateTime<Utc>) -> tally_proto::common::TimeRange {
    tally_proto::common::TimeRange {
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
    }
}

pub fn ts(instant: DateTime<Utc>) -> prost_types::Timestamp {
    tally_runtime::clock_service::chrono_to_timestamp(instant)
}

/// An accepted event as the relay publishes it, decoded as rating reads it.
pub fn accepted(
    seq: u64,
    customer: &str,
    id: &str,
    event_type: &str,
    time: DateTime<Utc>,
    properties: &[(&str, &str)],
) -> AcceptedEvent {
    let message = UsageAccepted {
        event: Some(UsageEvent {
            id: id.into(),
            customer_id: customer.into(),
            event_type: event_type.into(),
            timestamp: Some(ts(time)),
            properties: properties
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            source: String::new(),
        }),
        sequence_number: seq,
        ingested_at: Some(ts(time)),
        intake: 1,
    };
    decode_accepted(&message.encode_to_vec()).unwrap()
}

/// A phase: plan version, start, end.
pub type PhaseSpec<'a> = (&'a str, DateTime<Utc>, Option<DateTime<Utc>>);

/// A snapshot of `subscription` at `version` with `phases`.
pub fn snapshot(
    subscription: &str,
    customer: &str,
    version: u64,
    anchor: DateTime<Utc>,
    phases: &[PhaseSpec<'_>],
) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription_id: subscription.into(),
        customer_id: customer.into(),
        version,
        subscription: Some(Subscription {
            id: subscription.into(),
            customer_id: customer.into(),
            currency: "USD".into(),
            start_at: Some(ts(phases[0].1)),
            billing_anchor_at: Some(ts(anchor)),
            version,
            phases: phases
                .iter()
                .map(|(version, start, end)| SubscriptionPhase {
                    plan_version_id: (*version).into(),
                    start_at: Some(ts(*start)),
                    end_at: end.map(ts),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Meters `api_calls` (count), `llm.tokens` (sum of tokens), `exports` (sum of rows).
async fn meters(h: &mut Harness) {
    h.meter(meter_request("api_calls", Aggregation::Count, ""))
        .await;
    h.meter(meter_request("llm.tokens", Aggregation::Sum, "tokens"))
        .await;
    h.meter(meter_request("exports", Aggregation::Sum, "rows"))
        .await;
}

/// Publishes a plan `code` with `charges` and returns the version id.
pub async fn published(h: &mut Harness, code: &str, charges: Vec<Charge>) -> String {
    let plan_id = h.plan(code).await;
    let draft = h.draft(&plan_id, code, monthly(charges)).await;
    h.publish(&draft.id).await.unwrap().id
}

pub fn per_unit(key: &str, meter: &str, price: &str) -> Charge {
    usage(
        key,
        meter,
        Model::PerUnit(PerUnitPrice {
            unit_price: decimal(price),
        }),
    )
}

/// Graduated calls (3 at 0.10, then 0.05), tokens at 0.0021, exports in
/// packages of 10 rows at 1.50 (started packages count).
fn standard_charges() -> Vec<Charge> {
    vec![
        usage(
            "api_requests",
            "api_calls",
            Model::Graduated(TieredPrice {
                tiers: vec![tier(Some("3"), "0.10", None), tier(None, "0.05", None)],
            }),
        ),
        per_unit("tokens", "llm.tokens", "0.0021"),
        usage(
            "exports",
            "exports",
            Model::Package(PackagePrice {
                package_size: decimal("10"),
                package_price: usd("1.50"),
                rounding: PackageRounding::Up as i32,
                free_units: None,
            }),
        ),
    ]
}

/// The November usage of `cus_acme`: 5 calls, 1,250 tokens, 11 export rows.
fn standard_events() -> Vec<AcceptedEvent> {
    let customer = "cus_acme";
    let mut events: Vec<AcceptedEvent> = (0..5)
        .map(|n| {
            accepted(
                10 + n,
                customer,
                &format!("call-{n}"),
                "api_calls",
                at(2 + u32::try_from(n).unwrap(), 9, 0, 0),
                &[],
            )
        })
        .collect();
    let measured = [
        (
            20,
            "tok-1",
            "llm.tokens",
            at(3, 0, 0, 0),
            ("tokens", "1000"),
        ),
        (
            21,
            "tok-2",
            "llm.tokens",
            at(20, 0, 0, 0),
            ("tokens", "250"),
        ),
        (30, "exp-1", "exports", at(4, 0, 0, 0), ("rows", "7")),
        (31, "exp-2", "exports", at(5, 0, 0, 0), ("rows", "4.0")),
    ];
    for (seq, id, event_type, time, property) in measured {
        events.push(accepted(seq, customer, id, event_type, time, &[property]));
    }
    events
}

/// A summary of `rated`, `duplicates` and `unrated` events.
fn summary(rated: usize, duplicates: usize, unrated: usize) -> RateSummary {
    RateSummary {
        rated,
        duplicates,
        unrated,
    }
}

/// `(event id, reason)` of every unrated event, sorted.
async fn unrated_reasons(h: &mut Harness) -> Vec<(String, i32)> {
    let listed = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut reasons: Vec<(String, i32)> = listed
        .unrated_usage
        .iter()
        .map(|unrated| (unrated.event_id.clone(), unrated.reason))
        .collect();
    reasons.sort();
    reasons
}

async fn rate(h: &Harness, events: &[AcceptedEvent]) -> RateSummary {
    h.rating.usage_consumer().rate(events).await.unwrap()
}

async fn apply(h: &Harness, event: &SubscriptionEvent) -> Applied {
    h.rating.replica().apply(event).await.unwrap()
}

async fn charges(h: &mut Harness, subscription: &str) -> GetUsageChargesResponse {
    h.usage
        .get_usage_charges(GetUsageChargesRequest {
            subscription_id: subscription.into(),
            period: Some(november()),
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn amount(money: Option<&tally_proto::common::Money>) -> Decimal {
    money.unwrap().amount.parse().unwrap()
}

/// `(charge, quantity, precise, amount)` of each line.
fn table(response: &GetUsageChargesResponse) -> Vec<(String, Decimal, Decimal, Decimal)> {
    response
        .charges
        .iter()
        .map(|line| {
            (
                line.charge_key.clone(),
                line.quantity.as_ref().unwrap().value.parse().unwrap(),
                amount(line.precise_amount.as_ref()),
                amount(line.amount.as_ref()),
            )
        })
        .collect()
}

fn row(
    key: &str,
    quantity: Decimal,
    precise: Decimal,
    rounded: Decimal,
) -> (String, Decimal, Decimal, Decimal) {
    (key.to_owned(), quantity, precise, rounded)
}

/// Subscribes `cus_acme` (`sub_acme`, version 1) to `version` from 1 November.
async fn subscribe_acme(h: &Harness, version: &str) -> Applied {
    apply(
        h,
        &snapshot(
            "sub_acme",
            "cus_acme",
            1,
            at(1, 0, 0, 0),
            &[(version, at(1, 0, 0, 0), None)],
        ),
    )
    .await
}

/// A harness with the standard catalog and `cus_acme` subscribed from 1 November.
async fn standard() -> (Harness, String) {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let applied = subscribe_acme(&h, &version).await;
    assert!(matches!(applied, Applied::Applied { .. }), "{applied:?}");
    (h, version)
}

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
async fn redelivered_and_reordered_events_give_identical_charges() {
    let (mut in_order, _) = standard().await;
    let events = standard_events();
    rate(&in_order, &events).await;
    let expected = charges(&mut in_order, "sub_acme").await;

    let (mut shuffled, _) = standard().await;
    let mut reversed = events.clone();
    reversed.reverse();
    // Half, then everything twice in one batch (duplicates within and across batches).
    let first = rate(&shuffled, &reversed[..4]).await;
    assert_eq!(first.rated, 4);
    let mut twice = reversed.clone();
    twice.extend(events.iter().cloned());
    let second = rate(&shuffled, &twice).await;
    assert_eq!(second, summary(5, 13, 0));
    let again = rate(&shuffled, &events).await;
    assert_eq!(again, summary(0, 9, 0));

    let actual = charges(&mut shuffled, "sub_acme").await;
    assert_eq!(actual.charges, expected.charges);
    assert_eq!(actual.total, expected.total);
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
async fn usage_without_a_subscription_is_kept_and_rated_when_a_backdated_one_arrives() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let late = vec![
        accepted(1, "cus_late", "l1", "api_calls", at(3, 0, 0, 0), &[]),
        accepted(
            2,
            "cus_late",
            "l2",
            "llm.tokens",
            at(4, 0, 0, 0),
            &[("tokens", "100")],
        ),
        accepted(3, "cus_late", "l3", "api_calls", at(5, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &late).await, summary(0, 0, 3));
    // Redelivery keeps one row per event.
    assert_eq!(rate(&h, &late).await.unrated, 3);

    let first_page = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            customer_id: "cus_late".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.total_count, 3);
    assert_eq!(first_page.unrated_usage.len(), 2);
    assert!(!first_page.next_page_token.is_empty());
    let second_page = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            customer_id: "cus_late".into(),
            page_size: 2,
            page_token: first_page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.unrated_usage.len(), 1);
    assert!(second_page.next_page_token.is_empty());
    let mut ids: Vec<String> = first_page
        .unrated_usage
        .iter()
        .chain(&second_page.unrated_usage)
        .map(|unrated| {
            assert_eq!(unrated.reason, UnratedReason::UnknownCustomer as i32);
            unrated.event_id.clone()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["l1", "l2", "l3"]);
    let tokens = first_page
        .unrated_usage
        .iter()
        .chain(&second_page.unrated_usage)
        .find(|unrated| unrated.event_id == "l2")
        .unwrap();
    assert_eq!(tokens.event_type, "llm.tokens");
    assert_eq!(
        tokens.properties.get("tokens").map(String::as_str),
        Some("100")
    );
    assert_eq!(tokens.sequence_number, 2);
    assert_eq!(tokens.timestamp, Some(ts(at(4, 0, 0, 0))));

    // The subscription is created on the 21st, backdated to the 1st.
    let applied = apply(
        &h,
        &snapshot(
            "sub_late",
            "cus_late",
            1,
            at(1, 0, 0, 0),
            &[(&version, at(1, 0, 0, 0), None)],
        ),
    )
    .await;
    assert_eq!(
        applied,
        Applied::Applied {
            retried: summary(3, 0, 0)
        }
    );
    let left = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.total_count, 0, "{left:?}");
    let response = charges(&mut h, "sub_late").await;
    assert_eq!(
        table(&response),
        vec![
            row("api_requests", dec!(2), dec!(0.20), dec!(0.20)),
            // A charge without usage still has its (zero) line.
            row("exports", dec!(0), dec!(0), dec!(0)),
            row("tokens", dec!(100), dec!(0.21), dec!(0.21)),
        ]
    );
    // The same events delivered again now are duplicates.
    assert_eq!(rate(&h, &late).await.duplicates, 3);
}

#[tokio::test]
async fn each_reason_for_unrated_usage_is_named() {
    let mut h = harness().await;
    meters(&mut h).await;
    h.meter(meter_request("orphan", Aggregation::Count, ""))
        .await;
    let version = published(&mut h, "standard", standard_charges()).await;
    apply(
        &h,
        &snapshot(
            "sub_acme",
            "cus_acme",
            1,
            at(10, 0, 0, 0),
            &[(&version, at(10, 0, 0, 0), None)],
        ),
    )
    .await;
    let events = vec![
        accepted(1, "cus_acme", "early", "api_calls", at(5, 0, 0, 0), &[]),
        accepted(2, "cus_acme", "orphan", "orphan", at(12, 0, 0, 0), &[]),
        accepted(
            3,
            "cus_acme",
            "bad",
            "llm.tokens",
            at(12, 0, 0, 0),
            &[("tokens", "lots")],
        ),
        accepted(4, "cus_acme", "missing", "llm.tokens", at(12, 0, 0, 0), &[]),
        accepted(
            5,
            "cus_other",
            "stranger",
            "api_calls",
            at(12, 0, 0, 0),
            &[],
        ),
        accepted(6, "cus_acme", "fine", "api_calls", at(12, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &events).await, summary(1, 0, 5));
    let reasons = unrated_reasons(&mut h).await;
    assert_eq!(
        reasons,
        vec![
            ("bad".to_owned(), UnratedReason::InvalidProperty as i32),
            ("early".to_owned(), UnratedReason::NoSubscription as i32),
            ("missing".to_owned(), UnratedReason::InvalidProperty as i32),
            ("orphan".to_owned(), UnratedReason::NoMatchingCharge as i32),
            ("stranger".to_owned(), UnratedReason::UnknownCustomer as i32),
        ]
    );
    let only_invalid = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            reason: UnratedReason::InvalidProperty as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_invalid.total_count, 2);
    let bad_token = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest {
            page_token: "meters:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn snapshots_apply_by_version_whatever_the_delivery_order() {
    let mut h = harness().await;
    meters(&mut h).await;
    let basic = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let pro = published(&mut h, "pro", vec![per_unit("calls", "api_calls", "0.02")]).await;
    let created = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&basic, at(1, 0, 0, 0), None)],
    );
    let upgraded = snapshot(
        "sub_acme",
        "cus_acme",
        2,
        at(1, 0, 0, 0),
        &[(&pro, at(1, 0, 0, 0), None)],
    );
    assert!(matches!(
        apply(&h, &upgraded).await,
        Applied::Applied { .. }
    ));
    assert_eq!(
        apply(&h, &created).await,
        Applied::Stale { stored_version: 2 }
    );
    assert_eq!(
        apply(&h, &upgraded).await,
        Applied::Stale { stored_version: 2 }
    );
    rate(
        &h,
        &[accepted(
            1,
            "cus_acme",
            "a",
            "api_calls",
            at(2, 0, 0, 0),
            &[],
        )],
    )
    .await;
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(response.charges.len(), 1);
    assert_eq!(response.charges[0].plan_version_id, pro);

    let broken = SubscriptionEvent {
        subscription: None,
        ..created
    };
    let error = h.rating.replica().apply(&broken).await.unwrap_err();
    assert!(
        matches!(error, tally_rating::RatingError::InvalidArgument(_)),
        "{error:?}"
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
async fn the_consumers_rate_what_arrives_on_the_bus() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let _tasks = h.rating.spawn_background(&h.shutdown);
    let bus = h.rating.bus().clone();
    let publish_usage = |events: Vec<AcceptedEvent>| {
        let bus = bus.clone();
        async move {
            for event in events {
                let message = tally_bus::Message::new(
                    tally_rating::usage::consumer::USAGE_ACCEPTED_TYPE,
                    1,
                    event.accepted.clone(),
                )
                .with_id(format!("uacc_{}", event.sequence_number))
                .with_ordering_key(event.customer_id.clone());
                bus.publish(tally_bus::topics::USAGE_ACCEPTED, message)
                    .await
                    .unwrap();
            }
        }
    };
    // Half the usage before the subscription is known, the rest (and a
    // redelivery of everything) after.
    let events = standard_events();
    publish_usage(events[..4].to_vec()).await;
    let created = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    bus.publish(
        tally_bus::topics::SUBSCRIPTION_EVENTS,
        tally_bus::Message::new(
            tally_rating::replica::SUBSCRIPTION_EVENT_TYPE,
            1,
            created.encode_to_vec(),
        )
        .with_ordering_key("cus_acme"),
    )
    .await
    .unwrap();
    publish_usage(events[4..].to_vec()).await;
    publish_usage(events.clone()).await;

    let mut last = None;
    for _ in 0..200 {
        if let Ok(response) = h
            .usage
            .get_usage_charges(GetUsageChargesRequest {
                subscription_id: "sub_acme".into(),
                period: Some(november()),
            })
            .await
        {
            let response = response.into_inner();
            if amount(response.total.as_ref()) == dec!(6.02) {
                last = Some(response);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = last.expect("the bus delivers the usage and the subscription");
    let events: u64 = response.charges.iter().map(|line| line.event_count).sum();
    assert_eq!(events, 9);
    let unrated = h
        .usage
        .list_unrated_usage(ListUnratedUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unrated.total_count, 0);
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
async fn concurrent_consumers_count_each_event_once() {
    let (mut h, _) = standard().await;
    let events = standard_events();
    let mut reversed = events.clone();
    reversed.reverse();
    let first = h.rating.usage_consumer();
    let second = h.rating.usage_consumer();
    let (left, right) = tokio::join!(first.rate(&events), second.rate(&reversed));
    let (left, right) = (left.unwrap(), right.unwrap());
    assert_eq!(left.rated + right.rated, 9, "{left:?} {right:?}");
    assert_eq!(left.duplicates + right.duplicates, 9, "{left:?} {right:?}");
    let response = charges(&mut h, "sub_acme").await;
    assert_eq!(amount(response.total.as_ref()), dec!(6.02));
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
    assert_eq!(
        response.charges[0].breakdown[0].kind,
        BreakdownStepKind::Percentage as i32
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
async fn usage_while_paused_or_after_the_end_is_not_billed_until_a_snapshot_covers_it() {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(
        &mut h,
        "basic",
        vec![per_unit("calls", "api_calls", "0.01")],
    )
    .await;
    let mut paused = snapshot(
        "sub_acme",
        "cus_acme",
        1,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    if let Some(subscription) = paused.subscription.as_mut() {
        subscription.pause = Some(tally_proto::invoicing::PauseWindow {
            pause_at: Some(ts(at(10, 0, 0, 0))),
            resume_at: Some(ts(at(12, 0, 0, 0))),
        });
        subscription.cancel_at = Some(ts(at(25, 0, 0, 0)));
    }
    apply(&h, &paused).await;
    let events = vec![
        accepted(1, "cus_acme", "before", "api_calls", at(9, 23, 0, 0), &[]),
        accepted(2, "cus_acme", "paused", "api_calls", at(11, 0, 0, 0), &[]),
        accepted(3, "cus_acme", "resumed", "api_calls", at(12, 0, 0, 0), &[]),
        accepted(4, "cus_acme", "ended", "api_calls", at(26, 0, 0, 0), &[]),
    ];
    assert_eq!(rate(&h, &events).await, summary(2, 0, 2));
    let held = unrated_reasons(&mut h).await;
    assert_eq!(
        held,
        vec![
            ("ended".to_owned(), UnratedReason::NoSubscription as i32),
            ("paused".to_owned(), UnratedReason::NoSubscription as i32),
        ]
    );
    // The pause and the cancellation are withdrawn: both events are rated.
    let resumed = snapshot(
        "sub_acme",
        "cus_acme",
        2,
        at(1, 0, 0, 0),
        &[(&version, at(1, 0, 0, 0), None)],
    );
    assert_eq!(
        apply(&h, &resumed).await,
        Applied::Applied {
            retried: summary(2, 0, 0)
        }
    );
    assert_eq!(
        table(&charges(&mut h, "sub_acme").await),
        vec![row("calls", dec!(4), dec!(0.04), dec!(0.04))]
    );
}
