//! The finance service: books what Tally bills and collects as double-entry
//! accounting, recognises revenue and answers revenue analytics (see
//! docs/architecture.md, "Finance"). It consumes `invoice-events`,
//! `payment-events` and `subscription-events` and never calls the services that own those facts; the
//! numbers come from the domain (`tally_domain::finance`: accounts, posting
//! rules, recognition schedules).
//!
//! * [`facts`] — bus messages → domain facts (the only place that reads their wire shape);
//! * [`consumers`] — the two consumers: fact → balanced transactions, once;
//! * [`journal`] — the append-only journal, the trial balance and `LedgerService`;
//! * [`recognition`] — revenue schedules and the daily recognition job;
//! * [`analytics`] — MRR from invoiced fees and `subscription-events`, `AnalyticsService`.

pub mod analytics;
pub mod books;
pub mod consumers;
mod error;
pub mod facts;
pub mod journal;
pub mod recognition;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tally_bus::batch::{BatchConsumer, BatchSettings, Lanes};
use tally_bus::consumer::Consumer;
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_domain::finance::RecognitionPolicy;
use tally_proto::finance::analytics_service_server::AnalyticsServiceServer;
use tally_proto::finance::ledger_service_server::LedgerServiceServer;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use analytics::{AnalyticsApi, SubscriptionEventsHandler};
pub use consumers::{InvoiceEventsHandler, Ledger, PaymentEventsHandler};
pub use error::FinanceServiceError;
pub use journal::api::LedgerApi;
pub use recognition::RecognitionJob;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-finance";

/// Finance's subscription to `invoice-events`: ordered, because a void or a
/// credit note must find its invoice's finalization booked (a void reverses
/// what was posted for the invoice).
pub const INVOICE_EVENTS_SUBSCRIPTION: &str = "finance-invoice-events";

/// Finance's subscription to `payment-events`: unordered, a payment or a
/// refund posts the same whichever arrives first.
pub const PAYMENT_EVENTS_SUBSCRIPTION: &str = "finance-payment-events";

/// Finance's subscription to `subscription-events`: unordered, every
/// message is a full snapshot applied only when its version is higher than
/// the stored one.
pub const SUBSCRIPTION_EVENTS_SUBSCRIPTION: &str = "finance-subscription-events";

/// How often the recognition job looks when the clock is not moved by hand.
const RECOGNITION_POLL: Duration = Duration::from_secs(60);

/// What finance needs from the composition root.
#[derive(Debug, Clone)]
pub struct FinanceDeps {
    /// The database (schema `finance`).
    pub pool: PgPool,
    /// The bus (`invoice-events` and `payment-events` in).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Mints the audit entries' ids.
    pub ids: SharedIdGenerator,
    /// Deliveries before a failing message is dead-lettered.
    pub max_delivery_attempts: u32,
}

/// A running finance service.
#[derive(Debug, Clone)]
pub struct Finance {
    deps: FinanceDeps,
    ledger: Arc<Ledger>,
}

impl Finance {
    /// Builds finance and ensures the topics and subscriptions it reads.
    pub async fn start(deps: FinanceDeps) -> Result<Self, BusError> {
        for topic in [
            topics::INVOICE_EVENTS,
            topics::PAYMENT_EVENTS,
            topics::SUBSCRIPTION_EVENTS,
        ] {
            deps.bus.ensure_topic(topic).await?;
        }
        for subscription in subscriptions(deps.max_delivery_attempts) {
            deps.bus.ensure_subscription(&subscription).await?;
        }
        let ledger = Arc::new(Ledger {
            pool: deps.pool.clone(),
            clock: Arc::clone(&deps.clock),
            policy: RecognitionPolicy::ByDay,
        });
        Ok(Self { deps, ledger })
    }

    /// The ledger the consumers write (for in-process callers and tests).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The gRPC services of finance, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let ledger = LedgerServiceServer::new(
            LedgerApi::new(
                self.deps.pool.clone(),
                Arc::clone(&self.deps.clock),
                Arc::clone(&self.deps.ids),
            )
            .with_policy(self.ledger.policy),
        )
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
        let analytics = AnalyticsServiceServer::new(AnalyticsApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(ledger).add_service(analytics),
            vec![
                <LedgerServiceServer<LedgerApi> as NamedService>::NAME,
                <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
            ],
        )
    }

    /// Starts the three consumers and the recognition job; they stop on
    /// `shutdown`. The ledger's two consumers apply batches (see
    /// [`consumers`]): `invoice-events` in lanes by ordering key, so a key's
    /// messages keep their order; `payment-events` unordered.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let [invoice_events, payment_events, subscription_events] =
            subscriptions(self.deps.max_delivery_attempts);
        let bus = &self.deps.bus;
        let batches = |lanes| {
            BatchSettings::new(
                consumers::LEDGER_BATCH_MESSAGES,
                consumers::LEDGER_BATCHES_IN_FLIGHT,
                lanes,
            )
        };
        let invoices = BatchConsumer::new(
            Arc::clone(bus),
            invoice_events,
            batches(Lanes::ByOrderingKey),
            InvoiceEventsHandler::new(Arc::clone(&self.ledger), INVOICE_EVENTS_SUBSCRIPTION),
        );
        let payments = BatchConsumer::new(
            Arc::clone(bus),
            payment_events,
            batches(Lanes::Shared),
            PaymentEventsHandler::new(Arc::clone(&self.ledger), PAYMENT_EVENTS_SUBSCRIPTION),
        );
        let snapshots = Consumer::new(
            Arc::clone(bus),
            subscription_events,
            Arc::new(SubscriptionEventsHandler::new(
                Arc::clone(&self.ledger),
                SUBSCRIPTION_EVENTS_SUBSCRIPTION,
            )),
        );
        let stop = || shutdown.clone();
        let mut tasks = vec![
            spawn_consumer(INVOICE_EVENTS_SUBSCRIPTION, {
                let stop = stop();
                async move { invoices.run(stop).await }
            }),
            spawn_consumer(PAYMENT_EVENTS_SUBSCRIPTION, {
                let stop = stop();
                async move { payments.run(stop).await }
            }),
            spawn_consumer(SUBSCRIPTION_EVENTS_SUBSCRIPTION, {
                let stop = stop();
                async move { snapshots.run(stop).await }
            }),
        ];
        let job = RecognitionJob::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            RECOGNITION_POLL,
        );
        tasks.push(tokio::spawn(job.run(shutdown.clone())));
        tasks
    }
}

/// Runs a consumer, logging why it stopped if it stopped on an error.
fn spawn_consumer(
    subscription: &'static str,
    running: impl Future<Output = Result<(), BusError>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = running.await {
            tracing::error!(%error, subscription, "a finance consumer stopped");
        }
    })
}

fn subscriptions(max_delivery_attempts: u32) -> [SubscriptionConfig; 3] {
    [
        SubscriptionConfig::ordered(INVOICE_EVENTS_SUBSCRIPTION, topics::INVOICE_EVENTS)
            .with_max_delivery_attempts(max_delivery_attempts),
        SubscriptionConfig::unordered(PAYMENT_EVENTS_SUBSCRIPTION, topics::PAYMENT_EVENTS)
            .with_max_delivery_attempts(max_delivery_attempts),
        SubscriptionConfig::unordered(
            SUBSCRIPTION_EVENTS_SUBSCRIPTION,
            topics::SUBSCRIPTION_EVENTS,
        )
        .with_max_delivery_attempts(max_delivery_attempts),
    ]
}
