//! The payments service: Stripe collection, webhooks, dunning, refunds and
//! reconciliation (see DESIGN.md).
//!
//! Today this is the skeleton every service starts from: the gRPC surface is
//! served (each RPC answers UNIMPLEMENTED until its issue lands) behind
//! authentication, health and reflection.

use tally_proto::payments::payment_service_server::{PaymentService, PaymentServiceServer};
use tally_proto::payments::reconciliation_service_server::{
    ReconciliationService, ReconciliationServiceServer,
};
use tally_runtime::server::GrpcServer;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-payments";

/// The `tally.payments.v1` service implementations.
#[derive(Debug, Clone, Default)]
pub struct PaymentsApi;

impl PaymentService for PaymentsApi {}
impl ReconciliationService for PaymentsApi {}

/// The gRPC services of payments, ready to serve.
pub fn grpc_server(max_message_bytes: usize) -> GrpcServer {
    let add_routes = move |routes: Routes| {
        routes
            .add_service(
                PaymentServiceServer::new(PaymentsApi).max_decoding_message_size(max_message_bytes),
            )
            .add_service(
                ReconciliationServiceServer::new(PaymentsApi)
                    .max_decoding_message_size(max_message_bytes),
            )
    };
    GrpcServer::new(
        add_routes,
        vec![
            <PaymentServiceServer<PaymentsApi> as NamedService>::NAME,
            <ReconciliationServiceServer<PaymentsApi> as NamedService>::NAME,
        ],
    )
}
