//! The rating service: owns the catalog (meters, plans, prices) and prices
//! usage in real time (see DESIGN.md).
//!
//! Today this is the skeleton every service starts from: the gRPC surface is
//! served (each RPC answers UNIMPLEMENTED until its issue lands) behind
//! authentication, health and reflection.

use tally_proto::rating::catalog_service_server::{CatalogService, CatalogServiceServer};
use tally_proto::rating::rating_service_server::{RatingService, RatingServiceServer};
use tally_runtime::server::GrpcServer;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-rating";

/// The `tally.rating.v1.CatalogService` implementation.
#[derive(Debug, Clone, Default)]
pub struct CatalogApi;

impl CatalogService for CatalogApi {}

/// The `tally.rating.v1.RatingService` implementation.
#[derive(Debug, Clone, Default)]
pub struct RatingApi;

impl RatingService for RatingApi {}

/// The gRPC services of rating, ready to serve.
pub fn grpc_server(max_message_bytes: usize) -> GrpcServer {
    let catalog =
        CatalogServiceServer::new(CatalogApi).max_decoding_message_size(max_message_bytes);
    let rating = RatingServiceServer::new(RatingApi).max_decoding_message_size(max_message_bytes);
    GrpcServer::new(
        move |routes: Routes| routes.add_service(catalog).add_service(rating),
        vec![
            <CatalogServiceServer<CatalogApi> as NamedService>::NAME,
            <RatingServiceServer<RatingApi> as NamedService>::NAME,
        ],
    )
}
