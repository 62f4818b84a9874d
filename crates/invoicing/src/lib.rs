//! The invoicing service: customers, subscriptions, bill runs, invoices,
//! credit notes and credits (see docs/architecture.md,
//! "Invoicing").
//!
//! * [`customers`] — `CustomerService`;
//! * [`subscriptions`] — `SubscriptionService` and the stored subscription;
//! * [`billing`] — the bill run: composing, storing and finalizing invoices;
//! * [`invoices`] — `InvoiceService`;
//! * [`credits`] — `CreditService` and the credit ledger;
//! * [`quotes`] — `QuoteService`: quotes that become subscriptions;
//! * [`payment_events`] — the `payment-events` consumer;
//! * [`refunds`] — the one creditable / refundable balance of an invoice;
//! * [`plans`] and [`rating`] — what invoicing asks the rating peer.

mod audit;
pub mod billing;
pub mod credits;
pub mod customers;
mod error;
pub mod events;
mod idempotency;
pub mod invoices;
mod metrics;
mod paging;
pub mod payment_events;
pub mod plans;
pub mod quotes;
pub mod rating;
pub mod refunds;
pub mod subscriptions;
mod text_enum;
pub mod upgrade;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tally_bus::consumer::Consumer;
use tally_bus::inbox::ServiceSchema;
use tally_bus::outbox::OutboxRelay;
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::invoicing::credit_service_server::CreditServiceServer;
use tally_proto::invoicing::customer_service_server::CustomerServiceServer;
use tally_proto::invoicing::invoice_service_server::InvoiceServiceServer;
use tally_proto::invoicing::quote_service_server::QuoteServiceServer;
use tally_proto::invoicing::subscription_service_server::SubscriptionServiceServer;
use tally_runtime::config::InvoicingConfig;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::peer::Peer;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown, clock};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use billing::run::{BillingFailure, RunSummary};
pub use error::InvoicingError;
pub use rating::RatingClient;

/// The first retry of a bill run that left work behind (see
/// [`Invoicing::run_scheduler`]).
const FIRST_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-invoicing";

/// The subscription invoicing reads payment outcomes from (topic `payment-events`).
pub const PAYMENT_EVENTS_SUBSCRIPTION: &str = "invoicing-payment-events";

/// What invoicing needs from the composition root.
#[derive(Debug, Clone)]
pub struct InvoicingDeps {
    /// The database (schema `invoicing`).
    pub pool: PgPool,
    /// The bus (outbox relay, payment-events consumer).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
    /// `[invoicing]`.
    pub config: InvoicingConfig,
    /// Rating: plan versions and usage charges.
    pub rating: Peer,
    /// Deliveries before a failing payment event is dead-lettered.
    pub max_delivery_attempts: u32,
}

/// Declares a feature's service: a view over the [`Shared`] dependencies whose
/// methods are that feature's logic, reached with `ctx.<accessor>()`. The
/// dependencies (pool, bus, clock, ids, config, peers) are one [`Shared`],
/// shared by every feature, so a service is free to make and copy; what a
/// feature does lives in its own `impl`, not in one struct for the crate.
macro_rules! feature_service {
    ($(#[$meta:meta])* $name:ident, $accessor:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name<'a> {
            deps: &'a $crate::Shared,
        }

        impl ::std::ops::Deref for $name<'_> {
            type Target = $crate::Shared;

            fn deref(&self) -> &$crate::Shared {
                self.deps
            }
        }

        impl $crate::Shared {
            /// This feature's service.
            pub(crate) fn $accessor(&self) -> $name<'_> {
                $name { deps: self }
            }
        }
    };
}
pub(crate) use feature_service;

/// The dependencies every feature's service shares (see
/// [`feature_service!`]), and the helpers they all use (audit, events).
#[derive(Debug)]
pub struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) bus: SharedBus,
    pub(crate) clock: SharedClock,
    pub(crate) ids: SharedIdGenerator,
    pub(crate) config: InvoicingConfig,
    pub(crate) rating: RatingClient,
    pub(crate) plans: plans::PlanCache,
    pub(crate) max_delivery_attempts: u32,
    pub(crate) metrics: metrics::Metrics,
    /// Whether the bill run writes its audit entries (`invoice.created`,
    /// `invoice.finalized`): always, except in the benchmark that measures
    /// what they cost ([`Invoicing::audit_bill_runs_for_benchmark`]).
    pub(crate) bill_run_audited: std::sync::atomic::AtomicBool,
}

/// The `tally.invoicing.v1` service implementations.
#[derive(Debug, Clone)]
pub struct InvoicingApi {
    pub(crate) ctx: Arc<Shared>,
}

/// A running invoicing service.
#[derive(Debug, Clone)]
pub struct Invoicing {
    ctx: Arc<Shared>,
}

impl Invoicing {
    /// Builds invoicing and ensures the topics it publishes and the
    /// subscription it reads.
    pub async fn start(deps: InvoicingDeps) -> Result<Self, BusError> {
        for topic in [
            topics::SUBSCRIPTION_EVENTS,
            topics::INVOICE_EVENTS,
            topics::PAYMENT_EVENTS,
        ] {
            deps.bus.ensure_topic(topic).await?;
        }
        deps.bus
            .ensure_subscription(&payment_events_subscription(deps.max_delivery_attempts))
            .await?;
        Ok(Self {
            ctx: Arc::new(Shared {
                pool: deps.pool,
                bus: deps.bus,
                clock: deps.clock,
                ids: deps.ids,
                config: deps.config,
                rating: RatingClient::new(deps.rating),
                max_delivery_attempts: deps.max_delivery_attempts,
                plans: plans::PlanCache::default(),
                metrics: metrics::Metrics::new(),
                bill_run_audited: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// One bill run as of the clock's now (what the scheduler runs each tick).
    pub async fn bill_run(&self) -> Result<RunSummary, InvoicingError> {
        self.ctx.billing().bill_run(None).await
    }

    /// Turns the bill run's audit entries off (`false`) or back on. Only the
    /// bill-run benchmark calls it (`tests/it/audit_cost.rs`, to measure the
    /// entries' cost in one run); no configuration or RPC reaches it, and
    /// every other audited change records its entry whatever it says.
    #[doc(hidden)]
    pub fn audit_bill_runs_for_benchmark(&self, on: bool) {
        self.ctx
            .bill_run_audited
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The outbox relay (subscription and invoice events).
    pub fn relay(&self) -> OutboxRelay {
        OutboxRelay::new(
            self.ctx.pool.clone(),
            ServiceSchema::Invoicing,
            Arc::clone(&self.ctx.bus),
        )
    }

    /// The payment-events handler.
    pub fn payment_events(&self) -> payment_events::PaymentEvents {
        payment_events::PaymentEvents {
            ctx: Arc::clone(&self.ctx),
        }
    }

    /// The consumer of `invoicing-payment-events`.
    pub fn payment_events_consumer(&self) -> Consumer {
        Consumer::new(
            Arc::clone(&self.ctx.bus),
            payment_events_subscription(self.ctx.max_delivery_attempts),
            Arc::new(self.payment_events()),
        )
    }

    /// The gRPC services of invoicing, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let api = InvoicingApi {
            ctx: Arc::clone(&self.ctx),
        };
        let customers =
            CustomerServiceServer::new(api.clone()).max_decoding_message_size(max_message_bytes);
        let subscriptions = SubscriptionServiceServer::new(api.clone())
            .max_decoding_message_size(max_message_bytes);
        let invoices = InvoiceServiceServer::new(api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let credits =
            CreditServiceServer::new(api.clone()).max_decoding_message_size(max_message_bytes);
        let quotes = QuoteServiceServer::new(api).max_decoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| {
                routes
                    .add_service(customers)
                    .add_service(subscriptions)
                    .add_service(invoices)
                    .add_service(credits)
                    .add_service(quotes)
            },
            vec![
                <CustomerServiceServer<InvoicingApi> as NamedService>::NAME,
                <SubscriptionServiceServer<InvoicingApi> as NamedService>::NAME,
                <InvoiceServiceServer<InvoicingApi> as NamedService>::NAME,
                <CreditServiceServer<InvoicingApi> as NamedService>::NAME,
                <QuoteServiceServer<InvoicingApi> as NamedService>::NAME,
            ],
        )
    }

    /// Starts the outbox relay, the bill-run scheduler and the payment-events
    /// consumer; they stop on `shutdown`.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let relay = self.relay();
        let relay_shutdown = shutdown.clone();
        let consumer = self.payment_events_consumer();
        let consumer_shutdown = shutdown.clone();
        let scheduler = self.clone();
        let scheduler_shutdown = shutdown.clone();
        vec![
            tokio::spawn(async move { relay.run(relay_shutdown).await }),
            tokio::spawn(async move {
                if let Err(error) = consumer.run(consumer_shutdown).await {
                    tracing::error!(%error, "the payment-events consumer stopped");
                }
            }),
            tokio::spawn(async move { scheduler.run_scheduler(scheduler_shutdown).await }),
        ]
    }

    /// Runs a bill run at every tick of the clock until `shutdown`. A run
    /// that left work behind (a subscription whose change rating has not
    /// seen yet, a failed subscription) is retried soon — after one second,
    /// doubling up to the interval while failures go on — rather than a whole
    /// interval later: an invoice should not wait a minute on a replica that
    /// catches up in milliseconds.
    pub async fn run_scheduler(&self, shutdown: Shutdown) {
        let interval = Duration::from_secs(self.ctx.config.bill_run_interval_seconds);
        let mut ticker = clock::Ticker::new(&*self.ctx.clock, interval);
        let mut retry_after = FIRST_RETRY_AFTER_FAILURE;
        while !shutdown.is_triggered() {
            let left_work = match self.ctx.billing().bill_run(None).await {
                Ok(summary) => {
                    if summary != RunSummary::default() {
                        tracing::info!(?summary, "bill run");
                    }
                    summary.failures > 0
                }
                Err(error) => {
                    tracing::warn!(%error, "bill run failed; retried soon");
                    true
                }
            };
            let wait = if left_work {
                let wait = retry_after;
                retry_after = (retry_after * 2).min(interval);
                wait
            } else {
                retry_after = FIRST_RETRY_AFTER_FAILURE;
                interval
            };
            tokio::select! {
                () = ticker.tick_within(wait) => {}
                () = shutdown.wait() => break,
            }
        }
    }
}

fn payment_events_subscription(max_delivery_attempts: u32) -> SubscriptionConfig {
    SubscriptionConfig::ordered(PAYMENT_EVENTS_SUBSCRIPTION, topics::PAYMENT_EVENTS)
        .with_max_delivery_attempts(max_delivery_attempts.clamp(5, 100))
}
