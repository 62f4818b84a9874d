//! The ingest service: validates and de-duplicates usage events, keeps the
//! durable event log and hands accepted events to rating (see DESIGN.md).
//!
//! Today this is the skeleton every service starts from: the gRPC surface is
//! served (each RPC answers UNIMPLEMENTED until its issue lands) behind
//! authentication, health and reflection.

use tally_proto::ingest::ingest_service_server::{IngestService, IngestServiceServer};
use tally_runtime::server::GrpcServer;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-ingest";

/// The `tally.ingest.v1.IngestService` implementation.
#[derive(Debug, Clone, Default)]
pub struct IngestApi;

impl IngestService for IngestApi {}

/// The gRPC services of ingest, ready to serve.
pub fn grpc_server(max_message_bytes: usize) -> GrpcServer {
    let ingest = IngestServiceServer::new(IngestApi)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    GrpcServer::new(
        move |routes: Routes| routes.add_service(ingest),
        vec![<IngestServiceServer<IngestApi> as NamedService>::NAME],
    )
}
