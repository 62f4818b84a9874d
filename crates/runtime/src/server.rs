//! The gRPC server every service runs: its own services plus
//! `grpc.health.v1` and reflection, API-key authentication, a span per call
//! that continues the caller's trace, and a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::AuthLayer;
use crate::shutdown::Shutdown;
use crate::telemetry::extract_from_headers;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {address}: {source} (is another process using the port? pick another with TALLY_GRPC__LISTEN_ADDR)"
    )]
    Bind {
        /// The requested address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reflection could not load the descriptors (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A gRPC server under construction.
#[derive(Debug)]
pub struct GrpcServer {
    routes: Routes,
    service_names: Vec<&'static str>,
}

/// A bound listener: the address is known (useful with port 0) before serving starts.
#[derive(Debug)]
pub struct BoundListener {
    listener: TcpListener,
    /// The address actually bound.
    pub local_addr: SocketAddr,
}

/// Binds `address`, failing with a message that says what to do.
pub async fn bind(address: SocketAddr) -> Result<BoundListener, ServerError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { address, source })?;
    Ok(BoundListener {
        listener,
        local_addr,
    })
}

impl GrpcServer {
    /// A server for `routes`, whose services are named in `service_names`
    /// (full names like `tally.ingest.v1.IngestService`, reported by health).
    pub fn new(routes: Routes, service_names: Vec<&'static str>) -> Self {
        Self {
            routes,
            service_names,
        }
    }

    /// Adds more services (how `tally dev` puts all four services on one address).
    pub fn merge(mut self, other: GrpcServer) -> Self {
        let mut router = self.routes.into_axum_router();
        router = router.merge(other.routes.into_axum_router());
        self.routes = Routes::from(router);
        self.service_names.extend(other.service_names);
        self
    }

    /// Serves on `listener` until `shutdown` fires, then reports NOT_SERVING,
    /// stops accepting and lets calls in flight finish for up to `grace`.
    pub async fn serve(
        self,
        listener: BoundListener,
        auth: AuthLayer,
        shutdown: Shutdown,
        grace: Duration,
    ) -> Result<(), ServerError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in &self.service_names {
            health_reporter
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        health_reporter
            .set_service_status("", ServingStatus::Serving)
            .await;

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let routes = self
            .routes
            .add_service(health_service)
            .add_service(reflection);

        let names = self.service_names.clone();
        let stop_accepting = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                for name in names {
                    health_reporter
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                health_reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                tracing::info!("grpc server stopping: no new calls, draining calls in flight");
            }
        };

        tracing::info!(address = %listener.local_addr, services = ?self.service_names, "grpc server listening");
        let server = tonic::transport::Server::builder()
            .trace_fn(call_span)
            .layer(auth)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener.listener),
                stop_accepting,
            );

        let deadline = async {
            shutdown.wait().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result?,
            () = deadline => tracing::warn!(grace_seconds = grace.as_secs(), "calls still running after the grace period; stopping anyway"),
        }
        tracing::info!("grpc server stopped");
        Ok(())
    }
}

/// One span per call, continuing the caller's W3C trace context.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let span =
        tracing::info_span!("grpc.call", otel.name = %request.uri().path(), rpc.system = "grpc");
    let _ = span.set_parent(extract_from_headers(request.headers()));
    span
}
