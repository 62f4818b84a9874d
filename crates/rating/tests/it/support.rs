//! A running rating for tests: its own database, a manual clock, predictable
//! ids, and a catalog client talking to a real server on a free port.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use tally_bus::{InProcessBus, SharedBus};
use tally_ingest::{Ingest, IngestDeps};
use tally_proto::common::{Decimal, FieldViolation, Money};
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::*;
use tally_rating::{Rating, RatingDeps};
use tally_runtime::auth::AuthLayer;
use tally_runtime::config::IngestConfig;
use tally_runtime::peer::Peer;
use tally_runtime::{ManualClock, Shutdown};
use tally_testkit::SequentialIds;
use tally_testkit::postgres::{TestDatabase, database};
use tonic::transport::Channel;

/// The instant every test starts at.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

/// A running rating.
pub struct Harness {
    pub db: TestDatabase,
    pub clock: ManualClock,
    pub client: CatalogServiceClient<Channel>,
    pub usage: RatingServiceClient<Channel>,
    pub rating: Rating,
    pub shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Rating on a fresh database, served on 127.0.0.1:0 without authentication.
pub async fn harness() -> Harness {
    harness_with(Arc::new(InProcessBus::new())).await
}

/// [`harness`] on `bus`.
pub async fn harness_with(bus: SharedBus) -> Harness {
    let db = database().await;
    let clock = ManualClock::new(start_time());
    harness_on(db, bus, clock, no_ingest(), Shutdown::new()).await
}

/// Rating and a real ingest on one database and one in-process bus (as in
/// `tally dev`), sharing a manual clock: ingest's relay publishes what it
/// accepts on `usage-accepted`, and rating's background loops (usage
/// consumer, replica, re-rate worker reading ingest's `ReadEvents`) run.
pub async fn harness_with_ingest() -> (Harness, IngestServiceClient<Channel>) {
    let db = database().await;
    let clock = ManualClock::new(start_time());
    let bus: SharedBus = Arc::new(InProcessBus::new());
    let shutdown = Shutdown::new();
    let ingest = Ingest::start(IngestDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(&bus),
        clock: Arc::new(clock.clone()),
        ids: Arc::new(SequentialIds::default()),
        config: IngestConfig::default(),
        max_delivery_attempts: 5,
    })
    .await
    .expect("ingest starts");
    ingest.spawn_background(&shutdown);
    let address = serve(ingest.grpc_server(16 * 1024 * 1024), &shutdown).await;
    let url = format!("http://{address}");
    let peer = Peer::lazy(&url, None).expect("valid url");
    let h = harness_on(db, bus, clock, peer, shutdown).await;
    h.rating.spawn_background(&h.shutdown);
    let client = IngestServiceClient::connect(url)
        .await
        .expect("client connects");
    (h, client)
}

async fn serve(
    grpc: tally_runtime::server::GrpcServer,
    shutdown: &Shutdown,
) -> std::net::SocketAddr {
    grpc.spawn_on_loopback(AuthLayer::disabled(), shutdown)
        .await
        .expect("server runs")
}

async fn harness_on(
    db: TestDatabase,
    bus: SharedBus,
    clock: ManualClock,
    ingest: Peer,
    shutdown: Shutdown,
) -> Harness {
    let rating = Rating::start(RatingDeps {
        pool: db.pool.clone(),
        bus,
        clock: Arc::new(clock.clone()),
        ids: Arc::new(SequentialIds::default()),
        ingest,
    })
    .await
    .expect("rating starts");
    let address = serve(rating.grpc_server(16 * 1024 * 1024), &shutdown).await;
    let client = CatalogServiceClient::connect(format!("http://{address}"))
        .await
        .expect("client connects");
    let usage = RatingServiceClient::connect(format!("http://{address}"))
        .await
        .expect("client connects");
    Harness {
        db,
        clock,
        client,
        usage,
        rating,
        shutdown,
    }
}

impl Harness {
    /// Creates a meter and returns it.
    pub async fn meter(&mut self, request: CreateMeterRequest) -> Meter {
        self.client
            .create_meter(request)
            .await
            .expect("the meter is created")
            .into_inner()
            .meter
            .unwrap()
    }

    /// Creates a plan with `code` and returns its id.
    pub async fn plan(&mut self, code: &str) -> String {
        self.client
            .create_plan(CreatePlanRequest {
                code: code.into(),
                name: format!("Plan {code}"),
                ..Default::default()
            })
            .await
            .expect("the plan is created")
            .into_inner()
            .plan
            .unwrap()
            .id
    }

    /// Creates a draft of `plan_id` from `spec` and returns it.
    pub async fn draft(&mut self, plan_id: &str, key: &str, spec: PlanVersionSpec) -> PlanVersion {
        self.client
            .create_plan_version(CreatePlanVersionRequest {
                idempotency_key: key.into(),
                plan_id: plan_id.into(),
                source: Some(create_plan_version_request::Source::Spec(spec)),
            })
            .await
            .expect("the draft is created")
            .into_inner()
            .plan_version
            .unwrap()
    }

    /// Publishes a version.
    pub async fn publish(&mut self, id: &str) -> Result<PlanVersion, tonic::Status> {
        self.client
            .publish_plan_version(PublishPlanVersionRequest {
                plan_version_id: id.into(),
            })
            .await
            .map(|response| response.into_inner().plan_version.unwrap())
    }

    /// Validates a version and returns `(field, rule)` pairs.
    pub async fn validate(&mut self, id: &str) -> (bool, Vec<(String, String)>) {
        let response = self
            .client
            .validate_plan_version(ValidatePlanVersionRequest {
                plan_version_id: id.into(),
            })
            .await
            .expect("validation answers")
            .into_inner();
        (response.valid, pairs(&response.violations))
    }
}

/// `(field, rule)` of each violation.
pub fn pairs(violations: &[FieldViolation]) -> Vec<(String, String)> {
    violations
        .iter()
        .map(|violation| (violation.field.clone(), violation.rule.clone()))
        .collect()
}

/// `(field, rule)` of the violations a status carries.
pub fn status_pairs(status: &tonic::Status) -> Vec<(String, String)> {
    pairs(&tally_rating::catalog::status_violations(status))
}

/// Turns `&[(&str, &str)]` into owned pairs for comparisons.
pub fn expected(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(field, rule)| ((*field).to_owned(), (*rule).to_owned()))
        .collect()
}

pub fn decimal(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.into(),
    })
}

pub fn usd(amount: &str) -> Option<Money> {
    money("USD", amount)
}

pub fn money(currency: &str, amount: &str) -> Option<Money> {
    Some(Money {
        currency: currency.into(),
        amount: amount.into(),
    })
}

/// A meter request with the usual defaults.
pub fn meter_request(code: &str, aggregation: Aggregation, property: &str) -> CreateMeterRequest {
    CreateMeterRequest {
        code: code.into(),
        name: code.replace('_', " "),
        aggregation: aggregation as i32,
        property: property.into(),
        ..Default::default()
    }
}

/// A tier.
pub fn tier(up_to: Option<&str>, unit_price: &str, flat: Option<&str>) -> PriceTier {
    PriceTier {
        up_to: up_to.and_then(decimal),
        unit_price: decimal(unit_price),
        flat_amount: flat.and_then(usd),
    }
}

/// A charge on `meter_code` (empty for recurring) with `model`.
pub fn charge(key: &str, meter_code: &str, timing: BillingTiming, model: price::Model) -> Charge {
    Charge {
        key: key.into(),
        name: key.replace('_', " "),
        meter_code: meter_code.into(),
        billing_timing: timing as i32,
        price: Some(Price { model: Some(model) }),
        ..Default::default()
    }
}

/// A usage charge (in arrears).
pub fn usage(key: &str, meter_code: &str, model: price::Model) -> Charge {
    charge(key, meter_code, BillingTiming::InArrears, model)
}

/// A monthly USD spec with `charges`.
pub fn monthly(charges: Vec<Charge>) -> PlanVersionSpec {
    PlanVersionSpec {
        currency: "USD".into(),
        billing_interval: BillingInterval::Month as i32,
        interval_count: 1,
        charges,
        ..Default::default()
    }
}

/// A matrix cell.
pub fn cell(values: &[(&str, &str)], unit_price: &str) -> MatrixCell {
    MatrixCell {
        dimension_values: values
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect::<HashMap<_, _>>(),
        unit_price: decimal(unit_price),
    }
}

/// An ingest peer nobody listens on (for tests that never re-rate).
pub fn no_ingest() -> Peer {
    Peer::lazy("http://127.0.0.1:9", None).expect("valid url")
}
