//! The bill-run benchmark (ignored by default: it prints figures rather than
//! checking behaviour; `bench/bill-run.sh` runs it in release mode and
//! docs/benchmarks.md records the results).
//!
//! `INVOICING_BENCH_SUBSCRIPTIONS` (default 1000) customers, each with one
//! subscription to a plan with a monthly platform fee billed in advance and
//! three usage charges billed in arrears (API calls per unit, tokens on
//! graduated tiers, GPU-seconds per unit), each with usage in January. Two
//! bill runs are measured, with rating and invoicing running and the data in
//! PostgreSQL, and no grace period (every invoice is created and finalized in
//! the run):
//!
//! 1. at the start (1 January): one invoice per subscription with the
//!    in-advance fee;
//! 2. at the end of January: one invoice per subscription with the three
//!    usage lines priced by rating and February's fee.

use std::time::Instant;

use futures::StreamExt as _;
use prost::Message as _;
use rust_decimal::Decimal;
use tally_proto::events::{UsageAccepted, UsageEvent};
use tally_proto::invoicing::{CreateCustomerRequest, CreateSubscriptionRequest};
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_rating::usage::decode_accepted;

use crate::support::*;

/// Requests in flight while creating customers and subscriptions.
const SETUP_CONCURRENCY: usize = 16;
/// Usage events rated per call of the consumer.
const USAGE_BATCH: usize = 3000;

#[tokio::test]
#[ignore = "a benchmark: bench/bill-run.sh, or cargo test --release -p tally-invoicing --test it throughput -- --ignored --nocapture"]
async fn bill_run_throughput() {
    let count: usize = std::env::var("INVOICING_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    // Two services' worth of connections (a deployment gives each its own
    // pool of `database.max_connections`, 10 by default).
    let mut db = tally_testkit::postgres::database().await;
    db.pool = tally_runtime::db::connect_url(&db.url, 20).await.unwrap();
    let mut h = harness_with(
        db,
        at(2025, 1, 1),
        config(0),
        std::sync::Arc::new(tally_bus::InProcessBus::new()),
    )
    .await;
    let plan = benchmark_plan(&mut h).await;

    let setup = Instant::now();
    let created = subscribe_all(&h, &plan, count).await;
    sync(&h).await;
    let setup_subscriptions = setup.elapsed();

    let (first_run, first) = timed_run(&h).await;
    assert_eq!(first.invoices_finalized, count as u64, "{first:?}");

    let usage_started = Instant::now();
    rate_january_usage(&h, &created).await;
    let setup_usage = usage_started.elapsed();

    h.clock.set(at(2025, 2, 1)).unwrap();
    sync(&h).await;
    let (cycle_run, cycle) = timed_run(&h).await;
    assert_eq!(cycle.invoices_finalized, count as u64, "{cycle:?}");
    assert_eq!(cycle.failures, 0, "{cycle:?}");

    // Every January invoice is the same: the fee for February plus the
    // usage below (checked exactly, so a faster run is not a wrong one).
    let (invoices, lines, total): (i64, i64, Decimal) = sqlx::query_as(
        "SELECT count(DISTINCT i.id), count(*), sum(l.amount) FROM invoicing.invoices i \
         JOIN invoicing.invoice_lines l ON l.invoice_id = i.id \
         WHERE i.boundary_at = '2025-02-01T00:00:00Z' AND i.status = 'finalized'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(invoices, count as i64);
    assert_eq!(lines, 4 * count as i64);
    // 10.00 fee + 120 calls × 0.002 = 0.24 + 1,500 tokens (1,000 × 0.001 +
    // 500 × 0.0005 = 1.25) + 90 GPU-seconds × 0.0125 = 1.125 → 1.12 (half-even).
    assert_eq!(total, Decimal::new(1261, 2) * Decimal::from(count));
    let numbers: (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT number), max(substring(number from '[0-9]+$')::bigint) FROM invoicing.invoices",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        numbers,
        (2 * count as i64, 2 * count as i64),
        "gapless numbers"
    );

    let per_second = |run: std::time::Duration| count as f64 / run.as_secs_f64();
    println!(
        "setup: {count} customers and subscriptions in {:.1} s, usage ({} events) in {:.1} s",
        setup_subscriptions.as_secs_f64(),
        3 * count,
        setup_usage.as_secs_f64()
    );
    println!(
        "bill run at the start (fee in advance, 1 line each): {count} invoices in {:.2} s ({:.0} per second)",
        first_run.as_secs_f64(),
        per_second(first_run)
    );
    println!(
        "bill run at the period end (3 usage lines + fee, usage from rating): {count} invoices in {:.2} s ({:.0} per second, {:.3} ms each)",
        cycle_run.as_secs_f64(),
        per_second(cycle_run),
        cycle_run.as_secs_f64() * 1000.0 / count as f64
    );
}

/// `count` customers, each subscribed to `plan` from 1 January 2025, created
/// through the API `SETUP_CONCURRENCY` at a time: (customer, subscription).
pub(crate) async fn subscribe_all(h: &Harness, plan: &str, count: usize) -> Vec<(String, String)> {
    futures::stream::iter(0..count)
        .map(|index| {
            let mut customers = h.customers.clone();
            let mut subscriptions = h.subscriptions.clone();
            let plan = plan.to_owned();
            async move {
                let customer = customers
                    .create_customer(CreateCustomerRequest {
                        external_id: format!("bench-{index}"),
                        name: format!("Bench {index}"),
                        currency: "USD".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .customer
                    .unwrap()
                    .id;
                let subscription = subscriptions
                    .create_subscription(CreateSubscriptionRequest {
                        idempotency_key: format!("bench-{index}"),
                        customer_id: customer.clone(),
                        plan_version_id: plan,
                        start_at: Some(ts(at(2025, 1, 1))),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .subscription
                    .unwrap()
                    .id;
                (customer, subscription)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await
}

/// Waits for rating to hold every subscription (100,000 snapshots take
/// minutes: a long deadline, and a slow poll that does not compete).
pub(crate) async fn sync(h: &Harness) {
    h.sync_within(
        std::time::Duration::from_secs(1800),
        std::time::Duration::from_secs(1),
    )
    .await;
}

pub(crate) async fn timed_run(h: &Harness) -> (std::time::Duration, tally_invoicing::RunSummary) {
    // Statistics as autovacuum keeps them in a running system: these tables
    // were just filled from empty, and stale row counts would make the
    // planner scan whole tables.
    sqlx::query("ANALYZE").execute(&h.db.pool).await.unwrap();
    let started = Instant::now();
    let summary = h.invoicing.bill_run().await.unwrap();
    (started.elapsed(), summary)
}

/// A monthly USD plan: a 10.00 platform fee in advance, API calls at 0.002,
/// tokens at 0.001 for the first 1,000 then 0.0005, GPU-seconds at 0.0125.
pub(crate) async fn benchmark_plan(h: &mut Harness) -> String {
    for (code, aggregation, property) in [
        ("api_calls", Aggregation::Sum, "calls"),
        ("tokens", Aggregation::Sum, "tokens"),
        ("gpu_seconds", Aggregation::Sum, "seconds"),
    ] {
        h.catalog
            .create_meter(CreateMeterRequest {
                code: code.into(),
                name: code.into(),
                aggregation: aggregation as i32,
                property: property.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let plan_id = h
        .catalog
        .create_plan(CreatePlanRequest {
            code: "bench".into(),
            name: "Bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap()
        .id;
    let usage = |key: &str, meter: &str, model: Model| Charge {
        key: key.into(),
        name: key.into(),
        meter_code: meter.into(),
        billing_timing: BillingTiming::InArrears as i32,
        price: Some(Price { model: Some(model) }),
        ..Default::default()
    };
    let charges = vec![
        Charge {
            key: "platform".into(),
            name: "Platform fee".into(),
            billing_timing: BillingTiming::InAdvance as i32,
            price: Some(Price {
                model: Some(Model::FlatFee(FlatFeePrice {
                    amount: usd("10.00"),
                })),
            }),
            ..Default::default()
        },
        usage(
            "calls",
            "api_calls",
            Model::PerUnit(PerUnitPrice {
                unit_price: decimal("0.002"),
            }),
        ),
        usage(
            "tokens",
            "tokens",
            Model::Graduated(TieredPrice {
                tiers: vec![
                    PriceTier {
                        up_to: decimal("1000"),
                        unit_price: decimal("0.001"),
                        ..Default::default()
                    },
                    PriceTier {
                        up_to: None,
                        unit_price: decimal("0.0005"),
                        ..Default::default()
                    },
                ],
            }),
        ),
        usage(
            "gpu",
            "gpu_seconds",
            Model::PerUnit(PerUnitPrice {
                unit_price: decimal("0.0125"),
            }),
        ),
    ];
    let draft = h
        .catalog
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "bench-v1".into(),
            plan_id,
            source: Some(create_plan_version_request::Source::Spec(PlanVersionSpec {
                currency: "USD".into(),
                billing_interval: BillingInterval::Month as i32,
                interval_count: 1,
                charges,
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner()
        .plan_version
        .unwrap();
    h.catalog
        .publish_plan_version(PublishPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .unwrap();
    draft.id
}

/// Three events per customer on 10 January: 120 API calls, 1,500 tokens,
/// 90 GPU-seconds (one event each: the benchmark is about billing, not
/// rating).
pub(crate) async fn rate_january_usage(h: &Harness, created: &[(String, String)]) {
    let mut sequence = 0u64;
    let events: Vec<UsageAccepted> = created
        .iter()
        .flat_map(|(customer, _)| {
            [
                ("api_calls", "calls", "120"),
                ("tokens", "tokens", "1500"),
                ("gpu_seconds", "seconds", "90"),
            ]
            .map(|(event_type, property, value)| (customer.clone(), event_type, property, value))
        })
        .map(|(customer, event_type, property, value)| {
            sequence += 1;
            let properties = [(property.to_owned(), value.to_owned())].into();
            UsageAccepted {
                event: Some(UsageEvent {
                    id: format!("{customer}-{event_type}"),
                    customer_id: customer,
                    event_type: event_type.into(),
                    timestamp: Some(ts(at(2025, 1, 10))),
                    properties,
                    source: String::new(),
                }),
                sequence_number: sequence,
                ingested_at: Some(ts(at(2025, 1, 10))),
                intake: 1,
            }
        })
        .collect();
    for batch in events.chunks(USAGE_BATCH) {
        let decoded: Vec<_> = batch
            .iter()
            .map(|message| decode_accepted(&message.encode_to_vec()).unwrap())
            .collect();
        h.rating.usage_consumer().rate(&decoded).await.unwrap();
    }
}
