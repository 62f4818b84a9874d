//! The connectors service: Tally side by side with an external billing
//! system (see docs/architecture.md, "Connectors: Orb"). This first slice
//! forwards accepted usage to Orb: it consumes `usage-accepted`, sends the
//! events of customers mapped to Orb to `POST /v1/ingest` in batches, and
//! keeps what became of every event. It never calls another Tally service.
//!
//! * [`biller`] — the boundary with an external billing system (the
//!   `ExternalBiller` trait and its Tally-side types);
//! * [`orb`] — the Orb adapter (HTTP, retries, webhook signatures), Orb's
//!   `ExternalBiller`; Orb's shapes never leave it;
//! * [`forwarding`] — the forwarder, its `usage-accepted` consumer, its
//!   tables and `ConnectorService`;
//! * [`mirroring`] — Tally's customers (from `invoice-events`) and
//!   subscriptions (from `subscription-events`) mirrored in Orb, once each;
//! * [`webhooks`] — Orb's webhooks received (verified, recorded once);
//! * [`stripe_billing`] — the Stripe Billing adapter (reads customers,
//!   prices, subscriptions and invoices; Stripe's types never leave it);
//! * [`import`] — `tally migrate import`: the mapping file and the plan;
//! * [`migration`] — the per-customer billing system of record (external →
//!   shadow → cutover → rolled back), parity reports and cutover evidence.

pub mod biller;
mod error;
pub mod forwarding;
pub mod import;
mod metrics;
pub mod migration;
pub mod mirroring;
pub mod orb;
pub mod stripe_billing;
pub mod webhooks;

use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::consumer::{Consumer, MessageHandler};
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::connectors::connector_service_server::ConnectorServiceServer;
use tally_proto::connectors::migration_service_server::MigrationServiceServer;
use tally_runtime::config::ConnectorsConfig;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use biller::ExternalBiller;
pub use error::ConnectorsError;
pub use forwarding::api::ConnectorApi;
pub use forwarding::consumer::ForwardingConsumer;
pub use forwarding::{Disposition, Forwarder, ForwardingState, Incoming};
pub use migration::api::MigrationApi;
pub use mirroring::Mirroring;
use mirroring::consumer::{CustomerFacts, SubscriptionFacts};
pub use orb::{OrbApiKey, OrbClient, OrbWebhookSecret};

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-connectors";

/// The log target of the start-up notice about a missing `ORB_API_KEY`.
pub const SETUP_LOG_TARGET: &str = "tally_connectors::setup";

/// Connectors' subscription to `usage-accepted`: unordered, the events of a
/// customer may reach Orb in any order (Orb places them by timestamp).
pub const USAGE_ACCEPTED_SUBSCRIPTION: &str = "connectors-usage-accepted";

/// Connectors' subscription to `invoice-events` (the customer snapshots it
/// mirrors): ordered, a customer's facts in order.
pub const INVOICE_EVENTS_SUBSCRIPTION: &str = "connectors-invoice-events";

/// Connectors' subscription to `subscription-events` (the subscriptions it
/// mirrors): ordered per customer.
pub const SUBSCRIPTION_EVENTS_SUBSCRIPTION: &str = "connectors-subscription-events";

/// What connectors needs from the composition root.
#[derive(Debug, Clone)]
pub struct ConnectorsDeps {
    /// The database (schema `connectors`).
    pub pool: PgPool,
    /// The bus (`usage-accepted` in).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// The `[connectors]` section.
    pub config: ConnectorsConfig,
    /// `ORB_API_KEY`; without it nothing is forwarded (the API serves).
    pub orb_api_key: Option<OrbApiKey>,
    /// Deliveries before a failing message is dead-lettered.
    pub max_delivery_attempts: u32,
    /// Invoicing (`peers.invoicing_url`), for migrations: without it
    /// `MigrationService` answers FAILED_PRECONDITION.
    pub invoicing: Option<tally_runtime::peer::Peer>,
}

/// Why connectors did not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorsStartError {
    /// The bus refused a topic or subscription.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the Orb HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A running connectors service.
#[derive(Debug, Clone)]
pub struct Connectors {
    deps: ConnectorsDeps,
    orb: Option<OrbClient>,
}

impl Connectors {
    /// Builds connectors; with an Orb key, ensures the subscription it reads.
    pub async fn start(deps: ConnectorsDeps) -> Result<Self, ConnectorsStartError> {
        let orb = match &deps.orb_api_key {
            Some(key) => Some(
                OrbClient::new(&deps.config, key.clone())?
                    .with_webhook_secret(OrbWebhookSecret::from_env()),
            ),
            None => {
                tracing::warn!(
                    target: SETUP_LOG_TARGET,
                    "{} is not set: accepted usage is not forwarded to Orb (ConnectorService still serves)",
                    orb::API_KEY_VARIABLE
                );
                None
            }
        };
        if orb.is_some() {
            deps.bus.ensure_topic(topics::USAGE_ACCEPTED).await?;
            deps.bus
                .ensure_subscription(&subscription(deps.max_delivery_attempts))
                .await?;
            for (topic, config) in mirroring_subscriptions(deps.max_delivery_attempts) {
                deps.bus.ensure_topic(topic).await?;
                deps.bus.ensure_subscription(&config).await?;
            }
        }
        Ok(Self { deps, orb })
    }

    /// The Orb client, when `ORB_API_KEY` is set.
    pub fn orb(&self) -> Option<&OrbClient> {
        self.orb.as_ref()
    }

    /// The forwarder (for in-process callers and tests); `None` without a key.
    pub fn forwarder(&self) -> Option<Forwarder> {
        self.orb.as_ref().map(|orb| {
            Forwarder::new(
                self.deps.pool.clone(),
                Arc::clone(&self.deps.clock),
                orb.clone(),
                USAGE_ACCEPTED_SUBSCRIPTION,
            )
        })
    }

    /// Mirroring in Orb (for in-process callers and tests); `None` without a key.
    pub fn mirroring(&self) -> Option<Mirroring> {
        self.orb.as_ref().map(|orb| {
            Mirroring::new(
                self.deps.pool.clone(),
                Arc::clone(&self.deps.clock),
                Arc::new(orb.clone()),
            )
        })
    }

    /// Migrations between Orb and Tally; `None` without an Orb key or an
    /// invoicing peer.
    pub fn migrations(&self) -> Option<migration::Migrations> {
        let orb = self.orb.as_ref()?;
        let invoicing = self.deps.invoicing.as_ref()?;
        let config = &self.deps.config;
        Some(migration::Migrations::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            Arc::new(tally_runtime::ids::ClockIds::new(Arc::clone(
                &self.deps.clock,
            ))),
            Arc::new(orb.clone()),
            Arc::new(migration::InvoicingClient::new(invoicing.clone())),
            migration::model::CutoverPolicy {
                matching_periods: config.cutover_matching_periods,
                boundary_tolerance: chrono::Duration::minutes(i64::from(
                    config.cutover_boundary_tolerance_minutes,
                )),
            },
        ))
    }

    /// The Orb webhook endpoint's router (`POST /webhooks/orb`).
    pub fn webhook_router(&self) -> axum::Router {
        webhooks::router(webhooks::WebhookState::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            self.orb
                .as_ref()
                .map(|orb| Arc::new(orb.clone()) as Arc<dyn ExternalBiller>),
        ))
    }

    /// Serves the Orb webhook endpoint on `listener`, bound by the caller.
    pub fn spawn_webhook_listener_on(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: &Shutdown,
    ) -> std::io::Result<(std::net::SocketAddr, JoinHandle<()>)> {
        webhooks::serve_on(self.webhook_router(), listener, shutdown.clone())
    }

    /// The gRPC service of connectors, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let api = ConnectorServiceServer::new(ConnectorApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
        let migrations = MigrationServiceServer::new(MigrationApi::new(self.migrations()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(api).add_service(migrations),
            vec![
                <ConnectorServiceServer<ConnectorApi> as NamedService>::NAME,
                <MigrationServiceServer<MigrationApi> as NamedService>::NAME,
            ],
        )
    }

    /// Starts the forwarding consumer (only with an Orb key); it stops on `shutdown`.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let Some(forwarder) = self.forwarder() else {
            return Vec::new();
        };
        let consumer = ForwardingConsumer::new(
            Arc::clone(&self.deps.bus),
            subscription(self.deps.max_delivery_attempts),
            forwarder,
            self.deps.config.orb_batch_events,
            std::time::Duration::from_millis(self.deps.config.orb_retry_max_delay_ms),
        );
        let mut tasks = Vec::new();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = consumer.run(stop).await {
                tracing::error!(%error, subscription = USAGE_ACCEPTED_SUBSCRIPTION, "the orb forwarding consumer stopped");
            }
        }));
        if let Some(mirroring) = self.mirroring() {
            let [(_, customers), (_, subscriptions)] =
                mirroring_subscriptions(self.deps.max_delivery_attempts);
            let handlers: [(SubscriptionConfig, Arc<dyn MessageHandler>); 2] = [
                (
                    customers,
                    Arc::new(CustomerFacts::new(
                        mirroring.clone(),
                        INVOICE_EVENTS_SUBSCRIPTION,
                    )),
                ),
                (
                    subscriptions,
                    Arc::new(SubscriptionFacts::new(
                        mirroring,
                        SUBSCRIPTION_EVENTS_SUBSCRIPTION,
                    )),
                ),
            ];
            for (config, handler) in handlers {
                let name = config.name.clone();
                let consumer = Consumer::new(Arc::clone(&self.deps.bus), config, handler);
                let stop = shutdown.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(error) = consumer.run(stop).await {
                        tracing::error!(%error, subscription = %name, "an orb mirroring consumer stopped");
                    }
                }));
            }
        }
        tasks
    }
}

/// The topics mirroring reads and its subscriptions to them.
fn mirroring_subscriptions(max_delivery_attempts: u32) -> [(&'static str, SubscriptionConfig); 2] {
    [
        (
            topics::INVOICE_EVENTS,
            SubscriptionConfig::ordered(INVOICE_EVENTS_SUBSCRIPTION, topics::INVOICE_EVENTS)
                .with_max_delivery_attempts(max_delivery_attempts),
        ),
        (
            topics::SUBSCRIPTION_EVENTS,
            SubscriptionConfig::ordered(
                SUBSCRIPTION_EVENTS_SUBSCRIPTION,
                topics::SUBSCRIPTION_EVENTS,
            )
            .with_max_delivery_attempts(max_delivery_attempts),
        ),
    ]
}

fn subscription(max_delivery_attempts: u32) -> SubscriptionConfig {
    SubscriptionConfig::unordered(USAGE_ACCEPTED_SUBSCRIPTION, topics::USAGE_ACCEPTED)
        .with_max_delivery_attempts(max_delivery_attempts)
}
