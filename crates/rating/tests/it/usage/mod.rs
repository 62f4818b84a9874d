//! Usage rating on a real PostgreSQL: subscription snapshots and accepted
//! events are given to the replica and the rating path directly, and the
//! results are read through the real gRPC `RatingService`.

mod bad_usage;
mod delivery;
mod pricing;
mod subscriptions;

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

pub use crate::support::*;

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
pub async fn meters(h: &mut Harness) {
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
pub fn standard_charges() -> Vec<Charge> {
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
pub fn standard_events() -> Vec<AcceptedEvent> {
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
pub fn summary(rated: usize, duplicates: usize, unrated: usize) -> RateSummary {
    RateSummary {
        rated,
        duplicates,
        unrated,
    }
}

/// `(event id, reason)` of every unrated event, sorted.
pub async fn unrated_reasons(h: &mut Harness) -> Vec<(String, i32)> {
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

pub async fn rate(h: &Harness, events: &[AcceptedEvent]) -> RateSummary {
    h.rating.usage_consumer().rate(events).await.unwrap()
}

pub async fn apply(h: &Harness, event: &SubscriptionEvent) -> Applied {
    h.rating.replica().apply(event).await.unwrap()
}

pub async fn charges(h: &mut Harness, subscription: &str) -> GetUsageChargesResponse {
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
pub fn table(response: &GetUsageChargesResponse) -> Vec<(String, Decimal, Decimal, Decimal)> {
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

pub fn row(
    key: &str,
    quantity: Decimal,
    precise: Decimal,
    rounded: Decimal,
) -> (String, Decimal, Decimal, Decimal) {
    (key.to_owned(), quantity, precise, rounded)
}

/// Subscribes `cus_acme` (`sub_acme`, version 1) to `version` from 1 November.
pub async fn subscribe_acme(h: &Harness, version: &str) -> Applied {
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
pub async fn standard() -> (Harness, String) {
    let mut h = harness().await;
    meters(&mut h).await;
    let version = published(&mut h, "standard", standard_charges()).await;
    let applied = subscribe_acme(&h, &version).await;
    assert!(matches!(applied, Applied::Applied { .. }), "{applied:?}");
    (h, version)
}
