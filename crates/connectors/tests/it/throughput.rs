//! The forwarding benchmark (`bench/connectors.sh`; ignored in `make test`):
//! accepted usage forwarded to a fake Orb on loopback, in batches of 100 and
//! of 500 events, events/s.
//!
//! What one batch costs is what the consumer pays per delivery batch:
//! `Forwarder::forward` — the inbox and state lookups, one `POST /v1/ingest`
//! with every event of the batch, and one transaction writing the inbox
//! records and the states — one batch after another, as one consumer does.
//! The fake Orb (axum, not wiremock: wiremock keeps every request) parses
//! each body, keeps the idempotency keys it ingested and answers as Orb
//! does; at the end it must hold every event exactly once.
//!
//! `CONNECTORS_BENCH_EVENTS` events per batch size (20,000 by default) over
//! `CONNECTORS_BENCH_CUSTOMERS` mapped customers (100), batch sizes
//! `CONNECTORS_BENCH_BATCHES` (`100,500`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use serde_json::{Value, json};
use tally_connectors::{ConnectorApi, Disposition, Forwarder, OrbApiKey, OrbClient};
use tally_proto::connectors::MapOrbCustomerRequest;
use tally_proto::connectors::connector_service_server::ConnectorService;
use tally_runtime::config::ConnectorsConfig;
use tally_runtime::{ManualClock, SharedClock, Shutdown};

use crate::support::{API_KEY, SUBSCRIPTION, at, config, usage};

type Ingested = Arc<Mutex<HashSet<String>>>;

async fn ingest(
    State(ingested): State<Ingested>,
    body: Bytes,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let mut keys = ingested.lock().unwrap();
    for event in body["events"].as_array().into_iter().flatten() {
        keys.insert(
            event["idempotency_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    (
        [(CONTENT_TYPE, "application/json")],
        json!({"validation_failed": [], "debug": null}).to_string(),
    )
}

/// A fake Orb's ingest on a loopback port: its URL and what it ingested
/// (it stops with `shutdown`).
async fn fast_orb(shutdown: &Shutdown) -> (String, Ingested) {
    let ingested = Ingested::default();
    let router = axum::Router::new()
        .route("/v1/ingest", post(ingest))
        .with_state(Arc::clone(&ingested));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (address, _task) =
        tally_runtime::http::serve_router(router, listener, shutdown.clone(), "fake orb").unwrap();
    (format!("http://{address}"), ingested)
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map_or(default, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/connectors.sh"]
async fn forwarding_throughput() {
    let events = setting("CONNECTORS_BENCH_EVENTS", 20_000);
    let customers = setting("CONNECTORS_BENCH_CUSTOMERS", 100);
    let batches: Vec<usize> = std::env::var("CONNECTORS_BENCH_BATCHES")
        .unwrap_or_else(|_| "100,500".to_owned())
        .split(',')
        .map(|size| size.trim().parse().unwrap())
        .collect();
    let database = tally_testkit::postgres::database().await;
    let clock: SharedClock = Arc::new(ManualClock::new(at("2026-12-07T12:00:00Z")));
    let api = ConnectorApi::new(database.pool.clone(), Arc::clone(&clock));
    for customer in 0..customers {
        api.map_orb_customer(tonic::Request::new(MapOrbCustomerRequest {
            customer_id: format!("cus_{customer:06}"),
            external_customer_id: format!("acme-{customer:06}"),
        }))
        .await
        .unwrap();
    }
    let shutdown = Shutdown::new();
    let (url, ingested) = fast_orb(&shutdown).await;
    println!("events {events} per batch size, {customers} customers, fake Orb at {url}");
    for (run, batch) in batches.into_iter().enumerate() {
        let client = OrbClient::new(
            &ConnectorsConfig {
                orb_batch_events: batch,
                ..config(&url)
            },
            OrbApiKey::new(API_KEY),
        )
        .unwrap();
        let forwarder = Forwarder::new(
            database.pool.clone(),
            Arc::clone(&clock),
            client,
            SUBSCRIPTION,
        );
        let before = ingested.lock().unwrap().len();
        let started = Instant::now();
        let mut requests = 0;
        let numbers: Vec<u64> = (0..events as u64)
            .map(|n| (run as u64 + 1) * 10_000_000 + n)
            .collect();
        for chunk in numbers.chunks(batch) {
            let incoming: Vec<_> = chunk
                .iter()
                .map(|n| {
                    let customer = format!("cus_{:06}", n % customers as u64);
                    usage(
                        *n,
                        &customer,
                        &format!("evt_{n}"),
                        &[("tokens", "1250"), ("model", "large")],
                    )
                })
                .collect();
            let dispositions = forwarder.forward(&incoming).await;
            assert!(
                dispositions.iter().all(|d| *d == Disposition::Done),
                "{dispositions:?}"
            );
            requests += 1;
        }
        let elapsed = started.elapsed();
        let forwarded = ingested.lock().unwrap().len() - before;
        assert_eq!(forwarded, events, "every event ingested exactly once");
        println!(
            "batch {batch}: {events} events in {requests} requests, {:.2} s, {:.0} events/s",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );
    }
    shutdown.trigger();
}
