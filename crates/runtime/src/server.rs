//! The gRPC server every service runs: its own services plus
//! `grpc.health.v1` (liveness and readiness, [`crate::readiness`]) and
//! reflection (v1 and v1alpha), the caller's key and scopes
//! (`tally.auth.v1.AuthService`, [`crate::caller`]), API-key authentication, a span per call
//! that continues the caller's trace, INVALID_ARGUMENT for requests that cannot
//! be decoded ([`crate::decode_errors`]), and a graceful stop.
//!
//! Browsers reach the same services over gRPC-web (HTTP/1.1 or HTTP/2, the
//! console): `tonic_web::GrpcWebLayer` translates, and a CORS policy admits
//! the origins in `grpc.cors_allowed_origins` ([`cors_layer`]). Plain gRPC is
//! unchanged.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::AuthLayer;
use crate::decode_errors::DecodeErrorsLayer;
use crate::in_flight::InFlight;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use crate::shutdown::drain_within;
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

/// Adds one crate's services to the routing table.
type AddRoutes = Box<dyn FnOnce(Routes) -> Routes + Send>;

/// A gRPC server under construction.
pub struct GrpcServer {
    /// Applied in order to an empty table (tonic cannot merge two finished tables).
    add_routes: Vec<AddRoutes>,
    service_names: Vec<&'static str>,
    /// TLS on every connection when set (see [`crate::tls`]).
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// What health reports beyond "the server is up".
    readiness: Readiness,
    /// Browser origins the CORS policy admits (`grpc.cors_allowed_origins`).
    browser_origins: Vec<String>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GrpcServer")
            .field("service_names", &self.service_names)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
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

/// The accepted connections of `listener` with Nagle's algorithm off.
/// tonic's own `tcp_nodelay` only applies to listeners it binds itself;
/// without it a response written in pieces (headers, message, trailers)
/// waits for the client's delayed ACK — about 40 ms per call.
fn without_nagle(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

impl GrpcServer {
    /// A server whose services `add_routes` adds to the table; they are named
    /// in `service_names` (full names like `tally.ingest.v1.IngestService`,
    /// reported by health).
    pub fn new(
        add_routes: impl FnOnce(Routes) -> Routes + Send + 'static,
        service_names: Vec<&'static str>,
    ) -> Self {
        Self {
            add_routes: vec![Box::new(add_routes)],
            service_names,
            tls: None,
            readiness: Readiness::default(),
            browser_origins: Vec::new(),
        }
    }

    /// Lets pages from `origins` call the services from a browser
    /// (gRPC-web with CORS; see [`cors_layer`]).
    pub fn with_browser_origins(mut self, origins: Vec<String>) -> Self {
        self.browser_origins.extend(origins);
        self
    }

    /// Serves TLS only, with `acceptor` ([`crate::tls::acceptor`]).
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Watches the background tasks of the services added so far: when one
    /// ends, they are not ready and the process is not live
    /// ([`crate::readiness`]).
    pub fn with_background_tasks(mut self, tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        self.readiness.watch(self.service_names.clone(), tasks);
        self
    }

    /// Adds readiness checks (the database) to what health reports.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness.merge(readiness);
        self
    }

    /// Adds more services (how `tally dev` puts all four services on one address).
    pub fn merge(mut self, other: GrpcServer) -> Self {
        self.add_routes.extend(other.add_routes);
        self.service_names.extend(other.service_names);
        self.readiness.merge(other.readiness);
        self.tls = self.tls.or(other.tls);
        self.browser_origins.extend(other.browser_origins);
        self
    }

    /// Serves on `listener` until `shutdown` fires, then reports NOT_SERVING,
    /// stops accepting, lets calls in flight finish for up to `grace`, and
    /// waits up to `grace` again for the background tasks to stop.
    pub async fn serve(
        self,
        listener: BoundListener,
        auth: AuthLayer,
        shutdown: Shutdown,
        grace: Duration,
    ) -> Result<(), ServerError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // Liveness under "", readiness under each service's name, checked
        // once before the first call is accepted.
        let (health, background) = self
            .readiness
            .report(
                health_reporter,
                self.service_names.clone(),
                shutdown.clone(),
            )
            .await;

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // v1alpha too: grpcio-reflection (Python) and older tools ask only it.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let mut routes = Routes::default()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            // Which key is calling, with what scopes (the console asks once).
            .add_service(crate::caller::CallerApi::server());
        for add in self.add_routes {
            routes = add(routes);
        }

        let stop_accepting = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                health.stop().await;
                tracing::info!("grpc server stopping: no new calls, draining calls in flight");
            }
        };

        tracing::info!(address = %listener.local_addr, services = ?self.service_names, tls = self.tls.is_some(), "grpc server listening");
        let in_flight = InFlight::default();
        let router = tonic::transport::Server::builder()
            // gRPC-web arrives over HTTP/1.1 too.
            .accept_http1(true)
            .trace_fn(call_span)
            // CORS first: a preflight is answered before auth (it carries no key).
            .layer(cors_layer(&self.browser_origins))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(in_flight.clone())
            .layer(auth)
            // Undecodable requests answer INVALID_ARGUMENT, not tonic's INTERNAL.
            .layer(DecodeErrorsLayer)
            .add_routes(routes);
        let server: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>> =
            match self.tls {
                Some(acceptor) => Box::pin(router.serve_with_incoming_shutdown(
                    crate::tls::incoming(listener.listener, acceptor),
                    stop_accepting,
                )),
                None => Box::pin(router.serve_with_incoming_shutdown(
                    without_nagle(listener.listener),
                    stop_accepting,
                )),
            };

        // Stop once the calls in flight are done (idle client connections may
        // stay open forever, so waiting for them is not an option), or when the
        // grace period runs out.
        let drained = async {
            shutdown.wait().await;
            if !drain_within(grace, in_flight.wait_idle()).await {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    calls = in_flight.count(),
                    "calls still running after the grace period; stopping anyway"
                );
            }
        };
        tokio::select! {
            result = server => result?,
            () = drained => {}
        }
        // Then the consumers, relays and schedulers, which stop on the same
        // signal: a message or round in hand is finished, not cut.
        background.wait(grace).await;
        tracing::info!("grpc server stopped");
        Ok(())
    }
}

impl GrpcServer {
    /// Serves on a free loopback port in the background until `shutdown`,
    /// with `auth` (tests and tools pass [`AuthLayer::disabled`]); returns the
    /// bound address. Every crate's tests serve through this one function.
    pub async fn spawn_on_loopback(
        self,
        auth: AuthLayer,
        shutdown: &Shutdown,
    ) -> Result<SocketAddr, ServerError> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr;
        let serving = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = self
                .serve(listener, auth, serving, Duration::from_secs(1))
                .await
            {
                tracing::error!(%error, "a loopback gRPC server stopped");
            }
        });
        Ok(address)
    }
}

/// The CORS policy of browser calls: `origins` may call every method with
/// the headers gRPC-web and the API key need, and read the status trailers
/// the gRPC-web response carries in headers. No origin: no CORS headers at
/// all (same-origin pages and non-browser clients are unaffected).
pub fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use http::header::{HeaderName, HeaderValue};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        // Config validation admits only header-safe origins.
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            header("x-api-key"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("traceparent"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// One span per call, continuing the caller's W3C trace context.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let span =
        tracing::info_span!("grpc.call", otel.name = %request.uri().path(), rpc.system = "grpc");
    let _ = span.set_parent(extract_from_headers(request.headers()));
    span
}
