//! The invoicing service: customers, subscriptions, bill runs, invoices,
//! credit notes and credits (see DESIGN.md).
//!
//! Today this is the skeleton every service starts from: the gRPC surface is
//! served (each RPC answers UNIMPLEMENTED until its issue lands) behind
//! authentication, health and reflection.

use tally_proto::invoicing::credit_service_server::{CreditService, CreditServiceServer};
use tally_proto::invoicing::customer_service_server::{CustomerService, CustomerServiceServer};
use tally_proto::invoicing::invoice_service_server::{InvoiceService, InvoiceServiceServer};
use tally_proto::invoicing::subscription_service_server::{
    SubscriptionService, SubscriptionServiceServer,
};
use tally_runtime::server::GrpcServer;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-invoicing";

/// The `tally.invoicing.v1` service implementations.
#[derive(Debug, Clone, Default)]
pub struct InvoicingApi;

impl CustomerService for InvoicingApi {}
impl SubscriptionService for InvoicingApi {}
impl InvoiceService for InvoicingApi {}
impl CreditService for InvoicingApi {}

/// The gRPC services of invoicing, ready to serve.
pub fn grpc_server(max_message_bytes: usize) -> GrpcServer {
    let add_routes = move |routes: Routes| {
        routes
            .add_service(
                CustomerServiceServer::new(InvoicingApi)
                    .max_decoding_message_size(max_message_bytes),
            )
            .add_service(
                SubscriptionServiceServer::new(InvoicingApi)
                    .max_decoding_message_size(max_message_bytes),
            )
            .add_service(
                InvoiceServiceServer::new(InvoicingApi)
                    .max_decoding_message_size(max_message_bytes),
            )
            .add_service(
                CreditServiceServer::new(InvoicingApi).max_decoding_message_size(max_message_bytes),
            )
    };
    GrpcServer::new(
        add_routes,
        vec![
            <CustomerServiceServer<InvoicingApi> as NamedService>::NAME,
            <SubscriptionServiceServer<InvoicingApi> as NamedService>::NAME,
            <InvoiceServiceServer<InvoicingApi> as NamedService>::NAME,
            <CreditServiceServer<InvoicingApi> as NamedService>::NAME,
        ],
    )
}
