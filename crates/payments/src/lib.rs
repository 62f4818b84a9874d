//! The payments service: turns finalized invoices into money through Stripe
//! and proves that Tally, Stripe and the ledger agree (see
//! docs/architecture.md, "Payments").
//!
//! * [`stripe`] — the Stripe adapter (HTTP, idempotency keys, retries,
//!   webhook signatures); Stripe's shapes never leave it;
//! * [`collect`] — the `invoice-events` consumer: mirror, finalize, collect, void;
//! * [`webhook`] — the Stripe webhook endpoint;
//! * [`dunning`] — the retry schedule of failed payments, driven by the clock;
//! * [`api`] — `PaymentService` (payments, refunds, the customer mapping);
//! * [`invoicing`] — the invoicing peer (refund reservations on the invoice's
//!   one creditable balance);
//! * [`reconcile`] — `ReconciliationService` and the periodic reconciliation;
//! * [`ledger`] — the append-only double-entry payments ledger.

pub mod api;
mod audit;
pub mod collect;
pub mod core;
pub mod credit_notes;
pub mod dunning;
mod error;
pub mod events;
pub mod invoicing;
pub mod ledger;
mod metrics;
pub mod reconcile;
pub mod refund;
pub mod retry;
pub mod store;
pub mod stripe;
pub mod webhook;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::consumer::Consumer;
use tally_bus::inbox::ServiceSchema;
use tally_bus::outbox::OutboxRelay;
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::payments::payment_service_server::PaymentServiceServer;
use tally_proto::payments::reconciliation_service_server::ReconciliationServiceServer;
use tally_runtime::config::PaymentsConfig;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use crate::core::{Core, DunningPolicy};
pub use api::PaymentsApi;
pub use collect::InvoiceEventsHandler;
pub use error::PaymentsError;
pub use reconcile::Reconciler;
pub use reconcile::api::ReconciliationApi;
pub use stripe::signature::WebhookSecret;
pub use stripe::{HttpStripe, SecretKey, Stripe, StripeError};

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-payments";

/// The log target of the start-up notices about missing Stripe secrets:
/// `tally dev` turns it off and says it once in its banner instead.
pub const SETUP_LOG_TARGET: &str = "tally_payments::setup";

/// The subscription payments reads invoice events from (topic `invoice-events`).
pub const INVOICE_EVENTS_SUBSCRIPTION: &str = "payments-invoice-events";

/// The secrets payments reads from the environment (never from the config file).
#[derive(Debug, Clone, Default)]
pub struct StripeSecrets {
    /// `STRIPE_API_KEY`; without it nothing is sent to Stripe (invoice events wait).
    pub api_key: Option<SecretKey>,
    /// `STRIPE_WEBHOOK_SECRET`; without it every webhook is refused.
    pub webhook_secret: Option<WebhookSecret>,
}

impl StripeSecrets {
    /// Reads `STRIPE_API_KEY` and `STRIPE_WEBHOOK_SECRET` (empty counts as unset).
    pub fn from_env() -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Self {
            api_key: read("STRIPE_API_KEY").map(SecretKey::new),
            webhook_secret: read("STRIPE_WEBHOOK_SECRET").map(WebhookSecret::new),
        }
    }
}

/// What payments needs from the composition root.
#[derive(Debug, Clone)]
pub struct PaymentsDeps {
    /// The database (schema `payments`).
    pub pool: PgPool,
    /// The bus (`invoice-events` in, `payment-events` out).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
    /// The `[payments]` section.
    pub config: PaymentsConfig,
    /// Stripe keys from the environment.
    pub secrets: StripeSecrets,
    /// Invoicing (`peers.invoicing_url`): refunds are reserved there before
    /// Stripe is asked. The peer key needs the `write` scope.
    pub invoicing: tally_runtime::peer::Peer,
}

/// A running payments service.
#[derive(Debug, Clone)]
pub struct Payments {
    deps: PaymentsDeps,
    core: Core,
}

impl Payments {
    /// Builds payments and ensures the topics and subscription it uses.
    pub async fn start(deps: PaymentsDeps) -> Result<Self, PaymentsStartError> {
        for topic in [topics::INVOICE_EVENTS, topics::PAYMENT_EVENTS] {
            deps.bus.ensure_topic(topic).await?;
        }
        deps.bus
            .ensure_subscription(&invoice_events_subscription())
            .await?;
        if deps.secrets.webhook_secret.is_none() {
            tracing::warn!(
                target: SETUP_LOG_TARGET,
                "STRIPE_WEBHOOK_SECRET is not set: every webhook will be refused"
            );
        }
        let http = HttpStripe::new(&deps.config, deps.secrets.api_key.clone())?;
        let core = Core {
            pool: deps.pool.clone(),
            stripe: Stripe::new(http),
            clock: Arc::clone(&deps.clock),
            ids: Arc::clone(&deps.ids),
            dunning: DunningPolicy::from_config(&deps.config),
            invoicing: invoicing::InvoicingPeer::new(deps.invoicing.clone()),
        };
        Ok(Self { deps, core })
    }

    /// The shared core (for in-process callers and tests).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The reconciler (API, scheduler, `tally reconcile`).
    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.core.clone(),
            self.deps.config.reconciliation_interval_hours,
        )
    }

    /// The gRPC services of payments, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let payments = PaymentServiceServer::new(PaymentsApi::new(self.core.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let reconciliation =
            ReconciliationServiceServer::new(ReconciliationApi::new(self.reconciler()))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(payments).add_service(reconciliation),
            vec![
                <PaymentServiceServer<PaymentsApi> as NamedService>::NAME,
                <ReconciliationServiceServer<ReconciliationApi> as NamedService>::NAME,
            ],
        )
    }

    /// The webhook endpoint's router (`POST /webhooks/stripe`).
    pub fn webhook_router(&self) -> axum::Router {
        webhook::router(webhook::WebhookState::new(
            self.core.clone(),
            self.deps.secrets.webhook_secret.clone(),
            self.deps.config.webhook_tolerance_seconds,
        ))
    }

    /// Binds the webhook listener on `payments.webhook_listen_addr` (or
    /// `address`), returning the bound address and the serving task.
    pub async fn spawn_webhook_listener(
        &self,
        address: Option<SocketAddr>,
        shutdown: &Shutdown,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let address = address.unwrap_or(self.deps.config.webhook_listen_addr);
        webhook::serve(self.webhook_router(), address, shutdown.clone()).await
    }

    /// Serves the webhook endpoint on `listener`, bound by the caller.
    pub fn spawn_webhook_listener_on(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: &Shutdown,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        webhook::serve_on(self.webhook_router(), listener, shutdown.clone())
    }

    /// Starts the invoice consumer, the outbox relay, the dunning scheduler
    /// and the periodic reconciliation; they stop on `shutdown`.
    ///
    /// Without `STRIPE_API_KEY` only the outbox relay runs: invoice events
    /// wait in their subscription instead of failing one by one.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let relay = tokio::spawn(
            OutboxRelay::new(
                self.deps.pool.clone(),
                ServiceSchema::Payments,
                Arc::clone(&self.deps.bus),
            )
            .run(shutdown.clone()),
        );
        if self.deps.secrets.api_key.is_none() {
            tracing::error!(
                target: SETUP_LOG_TARGET,
                "STRIPE_API_KEY is not set: invoice events, dunning and reconciliation wait until it is"
            );
            return vec![relay];
        }
        let consumer = Consumer::new(
            Arc::clone(&self.deps.bus),
            invoice_events_subscription(),
            Arc::new(InvoiceEventsHandler::new(self.core.clone())),
        );
        let consumer_shutdown = shutdown.clone();
        let scheduler = dunning::Dunning::new(
            self.core.clone(),
            std::time::Duration::from_secs(self.deps.config.scheduler_poll_interval_seconds),
        );
        let mut tasks = vec![
            tokio::spawn(async move {
                if let Err(error) = consumer.run(consumer_shutdown).await {
                    tracing::error!(%error, "the invoice-events consumer stopped");
                }
            }),
            relay,
            tokio::spawn(scheduler.run(shutdown.clone())),
        ];
        // Every task returned runs until shutdown (health treats an earlier
        // end as a failure): no periodic reconciliation task when it is off.
        if self.deps.config.reconciliation_interval_hours > 0 {
            tasks.push(tokio::spawn(self.reconciler().run_periodically(
                std::time::Duration::from_secs(self.deps.config.scheduler_poll_interval_seconds),
                shutdown.clone(),
            )));
        }
        tasks
    }
}

/// Why payments could not start.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsStartError {
    /// The bus refused the topics or subscription.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The Stripe client could not be built.
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

fn invoice_events_subscription() -> SubscriptionConfig {
    SubscriptionConfig::ordered(INVOICE_EVENTS_SUBSCRIPTION, topics::INVOICE_EVENTS)
}
