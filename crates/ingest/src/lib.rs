//! The ingest service: validates and de-duplicates usage events, keeps the
//! durable event log and hands accepted events to rating (see
//! docs/architecture.md, "Ingest").
//!
//! From `main` to the database:
//!
//! * [`api`] — `IngestService` (gRPC) and [`intake`] — the `usage-events`
//!   subscription both hand batches to the [`pipeline`];
//! * [`pipeline`] validates ([`validation`], [`decode`] for bus payloads),
//!   lifts the window for open [`backfill`]s, and commits each batch in one
//!   transaction through [`log`];
//! * [`relay`] publishes committed events on `usage-accepted`;
//! * [`reads`] answers replay, status and rejected-event queries;
//! * [`metrics`] counts everything.

pub mod api;
pub mod backfill;
pub mod decode;
pub mod intake;
pub mod log;
pub mod metrics;
pub mod pipeline;
pub mod reads;
pub mod relay;
pub mod validation;

use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::inbox::ServiceSchema;
use tally_bus::outbox::OutboxRelay;
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::ingest::ingest_service_server::IngestServiceServer;
use tally_runtime::config::IngestConfig;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use api::IngestApi;
pub use pipeline::{BatchOutcome, Incoming, Ingestor, RejectionStorage};

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-ingest";

/// The subscription the Pub/Sub intake reads (on the `usage-events` topic).
pub const USAGE_EVENTS_SUBSCRIPTION: &str = "usage-events";

/// What ingest needs from the composition root.
#[derive(Debug, Clone)]
pub struct IngestDeps {
    /// The database (schema `ingest`).
    pub pool: PgPool,
    /// The bus.
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
    /// The `ingest` config section.
    pub config: IngestConfig,
    /// `bus.max_delivery_attempts`.
    pub max_delivery_attempts: u32,
}

/// A running ingest: its gRPC surface and its background loops.
#[derive(Debug, Clone)]
pub struct Ingest {
    deps: IngestDeps,
    ingestor: Arc<Ingestor>,
    relay: relay::AcceptedRelay,
}

impl Ingest {
    /// Builds ingest and makes sure its topics and subscription exist.
    pub async fn start(deps: IngestDeps) -> Result<Self, BusError> {
        for topic in [
            topics::USAGE_EVENTS,
            topics::USAGE_ACCEPTED,
            topics::USAGE_REJECTED,
        ] {
            deps.bus.ensure_topic(topic).await?;
        }
        if deps.config.pubsub_intake {
            deps.bus
                .ensure_subscription(&Self::subscription(&deps))
                .await?;
        }
        let metrics = Arc::new(metrics::IngestMetrics::new(deps.clock.now()));
        let ingestor = Arc::new(Ingestor::new(
            deps.pool.clone(),
            Arc::clone(&deps.clock),
            Arc::clone(&deps.ids),
            validation::Validator::new(&deps.config),
            Arc::clone(&metrics),
        ));
        let relay = relay::AcceptedRelay::new(deps.pool.clone(), Arc::clone(&deps.bus), metrics);
        Ok(Self {
            deps,
            ingestor,
            relay,
        })
    }

    /// Unordered: acceptance is keyed by (customer, event id) and does not
    /// depend on arrival order — a duplicate or a conflicting payload is found
    /// whichever arrives first (docs/architecture.md, "Ordering per topic").
    fn subscription(deps: &IngestDeps) -> SubscriptionConfig {
        SubscriptionConfig::unordered(USAGE_EVENTS_SUBSCRIPTION, topics::USAGE_EVENTS)
            .with_max_delivery_attempts(deps.max_delivery_attempts)
    }

    /// The pipeline (for in-process callers and tests).
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// The relay towards `usage-accepted`.
    pub fn relay(&self) -> &relay::AcceptedRelay {
        &self.relay
    }

    /// The Pub/Sub intake.
    pub fn intake(&self) -> intake::PubSubIntake {
        intake::PubSubIntake::new(
            Arc::clone(&self.deps.bus),
            Self::subscription(&self.deps),
            Arc::clone(&self.ingestor),
            self.deps.config.pubsub_batch_messages,
        )
    }

    /// The gRPC services of ingest, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let api = IngestApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            Arc::clone(&self.deps.ids),
            Arc::clone(&self.ingestor),
            self.relay.clone(),
            self.deps.config.max_batch_events,
            self.deps.config.stream_window,
        );
        let ingest = IngestServiceServer::new(api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(ingest),
            vec![<IngestServiceServer<IngestApi> as NamedService>::NAME],
        )
    }

    /// Starts the relays and (when enabled) the Pub/Sub intake; they stop on `shutdown`.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.relay.clone().run(shutdown.clone())),
            tokio::spawn(
                OutboxRelay::new(
                    self.deps.pool.clone(),
                    ServiceSchema::Ingest,
                    Arc::clone(&self.deps.bus),
                )
                .run(shutdown.clone()),
            ),
        ];
        if self.deps.config.pubsub_intake {
            let intake = self.intake();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(error) = intake.run(shutdown).await {
                    tracing::error!(%error, "the Pub/Sub intake stopped");
                }
            }));
        }
        tasks
    }
}
