//! The rating service: owns the catalog (meters, plans, prices) and prices
//! usage in real time (see docs/architecture.md, "Rating:
//! catalog" and "Rating: usage").
//!
//! * [`catalog`] — `CatalogService` and the catalog loaders;
//! * [`replica`] — the subscription replica (`subscription-events`);
//! * [`usage`] — usage consumption (`usage-accepted`) into aggregates, and
//!   unrated usage;
//! * [`api`] — `RatingService` (usage charges, current cost, unrated usage,
//!   re-rate jobs);
//! * [`charges`] — pricing of stored aggregates into usage lines;
//! * [`rerate`] — recomputing periods from ingest's event log after a
//!   backdated change.

pub mod api;
pub mod cache;
pub mod catalog;
pub mod charges;
mod error;
pub mod metrics;
pub mod replica;
pub mod rerate;
pub mod thresholds;
pub mod usage;
pub mod usage_query;
mod wire;

use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::consumer::Consumer;
use tally_bus::inbox::ServiceSchema;
use tally_bus::outbox::OutboxRelay;
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::rating::catalog_service_server::CatalogServiceServer;
use tally_proto::rating::rating_service_server::RatingServiceServer;
use tally_runtime::config::RatingConfig;
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::peer::Peer;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use api::RatingApi;
pub use cache::CatalogCache;
pub use catalog::CatalogApi;
pub use error::RatingError;
pub use replica::SubscriptionReplica;
pub use rerate::{RerateQueue, RerateWorker};
pub use thresholds::ThresholdEvaluator;
pub use usage::UsageRater;
pub use usage::consumer::UsageConsumer;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-rating";

/// The subscription rating reads accepted usage from (topic `usage-accepted`).
pub const USAGE_SUBSCRIPTION: &str = "rating-usage-accepted";
/// The subscription rating reads subscription snapshots from (topic `subscription-events`).
pub const SUBSCRIPTION_EVENTS_SUBSCRIPTION: &str = "rating-subscription-events";

/// What rating needs from the composition root.
#[derive(Debug, Clone)]
pub struct RatingDeps {
    /// The database (schema `rating`).
    pub pool: PgPool,
    /// The bus (usage and subscription consumers).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
    /// Ingest, whose event log re-rating reads (`ReadEvents`).
    pub ingest: Peer,
}

/// A running rating service: its gRPC surface and its consumers.
#[derive(Debug, Clone)]
pub struct Rating {
    deps: RatingDeps,
    config: RatingConfig,
    cache: CatalogCache,
    rater: UsageRater,
    rerates: RerateQueue,
}

impl Rating {
    /// [`Rating::start_with`] the default `[rating]` settings.
    pub async fn start(deps: RatingDeps) -> Result<Self, BusError> {
        Self::start_with(deps, RatingConfig::default()).await
    }

    /// Builds rating and ensures the topics and subscriptions its consumers read.
    pub async fn start_with(deps: RatingDeps, mut config: RatingConfig) -> Result<Self, BusError> {
        let lanes = config.usable_lanes(deps.pool.options().get_max_connections());
        if lanes < config.usage_batches_in_flight {
            tracing::warn!(
                configured = config.usage_batches_in_flight,
                lanes,
                "rating.usage_batches_in_flight lowered to leave a database connection spare"
            );
            config.usage_batches_in_flight = lanes;
        }
        for topic in [
            topics::USAGE_ACCEPTED,
            topics::SUBSCRIPTION_EVENTS,
            topics::RATING_EVENTS,
        ] {
            deps.bus.ensure_topic(topic).await?;
        }
        deps.bus.ensure_subscription(&usage_subscription()).await?;
        deps.bus
            .ensure_subscription(&subscription_events_subscription())
            .await?;
        let cache = CatalogCache::new(deps.pool.clone());
        let rater = UsageRater::new(cache.clone(), Arc::clone(&deps.clock));
        let rerates = RerateQueue::new(Arc::clone(&deps.clock), Arc::clone(&deps.ids));
        Ok(Self {
            deps,
            config,
            cache,
            rater,
            rerates,
        })
    }

    /// The database pool (for in-process callers and tests).
    pub fn pool(&self) -> &PgPool {
        &self.deps.pool
    }

    /// The bus.
    pub fn bus(&self) -> &SharedBus {
        &self.deps.bus
    }

    /// The rating path (shared by the consumers).
    pub fn rater(&self) -> &UsageRater {
        &self.rater
    }

    /// The `usage-accepted` consumer.
    pub fn usage_consumer(&self) -> UsageConsumer {
        UsageConsumer::new(
            Arc::clone(&self.deps.bus),
            usage_subscription(),
            self.deps.pool.clone(),
            self.rater.clone(),
            ThresholdEvaluator::new(
                self.deps.pool.clone(),
                self.cache.clone(),
                Arc::clone(&self.deps.clock),
            ),
            self.config.usage_batch_messages,
            self.config.usage_batches_in_flight,
        )
    }

    /// The subscription replica (the `subscription-events` handler).
    pub fn replica(&self) -> SubscriptionReplica {
        SubscriptionReplica::new(
            self.deps.pool.clone(),
            self.rater.clone(),
            Arc::clone(&self.deps.clock),
            self.rerates.clone(),
        )
    }

    /// The re-rate worker (reads ingest's log through `RatingDeps::ingest`).
    pub fn rerate_worker(&self) -> RerateWorker {
        RerateWorker::new(
            self.deps.pool.clone(),
            self.rater.clone(),
            self.deps.ingest.clone(),
            self.rerates.clone(),
            Arc::clone(&self.deps.clock),
        )
    }

    /// The gRPC services of rating, ready to serve.
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let catalog = CatalogServiceServer::new(CatalogApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            Arc::clone(&self.deps.ids),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
        let rating = RatingServiceServer::new(RatingApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            self.cache.clone(),
            self.rerates.clone(),
            Arc::clone(&self.deps.ids),
            self.deps.ingest.clone(),
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(catalog).add_service(rating),
            vec![
                <CatalogServiceServer<CatalogApi> as NamedService>::NAME,
                <RatingServiceServer<RatingApi> as NamedService>::NAME,
            ],
        )
    }

    /// Starts the usage consumer, the subscription replica and the re-rate
    /// worker; they stop on `shutdown`.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let usage = self.usage_consumer();
        let usage_shutdown = shutdown.clone();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(error) = usage.run(usage_shutdown).await {
                tracing::error!(%error, "the usage consumer stopped");
            }
        })];
        let replica = Consumer::new(
            Arc::clone(&self.deps.bus),
            subscription_events_subscription(),
            Arc::new(self.replica()),
        );
        let replica_shutdown = shutdown.clone();
        let rerate_worker = self.rerate_worker();
        let rerate_shutdown = shutdown.clone();
        let outbox = OutboxRelay::new(
            self.deps.pool.clone(),
            ServiceSchema::Rating,
            Arc::clone(&self.deps.bus),
        );
        tasks.extend([
            tokio::spawn(outbox.run(shutdown.clone())),
            tokio::spawn(metrics::run(self.deps.pool.clone(), shutdown.clone())),
            tokio::spawn(async move { rerate_worker.run(rerate_shutdown).await }),
            tokio::spawn(async move {
                if let Err(error) = replica.run(replica_shutdown).await {
                    tracing::error!(%error, "the subscription replica stopped");
                }
            }),
        ]);
        tasks
    }
}

/// Unordered: absorbing an event is commutative (every aggregation, `Latest`
/// by event time and id included), each event is rated once by its key, and
/// the lanes and per-customer locks serialise a customer's writes — arrival
/// order changes no total (docs/architecture.md, "Ordering per topic").
fn usage_subscription() -> SubscriptionConfig {
    SubscriptionConfig::unordered(USAGE_SUBSCRIPTION, topics::USAGE_ACCEPTED)
}

/// Unordered: every message is a full snapshot applied only when its version
/// is higher than the stored one, so a late older snapshot changes nothing.
fn subscription_events_subscription() -> SubscriptionConfig {
    SubscriptionConfig::unordered(
        SUBSCRIPTION_EVENTS_SUBSCRIPTION,
        topics::SUBSCRIPTION_EVENTS,
    )
}
