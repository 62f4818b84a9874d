//! `tally load rating-…`: the rating benchmarks of `docs/benchmarks.md`.
//!
//! Each command runs the services it measures inside itself, on the
//! configured PostgreSQL (`DATABASE_URL`, a fresh database) and an in-process
//! bus, exactly as `tally dev` composes them, and serves their gRPC on a free
//! local port that the measurements call. Invoicing's part (subscriptions) is
//! played by applying subscription snapshots to rating's replica directly.
//!
//! * `rating-consume`: `usage-accepted` messages are queued first, then the
//!   usage consumer is started and timed until every event is in the
//!   aggregates (events/s);
//! * `rating-latency`: a steady stream of usage goes through ingest's gRPC
//!   (`IngestBatch`) while a probe customer sends one event every 100 ms and
//!   polls `GetCurrentCost` until it is reflected (accepted → billable, p99);
//! * `rating-cost`: one customer gets `--events` events in the open period,
//!   then `GetCurrentCost` is called `--calls` times (p50/p99).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use clap::Args;
use prost::Message as _;
use tally_bus::{InProcessBus, Message, SharedBus, topics};
use tally_proto::common::Decimal;
use tally_proto::events::{SubscriptionEvent, UsageAccepted, UsageEvent};
use tally_proto::ingest::IngestBatchRequest;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::invoicing::{Subscription, SubscriptionPhase};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::*;
use tally_runtime::auth::AuthLayer;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::ids::ClockIds;
use tally_runtime::peer::Peer;
use tally_runtime::{Config, Shutdown, SystemClock, server};
use tonic::transport::Channel;

use crate::progress::percentile;

/// Options of `tally load rating-consume`.
#[derive(Debug, Args)]
pub struct RatingConsume {
    /// Accepted events to queue and rate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Customers (each with one subscription) the events are spread over.
    #[arg(long, default_value_t = 1000)]
    customers: u64,
}

/// Options of `tally load rating-latency`.
#[derive(Debug, Args)]
pub struct RatingLatency {
    /// Background usage sent through ingest, events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Events per `IngestBatch` of the background stream.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Seconds of measurement (after 5 s of warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Customers the background usage is spread over.
    #[arg(long, default_value_t = 1000)]
    customers: u64,
}

/// Options of `tally load rating-cost`.
#[derive(Debug, Args)]
pub struct RatingCost {
    /// Events of the one customer in the open period.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// `GetCurrentCost` calls measured.
    #[arg(long, default_value_t = 2000)]
    calls: u64,
}

/// Rating (and optionally ingest) running inside this process.
struct Stack {
    pool: sqlx::PgPool,
    bus: SharedBus,
    rating: tally_rating::Rating,
    address: std::net::SocketAddr,
    shutdown: Shutdown,
    catalog: CatalogServiceClient<Channel>,
    usage: RatingServiceClient<Channel>,
}

async fn stack(config: &Config, with_ingest: bool) -> anyhow::Result<Stack> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    tally_runtime::db::migrate(&pool).await?;
    let clock: tally_runtime::SharedClock = Arc::new(SystemClock);
    let ids: tally_runtime::ids::SharedIdGenerator = Arc::new(ClockIds::new(Arc::clone(&clock)));
    let bus: SharedBus = Arc::new(InProcessBus::new());
    for topic in topics::ALL {
        bus.ensure_topic(topic).await?;
    }
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let address = listener.local_addr;
    let shutdown = Shutdown::new();
    let rating = tally_rating::Rating::start_with(
        tally_rating::RatingDeps {
            pool: pool.clone(),
            bus: Arc::clone(&bus),
            clock: Arc::clone(&clock),
            ids: Arc::clone(&ids),
            ingest: Peer::lazy(&format!("http://{address}"), None)?,
        },
        config.rating.clone(),
    )
    .await?;
    let mut services = rating.grpc_server(config.grpc.max_message_bytes);
    if with_ingest {
        let ingest = tally_ingest::Ingest::start(tally_ingest::IngestDeps {
            pool: pool.clone(),
            bus: Arc::clone(&bus),
            clock: Arc::clone(&clock),
            ids: Arc::clone(&ids),
            config: config.ingest.clone(),
            max_delivery_attempts: config.bus.max_delivery_attempts,
        })
        .await?;
        ingest.spawn_background(&shutdown);
        services = services.merge(ingest.grpc_server(config.grpc.max_message_bytes));
    }
    let serving = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = services
            .serve(
                listener,
                AuthLayer::disabled(),
                serving,
                Duration::from_secs(1),
            )
            .await
        {
            tracing::error!(%error, "the benchmark's server stopped");
        }
    });
    let url = format!("http://{address}");
    Ok(Stack {
        catalog: CatalogServiceClient::connect(url.clone()).await?,
        usage: RatingServiceClient::connect(url).await?,
        pool,
        bus,
        rating,
        address,
        shutdown,
    })
}

fn decimal(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

fn usage_charge(key: &str, meter: &str, model: price::Model) -> Charge {
    Charge {
        key: key.into(),
        name: key.replace('_', " "),
        meter_code: meter.into(),
        billing_timing: BillingTiming::InArrears as i32,
        price: Some(Price { model: Some(model) }),
        ..Default::default()
    }
}

/// An AI-inference price book: requests per unit, tokens on graduated tiers,
/// GPU-seconds priced by GPU type. Returns the published plan version.
async fn seed_catalog(stack: &mut Stack) -> anyhow::Result<String> {
    let meters = [
        ("api_calls", Aggregation::Count, "", vec![]),
        ("llm.tokens", Aggregation::Sum, "tokens", vec![]),
        (
            "gpu.seconds",
            Aggregation::Sum,
            "seconds",
            vec!["gpu".to_owned()],
        ),
    ];
    for (code, aggregation, property, group_by) in meters {
        stack
            .catalog
            .create_meter(CreateMeterRequest {
                code: code.into(),
                name: code.into(),
                aggregation: aggregation as i32,
                property: property.into(),
                group_by,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating meter {code} (use a fresh database)"))?;
    }
    let plan = stack
        .catalog
        .create_plan(CreatePlanRequest {
            code: "inference".into(),
            name: "Inference".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .plan
        .context("no plan")?;
    let matrix = |gpu: &str, price: &str| MatrixCell {
        dimension_values: HashMap::from([("gpu".to_owned(), gpu.to_owned())]),
        unit_price: decimal(price),
    };
    let spec = PlanVersionSpec {
        currency: "USD".into(),
        billing_interval: BillingInterval::Month as i32,
        interval_count: 1,
        charges: vec![
            usage_charge(
                "requests",
                "api_calls",
                price::Model::PerUnit(PerUnitPrice {
                    unit_price: decimal("0.0002"),
                }),
            ),
            usage_charge(
                "tokens",
                "llm.tokens",
                price::Model::Graduated(TieredPrice {
                    tiers: vec![
                        PriceTier {
                            up_to: decimal("1000000"),
                            unit_price: decimal("0.000002"),
                            flat_amount: None,
                        },
                        PriceTier {
                            up_to: None,
                            unit_price: decimal("0.0000015"),
                            flat_amount: None,
                        },
                    ],
                }),
            ),
            usage_charge(
                "gpu",
                "gpu.seconds",
                price::Model::Matrix(MatrixPrice {
                    dimensions: vec!["gpu".into()],
                    cells: vec![matrix("h100", "0.0012"), matrix("a100", "0.0008")],
                    default_unit_price: None,
                }),
            ),
        ],
        ..Default::default()
    };
    let draft = stack
        .catalog
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: "bench".into(),
            plan_id: plan.id,
            source: Some(create_plan_version_request::Source::Spec(spec)),
        })
        .await?
        .into_inner()
        .plan_version
        .context("no draft")?;
    let published = stack
        .catalog
        .publish_plan_version(PublishPlanVersionRequest {
            plan_version_id: draft.id,
        })
        .await?
        .into_inner()
        .plan_version
        .context("not published")?;
    Ok(published.id)
}

/// The start of the current calendar month (the subscriptions' anchor).
fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Subscribes each customer to `plan_version` from the start of the month.
async fn subscribe(stack: &Stack, customers: &[String], plan_version: &str) -> anyhow::Result<()> {
    let start = chrono_to_timestamp(month_start(Utc::now()));
    let replica = stack.rating.replica();
    for customer in customers {
        let subscription_id = format!("sub_{}", customer.trim_start_matches("cus_"));
        let subscription = Subscription {
            id: subscription_id.clone(),
            customer_id: customer.clone(),
            currency: "USD".into(),
            start_at: Some(start),
            billing_anchor_at: Some(start),
            version: 1,
            phases: vec![SubscriptionPhase {
                plan_version_id: plan_version.to_owned(),
                start_at: Some(start),
                ..Default::default()
            }],
            ..Default::default()
        };
        replica
            .apply(&SubscriptionEvent {
                subscription_id,
                customer_id: customer.clone(),
                version: 1,
                subscription: Some(subscription),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

fn customers(count: u64) -> Vec<String> {
    (0..count).map(|n| format!("cus_bench{n:06}")).collect()
}

/// Usage event `number` of `customer` at `at`: a request, tokens or GPU time.
fn usage_event(run: &str, number: u64, customer: &str, at: DateTime<Utc>) -> UsageEvent {
    let (event_type, properties) = match number % 3 {
        0 => ("api_calls", vec![]),
        1 => (
            "llm.tokens",
            vec![("tokens".to_owned(), (100 + number % 4000).to_string())],
        ),
        _ => (
            "gpu.seconds",
            vec![
                (
                    "seconds".to_owned(),
                    format!("{}.{:03}", number % 30, number % 1000),
                ),
                (
                    "gpu".to_owned(),
                    if number.is_multiple_of(2) {
                        "h100"
                    } else {
                        "a100"
                    }
                    .to_owned(),
                ),
            ],
        ),
    };
    UsageEvent {
        id: format!("{run}-{number:010}"),
        customer_id: customer.to_owned(),
        event_type: event_type.to_owned(),
        timestamp: Some(chrono_to_timestamp(at)),
        properties: properties.into_iter().collect(),
        source: "tally-load".to_owned(),
    }
}

/// Queues `count` accepted events (as ingest's relay publishes them) spread
/// over `customers` and the elapsed part of the month.
async fn queue_accepted(bus: &SharedBus, customers: &[String], count: u64) -> anyhow::Result<()> {
    let now = Utc::now();
    let start = month_start(now);
    let span_ms = u64::try_from((now - start).num_milliseconds().max(1)).unwrap_or(1);
    let customer_count = u64::try_from(customers.len()).unwrap_or(1).max(1);
    for number in 0..count {
        let customer = &customers[usize::try_from(number % customer_count).unwrap_or(0)];
        let offset = chrono::Duration::milliseconds(
            i64::try_from((number * 104_729) % span_ms).unwrap_or(0),
        );
        let accepted = UsageAccepted {
            event: Some(usage_event("consume", number, customer, start + offset)),
            sequence_number: number + 1,
            ingested_at: Some(chrono_to_timestamp(now)),
            intake: 1,
        };
        let message = Message::new(
            tally_rating::usage::consumer::USAGE_ACCEPTED_TYPE,
            1,
            accepted.encode_to_vec(),
        )
        .with_id(format!("uacc_{}", number + 1))
        .with_ordering_key(customer.clone());
        bus.publish(topics::USAGE_ACCEPTED, message).await?;
    }
    Ok(())
}

/// Waits until `count` events are rated; returns how long it took.
async fn wait_rated(pool: &sqlx::PgPool, count: u64, started: Instant) -> anyhow::Result<Duration> {
    let expected = i64::try_from(count)?;
    let mut progress = crate::progress::Progress::on_stderr();
    loop {
        let (rated,): (i64,) = sqlx::query_as("SELECT count(*) FROM rating.rated_events")
            .fetch_one(pool)
            .await?;
        if rated >= expected {
            return Ok(started.elapsed());
        }
        let done = u64::try_from(rated).unwrap_or(0);
        progress.tick(|| crate::progress::Snapshot {
            verb: "rated",
            done,
            parts: Vec::new(),
            fraction: Some((done, count)),
        });
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "only {rated} of {count} events were rated within an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tally load rating-consume`.
pub async fn consume(config: &Config, load: RatingConsume) -> anyhow::Result<String> {
    let mut stack = stack(config, false).await?;
    let plan_version = seed_catalog(&mut stack).await?;
    let customers = customers(load.customers);
    subscribe(&stack, &customers, &plan_version).await?;
    queue_accepted(&stack.bus, &customers, load.events).await?;
    let started = Instant::now();
    let _tasks = stack.rating.spawn_background(&stack.shutdown);
    let elapsed = wait_rated(&stack.pool, load.events, started).await?;
    let (absorbed,): (Option<i64>,) =
        sqlx::query_as("SELECT sum(event_count)::bigint FROM rating.aggregates")
            .fetch_one(&stack.pool)
            .await?;
    stack.shutdown.trigger();
    Ok(format!(
        "rating-consume: {} events of {} customers rated in {:.2} s: {:.0} events/s \
         (aggregates hold {} events)",
        load.events,
        load.customers,
        elapsed.as_secs_f64(),
        load.events as f64 / elapsed.as_secs_f64(),
        absorbed.unwrap_or_default(),
    ))
}

/// The probe customer's requests counted by `GetCurrentCost`.
async fn probe_requests(usage: &mut RatingServiceClient<Channel>) -> anyhow::Result<u64> {
    let cost = usage
        .get_current_cost(GetCurrentCostRequest {
            customer_id: "cus_probe".into(),
            subscription_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(cost
        .costs
        .iter()
        .flat_map(|subscription| &subscription.charges)
        .filter(|line| line.charge_key == "requests")
        .map(|line| line.event_count)
        .sum())
}

/// `tally load rating-latency`.
pub async fn latency(config: &Config, load: RatingLatency) -> anyhow::Result<String> {
    let mut stack = stack(config, true).await?;
    let plan_version = seed_catalog(&mut stack).await?;
    let mut everyone = customers(load.customers);
    everyone.push("cus_probe".to_owned());
    subscribe(&stack, &everyone, &plan_version).await?;
    let _tasks = stack.rating.spawn_background(&stack.shutdown);
    let url = format!("http://{}", stack.address);

    // The background stream: `batch` events every `batch / rate` seconds, each
    // batch its own call (at most 64 in flight), so a slow commit does not
    // lower the offered rate.
    let sent = Arc::new(AtomicU64::new(0));
    let background = {
        let ingest = IngestServiceClient::connect(url.clone()).await?;
        let sent = Arc::clone(&sent);
        let customers = Arc::new(customers(load.customers));
        let stop = stack.shutdown.clone();
        let interval = Duration::from_secs_f64(load.batch as f64 / load.rate as f64);
        let batch = load.batch;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut number = 0_u64;
            while !stop.is_triggered() {
                ticker.tick().await;
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    return;
                };
                let now = Utc::now();
                let events = (0..batch)
                    .map(|offset| {
                        let n = number + offset;
                        let customer =
                            &customers[usize::try_from(n % customers.len() as u64).unwrap_or(0)];
                        usage_event("stream", n, customer, now)
                    })
                    .collect();
                number += batch;
                let mut ingest = ingest.clone();
                let sent = Arc::clone(&sent);
                tokio::spawn(async move {
                    match ingest.ingest_batch(IngestBatchRequest { events }).await {
                        Ok(_) => {
                            sent.fetch_add(batch, Ordering::Relaxed);
                        }
                        Err(error) => tracing::warn!(%error, "a background batch failed"),
                    }
                    drop(permit);
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut ingest = IngestServiceClient::connect(url).await?;
    let mut latencies = Vec::new();
    let measured_from = Instant::now();
    let sent_before = sent.load(Ordering::Relaxed);
    let mut expected = probe_requests(&mut stack.usage).await?;
    let mut probe = 0_u64;
    while measured_from.elapsed() < Duration::from_secs(load.seconds) {
        let tick = Instant::now();
        let event = UsageEvent {
            id: format!("probe-{probe}"),
            customer_id: "cus_probe".into(),
            event_type: "api_calls".into(),
            timestamp: Some(chrono_to_timestamp(Utc::now())),
            properties: HashMap::new(),
            source: "tally-load".into(),
        };
        probe += 1;
        expected += 1;
        let started = Instant::now();
        ingest
            .ingest_batch(IngestBatchRequest {
                events: vec![event],
            })
            .await?;
        loop {
            if probe_requests(&mut stack.usage).await? >= expected {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "probe {probe} was not reflected within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
    }
    let measured = measured_from.elapsed();
    let background_events = sent.load(Ordering::Relaxed) - sent_before;
    stack.shutdown.trigger();
    background.abort();
    Ok(format!(
        "rating-latency: background {:.0} events/s through IngestBatch for {:.0} s; \
         {} probes accepted → reflected in GetCurrentCost: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        background_events as f64 / measured.as_secs_f64(),
        measured.as_secs_f64(),
        latencies.len(),
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.9),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    ))
}

/// `tally load rating-cost`.
pub async fn cost(config: &Config, load: RatingCost) -> anyhow::Result<String> {
    let mut stack = stack(config, false).await?;
    let plan_version = seed_catalog(&mut stack).await?;
    let big = vec!["cus_big".to_owned()];
    subscribe(&stack, &big, &plan_version).await?;
    queue_accepted(&stack.bus, &big, load.events).await?;
    let started = Instant::now();
    let _tasks = stack.rating.spawn_background(&stack.shutdown);
    let loaded = wait_rated(&stack.pool, load.events, started).await?;
    let mut latencies = Vec::new();
    let mut total = String::new();
    for _ in 0..load.calls {
        let started = Instant::now();
        let cost = stack
            .usage
            .get_current_cost(GetCurrentCostRequest {
                customer_id: "cus_big".into(),
                subscription_id: String::new(),
            })
            .await?
            .into_inner();
        latencies.push(started.elapsed());
        total = cost
            .costs
            .first()
            .and_then(|subscription| subscription.usage_total.as_ref())
            .map(|money| format!("{} {}", money.amount, money.currency))
            .unwrap_or_default();
    }
    stack.shutdown.trigger();
    Ok(format!(
        "rating-cost: {} events of one customer in the open period (rated in {:.1} s); \
         {} GetCurrentCost calls: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; usage total {total}",
        load.events,
        loaded.as_secs_f64(),
        load.calls,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    ))
}
