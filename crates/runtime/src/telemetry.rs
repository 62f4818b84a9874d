//! Logs, traces and metrics.
//!
//! Logs go to stdout (pretty or JSON). When an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), spans and metrics are exported over OTLP
//! gRPC as well. The W3C trace-context propagator is always installed, so trace
//! context flows through gRPC metadata ([`inject_into_metadata`], the server's
//! per-request span) and bus attributes (the bus crate) even without export.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes and stops exporters when the process ends. Keep it alive in `main`.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Flushes pending spans and metrics.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "trace exporter did not shut down cleanly");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "metric exporter did not shut down cleanly");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter directive is malformed.
    #[error("telemetry.log_filter is invalid: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// An OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's error.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber, propagator and (optionally) OTLP exporters.
///
/// Must run inside a Tokio runtime when an OTLP endpoint is set.
pub fn init(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    install_propagator();

    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive)?,
        _ => EnvFilter::try_new(&config.log_filter)?,
    };
    let log_layer = match config.log_format {
        // Colours only for a person at a terminal: never into a file or a
        // pipe, nor with NO_COLOR set (no-color.org).
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
            )
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };

    let mut guard = TelemetryGuard::default();
    let trace_layer = match &config.otlp_endpoint {
        Some(endpoint) => {
            let resource = Resource::builder()
                .with_service_name(service_name.to_owned())
                .build();
            let (tracer_provider, meter_provider) = build_exporters(endpoint, resource, config)?;
            let tracer = tracer_provider.tracer(service_name.to_owned());
            opentelemetry::global::set_tracer_provider(tracer_provider.clone());
            opentelemetry::global::set_meter_provider(meter_provider.clone());
            guard.tracer_provider = Some(tracer_provider);
            guard.meter_provider = Some(meter_provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(log_layer)
        .with(trace_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(guard)
}

fn build_exporters(
    endpoint: &str,
    resource: Resource,
    config: &TelemetryConfig,
) -> Result<(SdkTracerProvider, SdkMeterProvider), TelemetryError> {
    let exporter_error = |error: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        message: error.to_string(),
    };
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(exporter_error)?;
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(exporter_error)?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource.clone())
        .build();
    let reader = PeriodicReader::builder(metric_exporter)
        .with_interval(Duration::from_secs(config.metrics_interval_seconds))
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build();
    Ok((tracer_provider, meter_provider))
}

/// Installs the W3C trace-context propagator (idempotent; tests call it directly).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The meter every Tally metric is registered on (a no-op until OTLP is configured).
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter("tally")
}

/// Writes the current span's trace context into a string map (bus attributes).
pub fn inject_current_context(carrier: &mut HashMap<String, String>) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, carrier);
    });
}

/// Reads a trace context from a string map (bus attributes).
pub fn extract_context(carrier: &HashMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier))
}

/// Makes `span` a child of the trace context found in `carrier`, if any.
pub fn set_parent_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    // An error only means the span is disabled (filtered out): nothing to link.
    let _ = span.set_parent(extract_context(carrier));
}

/// A tonic interceptor that adds the current trace context to outgoing calls.
pub fn inject_into_metadata(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let mut carrier = HashMap::new();
    inject_current_context(&mut carrier);
    for (key, value) in carrier {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    Ok(request)
}

/// The trace context carried by HTTP/2 headers of an incoming gRPC call.
pub fn extract_from_headers(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderCarrier(headers))
    })
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn trace_context_round_trips_through_a_string_map() {
        install_propagator();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let context = extract_context(&carrier);
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HashMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut out);
        });
        assert_eq!(
            out.get("traceparent").map(String::as_str),
            Some(traceparent)
        );
    }
}
