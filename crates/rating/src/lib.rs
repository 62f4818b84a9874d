//! The rating service: owns the catalog (meters, plans, prices) and prices
//! usage in real time (see DESIGN.md and docs/architecture.md, "Rating: catalog").
//!
//! Today: the [`catalog`] (`CatalogService`) is implemented; `RatingService`
//! is served and answers UNIMPLEMENTED until usage rating lands.

pub mod catalog;

use std::sync::Arc;

use sqlx::PgPool;
use tally_bus::{BusError, SharedBus};
use tally_proto::rating::catalog_service_server::CatalogServiceServer;
use tally_proto::rating::rating_service_server::{RatingService, RatingServiceServer};
use tally_runtime::ids::SharedIdGenerator;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use catalog::CatalogApi;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-rating";

/// The `tally.rating.v1.RatingService` implementation (not written yet).
#[derive(Debug, Clone, Default)]
pub struct RatingApi;

impl RatingService for RatingApi {}

/// What rating needs from the composition root.
#[derive(Debug, Clone)]
pub struct RatingDeps {
    /// The database (schema `rating`).
    pub pool: PgPool,
    /// The bus (usage and subscription consumers, once they exist).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
}

/// A running rating service: its gRPC surface and (later) its consumers.
#[derive(Debug, Clone)]
pub struct Rating {
    deps: RatingDeps,
}

impl Rating {
    /// Builds rating. Fallible because starting will ensure the bus topics
    /// and subscriptions its consumers read.
    pub async fn start(deps: RatingDeps) -> Result<Self, BusError> {
        Ok(Self { deps })
    }

    /// The database pool (for in-process callers and tests).
    pub fn pool(&self) -> &PgPool {
        &self.deps.pool
    }

    /// The bus.
    pub fn bus(&self) -> &SharedBus {
        &self.deps.bus
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
        let rating = RatingServiceServer::new(RatingApi)
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

    /// Starts the background loops; none yet (the catalog is request-driven).
    pub fn spawn_background(&self, _shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}
