//! A running invoicing and rating for tests: one fresh database, one
//! in-process bus, one manual clock, predictable ids, gRPC clients.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use tally_bus::{InProcessBus, SharedBus};
use tally_invoicing::{Invoicing, InvoicingDeps};
use tally_proto::common::{Decimal as WireDecimal, Money};
use tally_proto::events::{UsageAccepted, UsageEvent};
use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    self as invoicing_proto, CreateCustomerRequest, CreateSubscriptionRequest,
};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::price::Model;
use tally_proto::rating::*;
use tally_rating::usage::decode_accepted;
use tally_rating::{Rating, RatingDeps};
use tally_runtime::auth::AuthLayer;
use tally_runtime::config::InvoicingConfig;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::peer::Peer;
use tally_runtime::{ManualClock, Shutdown};
use tally_testkit::SequentialIds;
use tally_testkit::postgres::{TestDatabase, database};
use tonic::transport::Channel;

/// Midnight UTC of a date.
pub fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
}

pub fn ts(instant: DateTime<Utc>) -> prost_types::Timestamp {
    tally_runtime::clock_service::chrono_to_timestamp(instant)
}

pub fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

pub fn decimal(value: &str) -> Option<WireDecimal> {
    Some(WireDecimal {
        value: value.into(),
    })
}

/// A running rating and invoicing.
pub struct Harness {
    pub db: TestDatabase,
    pub clock: ManualClock,
    pub bus: SharedBus,
    pub ids: SharedIdGenerator,
    pub rating: Rating,
    pub invoicing: Invoicing,
    pub rating_address: String,
    pub catalog: CatalogServiceClient<Channel>,
    pub customers: CustomerServiceClient<Channel>,
    pub subscriptions: SubscriptionServiceClient<Channel>,
    pub invoices: InvoiceServiceClient<Channel>,
    pub credits: CreditServiceClient<Channel>,
    pub shutdown: Shutdown,
    keys: u64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn serve(grpc: tally_runtime::server::GrpcServer, shutdown: &Shutdown) -> String {
    let address = grpc
        .spawn_on_loopback(AuthLayer::disabled(), shutdown)
        .await
        .expect("server runs");
    format!("http://{address}")
}

/// Rating and invoicing on a fresh database, starting at `start`.
pub async fn harness(start: DateTime<Utc>, config: InvoicingConfig) -> Harness {
    harness_on(start, config, Arc::new(InProcessBus::new())).await
}

/// [`harness`] on `bus`.
pub async fn harness_on(start: DateTime<Utc>, config: InvoicingConfig, bus: SharedBus) -> Harness {
    harness_with(database().await, start, config, bus).await
}

/// [`harness`] on `db` (e.g. with a bigger pool than the tests' default).
pub async fn harness_with(
    db: TestDatabase,
    start: DateTime<Utc>,
    config: InvoicingConfig,
    bus: SharedBus,
) -> Harness {
    let clock = ManualClock::new(start);
    let ids: SharedIdGenerator = Arc::new(SequentialIds::default());
    let shutdown = Shutdown::new();
    let rating = Rating::start(RatingDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(&bus),
        clock: Arc::new(clock.clone()),
        ids: Arc::clone(&ids),
        ingest: Peer::lazy("http://127.0.0.1:9", None).unwrap(),
    })
    .await
    .expect("rating starts");
    rating.spawn_background(&shutdown);
    let rating_address = serve(rating.grpc_server(16 << 20), &shutdown).await;
    let invoicing = invoicing_on(&db, &clock, &bus, &ids, &rating_address, config).await;
    let address = serve(invoicing.grpc_server(16 << 20), &shutdown).await;
    Harness {
        catalog: CatalogServiceClient::connect(rating_address.clone())
            .await
            .unwrap(),
        customers: CustomerServiceClient::connect(address.clone())
            .await
            .unwrap(),
        subscriptions: SubscriptionServiceClient::connect(address.clone())
            .await
            .unwrap(),
        invoices: InvoiceServiceClient::connect(address.clone())
            .await
            .unwrap(),
        credits: CreditServiceClient::connect(address).await.unwrap(),
        db,
        clock,
        bus,
        ids,
        rating,
        invoicing,
        rating_address,
        shutdown,
        keys: 0,
    }
}

/// Another invoicing process on the same database, bus and clock.
pub async fn invoicing_on(
    db: &TestDatabase,
    clock: &ManualClock,
    bus: &SharedBus,
    ids: &SharedIdGenerator,
    rating_address: &str,
    config: InvoicingConfig,
) -> Invoicing {
    Invoicing::start(InvoicingDeps {
        pool: db.pool.clone(),
        bus: Arc::clone(bus),
        clock: Arc::new(clock.clone()),
        ids: Arc::clone(ids),
        config,
        rating: Peer::lazy(rating_address, None).unwrap(),
        max_delivery_attempts: 5,
    })
    .await
    .expect("invoicing starts")
}

/// The default config with a grace period of `hours`.
pub fn config(grace_hours: u32) -> InvoicingConfig {
    InvoicingConfig {
        grace_period_hours: grace_hours,
        ..InvoicingConfig::default()
    }
}

/// A plan's charges.
#[derive(Default)]
pub struct PlanSpec<'a> {
    pub fee: Option<(&'a str, BillingTiming)>,
    pub per_call: Option<&'a str>,
    pub minimum: Option<&'a str>,
    pub trial_days: u32,
}

impl<'a> PlanSpec<'a> {
    /// A flat fee billed in advance.
    pub fn advance(amount: &'a str) -> Self {
        Self {
            fee: Some((amount, BillingTiming::InAdvance)),
            ..Self::default()
        }
    }

    /// With a trial of `days`.
    pub fn trial(mut self, days: u32) -> Self {
        self.trial_days = days;
        self
    }

    /// Plus API calls at `price` each.
    pub fn calls(mut self, price: &'a str) -> Self {
        self.per_call = Some(price);
        self
    }
}

impl Harness {
    /// Changes `subscription`'s plan version.
    pub async fn change_plan(
        &mut self,
        subscription: &str,
        version: &str,
        timing: invoicing_proto::ChangeTiming,
        policy: invoicing_proto::ProrationPolicy,
    ) {
        let key = self.key();
        self.subscriptions
            .change_plan(invoicing_proto::ChangePlanRequest {
                idempotency_key: key,
                subscription_id: subscription.into(),
                plan_version_id: version.into(),
                timing: timing as i32,
                effective_at: None,
                proration_policy: policy as i32,
                reason: String::new(),
            })
            .await
            .unwrap();
    }

    /// A fresh idempotency key.
    pub fn key(&mut self) -> String {
        self.keys += 1;
        format!("key-{}", self.keys)
    }

    /// Creates the `api_calls` meter (count) once.
    pub async fn meter(&mut self) {
        let _ = self
            .catalog
            .create_meter(CreateMeterRequest {
                code: "api_calls".into(),
                name: "API calls".into(),
                aggregation: Aggregation::Count as i32,
                ..Default::default()
            })
            .await;
    }

    /// Publishes a monthly USD plan version and returns its id.
    pub async fn plan(&mut self, code: &str, spec: PlanSpec<'_>) -> String {
        self.meter().await;
        let plan_id = self
            .catalog
            .create_plan(CreatePlanRequest {
                code: code.into(),
                name: code.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .plan
            .unwrap()
            .id;
        let mut charges = Vec::new();
        if let Some((amount, timing)) = spec.fee {
            charges.push(Charge {
                key: "platform".into(),
                name: "Platform fee".into(),
                billing_timing: timing as i32,
                price: Some(Price {
                    model: Some(Model::FlatFee(FlatFeePrice {
                        amount: usd(amount),
                    })),
                }),
                ..Default::default()
            });
        }
        if let Some(price) = spec.per_call {
            charges.push(Charge {
                key: "calls".into(),
                name: "API calls".into(),
                meter_code: "api_calls".into(),
                billing_timing: BillingTiming::InArrears as i32,
                price: Some(Price {
                    model: Some(Model::PerUnit(PerUnitPrice {
                        unit_price: decimal(price),
                    })),
                }),
                ..Default::default()
            });
        }
        let draft = self
            .catalog
            .create_plan_version(CreatePlanVersionRequest {
                idempotency_key: format!("{code}-v1"),
                plan_id,
                source: Some(create_plan_version_request::Source::Spec(PlanVersionSpec {
                    currency: "USD".into(),
                    billing_interval: BillingInterval::Month as i32,
                    interval_count: 1,
                    trial_days: spec.trial_days,
                    minimum_commitment: spec.minimum.and_then(usd),
                    charges,
                    description: String::new(),
                })),
            })
            .await
            .unwrap()
            .into_inner()
            .plan_version
            .unwrap();
        self.catalog
            .publish_plan_version(PublishPlanVersionRequest {
                plan_version_id: draft.id.clone(),
            })
            .await
            .unwrap();
        draft.id
    }

    /// A `QuoteService` client, on a server of its own for this invoicing.
    pub async fn quotes(
        &self,
    ) -> tally_proto::invoicing::quote_service_client::QuoteServiceClient<Channel> {
        let address = serve(self.invoicing.grpc_server(16 << 20), &self.shutdown).await;
        tally_proto::invoicing::quote_service_client::QuoteServiceClient::connect(address)
            .await
            .unwrap()
    }

    /// Creates a USD customer and returns its id.
    pub async fn customer(&mut self, external_id: &str) -> String {
        self.customers
            .create_customer(CreateCustomerRequest {
                external_id: external_id.into(),
                name: external_id.into(),
                currency: "USD".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .customer
            .unwrap()
            .id
    }

    /// Subscribes `customer` to `version` from `start` and returns the id.
    pub async fn subscribe(
        &mut self,
        customer: &str,
        version: &str,
        start: DateTime<Utc>,
    ) -> String {
        let key = self.key();
        self.subscriptions
            .create_subscription(CreateSubscriptionRequest {
                idempotency_key: key,
                customer_id: customer.into(),
                plan_version_id: version.into(),
                start_at: Some(ts(start)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap()
            .id
    }

    /// A customer `acme` on a monthly `fee` in advance from the clock's now,
    /// billed once: (customer, subscription, first invoice).
    pub async fn first_invoice(&mut self, fee: &str) -> (String, String, String) {
        let now = tally_runtime::Clock::now(&self.clock);
        let plan = self.plan("basic", PlanSpec::advance(fee)).await;
        let customer = self.customer("acme").await;
        let subscription = self.subscribe(&customer, &plan, now).await;
        self.bill_at(now).await;
        let invoice = self.invoice_at(&subscription, now).await;
        (customer, subscription, invoice)
    }

    /// Publishes invoicing's outbox and waits until rating holds every
    /// subscription version invoicing wrote.
    pub async fn sync(&self) {
        // Generous: a thousand snapshots take rating a while on a busy machine.
        self.sync_within(Duration::from_secs(120), Duration::from_millis(10))
            .await;
    }

    /// [`Self::sync`] with a deadline, checking every `poll`.
    pub async fn sync_within(&self, timeout: Duration, poll: Duration) {
        let relay = self.invoicing.relay();
        while relay.relay_once().await.unwrap() > 0 {}
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let (behind,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM invoicing.subscriptions i LEFT JOIN rating.subscriptions r \
                 ON r.subscription_id = i.id WHERE r.version IS NULL OR r.version < i.version",
            )
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            if behind == 0 {
                return;
            }
            tokio::time::sleep(poll).await;
        }
        panic!("rating did not catch up with invoicing's subscription events");
    }

    /// Moves the clock to `instant`, syncs rating and runs the bill run.
    pub async fn bill_at(&self, instant: DateTime<Utc>) -> tally_invoicing::RunSummary {
        if instant > tally_runtime::Clock::now(&self.clock) {
            self.clock.set(instant).unwrap();
        }
        self.sync().await;
        let summary = self.invoicing.bill_run().await.unwrap();
        assert_eq!(summary.failures, 0, "{summary:?}");
        summary
    }

    /// Rates `count` API calls of `customer` at `time` (ids `prefix-0..`).
    pub async fn calls(&self, customer: &str, prefix: &str, count: usize, time: DateTime<Utc>) {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let events: Vec<_> = (0..count)
            .map(|index| {
                let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let message = UsageAccepted {
                    event: Some(UsageEvent {
                        id: format!("{prefix}-{index}"),
                        customer_id: customer.into(),
                        event_type: "api_calls".into(),
                        timestamp: Some(ts(time)),
                        properties: Default::default(),
                        source: String::new(),
                    }),
                    sequence_number: seq,
                    ingested_at: Some(ts(time)),
                    intake: 1,
                };
                decode_accepted(&message.encode_to_vec()).unwrap()
            })
            .collect();
        self.rating.usage_consumer().rate(&events).await.unwrap();
    }

    /// Every invoice of `subscription` as (boundary date, period, status,
    /// number, subtotal, credits, total), oldest first.
    pub async fn invoice_table(&self, subscription: &str) -> Vec<InvoiceRow> {
        sqlx::query_as(
            "SELECT to_char(boundary_at, 'YYYY-MM-DD'), to_char(period_start, 'YYYY-MM-DD') || '..' || to_char(period_end, 'YYYY-MM-DD'), \
               status, coalesce(number, ''), subtotal, credits_applied, total \
             FROM invoicing.invoices WHERE subscription_id = $1 ORDER BY boundary_at",
        )
        .bind(subscription)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// The lines of the invoice at `boundary` as (kind, service period, amount).
    pub async fn lines_at(
        &self,
        subscription: &str,
        boundary: DateTime<Utc>,
    ) -> Vec<(String, String, Decimal)> {
        sqlx::query_as(
            "SELECT l.kind, to_char(l.service_start, 'MM-DD') || '..' || to_char(l.service_end, 'MM-DD'), l.amount \
             FROM invoicing.invoice_lines l JOIN invoicing.invoices i ON i.id = l.invoice_id \
             WHERE i.subscription_id = $1 AND i.boundary_at = $2 ORDER BY l.position",
        )
        .bind(subscription)
        .bind(boundary)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// The proration lines at `boundary` as their explanations give them:
    /// kind, prorated period (`MM-DD..MM-DD`) and factor (4 decimals).
    pub async fn prorations_at(
        &self,
        subscription: &str,
        boundary: DateTime<Utc>,
    ) -> Vec<(String, String, Decimal)> {
        use tally_proto::invoicing::invoice_line::Detail;
        let id = self.invoice_at(subscription, boundary).await;
        let invoice = self
            .invoices
            .clone()
            .get_invoice(tally_proto::invoicing::GetInvoiceRequest { invoice_id: id })
            .await
            .unwrap()
            .into_inner()
            .invoice
            .unwrap();
        let day = |time: Option<prost_types::Timestamp>| {
            let seconds = time.unwrap().seconds;
            Utc.timestamp_opt(seconds, 0)
                .unwrap()
                .format("%m-%d")
                .to_string()
        };
        invoice
            .lines
            .into_iter()
            .filter_map(|line| match &line.detail {
                Some(Detail::Proration(detail)) => {
                    let range = detail.prorated_period.unwrap();
                    let factor: Decimal = detail.factor.as_ref().unwrap().value.parse().unwrap();
                    Some((
                        tally_invoicing::billing::mapping::kind_from_wire(line.kind())
                            .unwrap()
                            .name()
                            .to_owned(),
                        format!("{}..{}", day(range.start_time), day(range.end_time)),
                        factor.round_dp(4),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The invoice id at `boundary`.
    pub async fn invoice_at(&self, subscription: &str, boundary: DateTime<Utc>) -> String {
        let (id,): (String,) = sqlx::query_as(
            "SELECT id FROM invoicing.invoices WHERE subscription_id = $1 AND boundary_at = $2",
        )
        .bind(subscription)
        .bind(boundary)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        id
    }

    /// Grants `customer` a credit of `amount`.
    pub async fn grant(
        &mut self,
        customer: &str,
        kind: invoicing_proto::CreditGrantKind,
        amount: &str,
        priority: u32,
        expires_at: Option<DateTime<Utc>>,
    ) -> invoicing_proto::CreditGrant {
        let key = self.key();
        self.credits
            .grant_credit(invoicing_proto::GrantCreditRequest {
                idempotency_key: key,
                customer_id: customer.into(),
                kind: kind as i32,
                amount: usd(amount),
                priority,
                expires_at: expires_at.map(ts),
                description: "credit".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .credit_grant
            .unwrap()
    }

    /// Resumes `subscription` now.
    pub async fn resume(&mut self, subscription: &str) -> invoicing_proto::Subscription {
        let key = self.key();
        self.subscriptions
            .resume_subscription(invoicing_proto::ResumeSubscriptionRequest {
                idempotency_key: key,
                subscription_id: subscription.into(),
                resume_at: None,
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap()
    }

    /// The ends of rating's phases of `subscription`, in order.
    pub async fn rating_phase_ends(&self, subscription: &str) -> Vec<Option<DateTime<Utc>>> {
        let rows: Vec<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "SELECT end_at FROM rating.subscription_phases WHERE subscription_id = $1 ORDER BY phase_index",
        )
        .bind(subscription)
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        rows.into_iter().map(|(end,)| end).collect()
    }

    /// The wire subscription.
    pub async fn subscription(&mut self, id: &str) -> invoicing_proto::Subscription {
        self.subscriptions
            .get_subscription(invoicing_proto::GetSubscriptionRequest {
                subscription_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap()
    }

    /// The wire invoice.
    pub async fn invoice(&mut self, id: &str) -> invoicing_proto::Invoice {
        self.invoices
            .get_invoice(invoicing_proto::GetInvoiceRequest {
                invoice_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .invoice
            .unwrap()
    }
}

/// (boundary, period, status, number, subtotal, credits applied, total).
pub type InvoiceRow = (String, String, String, String, Decimal, Decimal, Decimal);

/// One expected invoice row.
pub fn row(
    boundary: &str,
    period: &str,
    status: &str,
    number: &str,
    subtotal: Decimal,
    credits: Decimal,
    total: Decimal,
) -> InvoiceRow {
    (
        boundary.into(),
        period.into(),
        status.into(),
        number.into(),
        subtotal,
        credits,
        total,
    )
}

/// One expected line.
pub fn line(kind: &str, service: &str, amount: Decimal) -> (String, String, Decimal) {
    (kind.into(), service.into(), amount)
}
