//! Typed, layered configuration: defaults → TOML file → `TALLY_…` environment.
//!
//! Nested keys use a double underscore in the environment:
//! `TALLY_GRPC__LISTEN_ADDR=0.0.0.0:50051`, `TALLY_BUS__BACKEND=pubsub`.
//! The standard variables `DATABASE_URL`, `PUBSUB_EMULATOR_HOST` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` are honoured too, and win over the file.
//! [`Config::load`] validates everything before a service starts, so a typo
//! fails at boot with the key's name instead of at the first request.
//!
//! Only variables of a section (`TALLY_<SECTION>__…`) are configuration: a
//! `TALLY_BIN` a user's script sets is none of ours and is ignored, and
//! [`Config::load_sections`] reads only the sections a command uses, so an
//! unknown key elsewhere does not stop it. [`ignored_variables`] names the
//! `TALLY_<X>__…` variables whose section does not exist (likely typos).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod audit;
mod connectors;
mod export;
mod invoicing;
mod payments;
mod peers;
mod rating;

pub use audit::AuditConfig;
pub use connectors::ConnectorsConfig;
pub use export::ExportConfig;
pub use invoicing::InvoicingConfig;
pub use payments::PaymentsConfig;
pub use peers::PeersConfig;
pub use rating::RatingConfig;

/// Everything a Tally process can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where and how the gRPC server listens.
    pub grpc: GrpcConfig,
    /// The PostgreSQL connection.
    pub database: DatabaseConfig,
    /// The message bus backend and its names.
    pub bus: BusConfig,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// API-key authentication of gRPC calls.
    pub auth: AuthConfig,
    /// Which clock the process runs on.
    pub clock: ClockConfig,
    /// How long a stopping process waits for in-flight work.
    pub shutdown: ShutdownConfig,
    /// The audit log: publishing chain heads outside the database.
    pub audit: AuditConfig,
    /// Usage intake: validation limits, batch sizes, the Pub/Sub intake.
    pub ingest: IngestConfig,
    /// Rating: usage consumption.
    pub rating: RatingConfig,
    /// Where services reach each other over gRPC (separate processes).
    pub peers: PeersConfig,
    /// Invoicing: bill runs, grace periods, backdating.
    pub invoicing: InvoicingConfig,
    /// Payments: Stripe, webhooks, dunning, reconciliation.
    pub payments: PaymentsConfig,
    /// Connectors: forwarding usage to Orb.
    pub connectors: ConnectorsConfig,
    /// Export: Tally's facts into BigQuery (off unless `export.project_id` is set).
    pub export: ExportConfig,
}

/// The gRPC server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// PEM certificate chain (leaf first): with `tls_key_file`, the server
    /// speaks TLS only. Read again when the file changes (no restart).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert_file`. Never logged.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Origins (`https://console.example.com`, scheme, host and port only)
    /// whose pages may call the services from a browser (gRPC-web, the
    /// console): the CORS policy. Empty (the default): only pages served from
    /// the services' own origin. In the environment:
    /// `TALLY_GRPC__CORS_ALLOWED_ORIGINS='["https://a.example","https://b.example"]'`.
    pub cors_allowed_origins: Vec<String>,
}

impl GrpcConfig {
    /// The certificate and key files when TLS is on.
    pub fn tls(&self) -> Option<crate::tls::ServerTlsFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(crate::tls::ServerTlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 16 * 1024 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// The PostgreSQL connection.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` URL; also read from `DATABASE_URL`. Never logged.
    pub url: Option<String>,
    /// Size of the connection pool.
    pub max_connections: Option<u32>,
}

impl DatabaseConfig {
    /// Pool size, defaulting to 10.
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(10)
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DatabaseConfig")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Which bus implementation carries messages between services.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BusBackend {
    /// Queues inside the process: `tally dev` and unit tests.
    #[default]
    InProcess,
    /// Google Cloud Pub/Sub (or its emulator).
    Pubsub,
}

/// The message bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `in_process` or `pubsub`.
    pub backend: BusBackend,
    /// Google Cloud project that holds the topics (required for `pubsub`).
    pub project_id: Option<String>,
    /// `host:port` of a Pub/Sub emulator; also read from `PUBSUB_EMULATOR_HOST`.
    pub emulator_host: Option<String>,
    /// Deliveries of one message before it is moved to the dead-letter topic (5–100).
    pub max_delivery_attempts: u32,
    /// Prefix added to every topic and subscription name (isolates environments).
    pub name_prefix: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: BusBackend::InProcess,
            project_id: None,
            emulator_host: None,
            max_delivery_attempts: 5,
            name_prefix: String::new(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info,tally=debug` (`RUST_LOG` wins when set).
    pub log_filter: String,
    /// OTLP gRPC endpoint; also read from `OTEL_EXPORTER_OTLP_ENDPOINT`. Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Seconds between metric exports.
    pub metrics_interval_seconds: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            metrics_interval_seconds: 30,
        }
    }
}

/// API-key authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// When false, every call is allowed (only for local experiments; refused with the pubsub backend).
    pub enabled: bool,
    /// Seconds between reloads of the key table (bounds how long a revoked key keeps working).
    pub refresh_interval_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_interval_seconds: 10,
        }
    }
}

/// Which clock the process runs on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// The wall clock (production).
    #[default]
    System,
    /// A clock moved by `tally.clock.v1.ClockService` (dev and tests).
    Manual,
}

/// Which clock the process runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// `system` or `manual`.
    pub mode: ClockMode,
    /// RFC 3339 start instant of a manual clock (default: now).
    pub start: Option<chrono::DateTime<chrono::Utc>>,
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Seconds to let in-flight calls and messages finish after SIGTERM.
    pub grace_period_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period_seconds: 20,
        }
    }
}

/// The ingest service: validation rules and intake limits (documented in
/// `proto/tally/events/v1/events.proto` and `docs/operations.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most events in one `IngestBatch` / `IngestStream` batch.
    pub max_batch_events: usize,
    /// Events older than this many days are rejected (`before_backfill_window`)
    /// unless a backfill is open for their customer and time.
    pub backfill_window_days: u32,
    /// How far ahead of the service clock a timestamp may be, in seconds.
    pub max_future_skew_seconds: u32,
    /// Most properties on one event.
    pub max_properties: usize,
    /// Longest property name, in bytes.
    pub max_property_key_bytes: usize,
    /// Longest property value, in bytes.
    pub max_property_value_bytes: usize,
    /// Largest event, in bytes of its protobuf encoding.
    pub max_event_bytes: usize,
    /// Batches a client may have in flight on one `IngestStream`.
    pub stream_window: u32,
    /// Consume the `usage-events` subscription (Pub/Sub intake).
    pub pubsub_intake: bool,
    /// Most bus messages written to the log in one transaction by the Pub/Sub intake (1–100000).
    pub pubsub_batch_messages: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 10_000,
            backfill_window_days: 35,
            max_future_skew_seconds: 300,
            max_properties: 50,
            max_property_key_bytes: 64,
            max_property_value_bytes: 512,
            max_event_bytes: 16 * 1024,
            stream_window: 8,
            pubsub_intake: true,
            pubsub_batch_messages: 500,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read or parsed. (Not a `#[source]`:
    /// the message already holds figment's, which `{:#}` would print twice.)
    #[error("configuration could not be read: {0}")]
    Parse(Box<figment::Error>),
    /// A value was read but breaks a rule.
    #[error("configuration key `{key}` is invalid: {reason}")]
    Invalid {
        /// The dotted key, e.g. `bus.project_id`.
        key: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(error: Box<figment::Error>) -> Self {
        Self::Parse(error)
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then the environment (every
    /// section's `TALLY_<SECTION>__…` variables), and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_sections(file, &section_names())
    }

    /// Like [`Config::load`], but reads from the environment only the
    /// variables of `sections` (e.g. `["database"]` for `tally migrate`):
    /// the others keep their defaults, so an unknown key in a section the
    /// command does not use cannot stop it.
    pub fn load_sections<S: AsRef<str>>(
        file: Option<&Path>,
        sections: &[S],
    ) -> Result<Self, ConfigError> {
        let sections: Vec<String> = sections
            .iter()
            .map(|section| section.as_ref().to_ascii_lowercase())
            .collect();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(
                Env::prefixed("TALLY_")
                    .ignore(COMMAND_LINE_VARIABLES)
                    .filter(move |key| {
                        section_of(key.as_str()).is_some_and(|section| sections.contains(&section))
                    })
                    .split("__"),
            )
            .merge(standard_variables())
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.database.max_connections == Some(0) {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if !(5..=100).contains(&self.bus.max_delivery_attempts) {
            return Err(invalid(
                "bus.max_delivery_attempts",
                "must be between 5 and 100 (the range Pub/Sub dead-letter policies accept)",
            ));
        }
        if self.bus.backend == BusBackend::Pubsub {
            if self.bus.project_id.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "bus.project_id",
                    "is required with the pubsub backend (set TALLY_BUS__PROJECT_ID)",
                ));
            }
            if !self.auth.enabled {
                return Err(invalid(
                    "auth.enabled",
                    "cannot be false with the pubsub backend: clusters always authenticate",
                ));
            }
        }
        if self.grpc.max_message_bytes < 1024 {
            return Err(invalid("grpc.max_message_bytes", "must be at least 1024"));
        }
        match (&self.grpc.tls_cert_file, &self.grpc.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "grpc.tls_key_file",
                    "is required when grpc.tls_cert_file is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "grpc.tls_cert_file",
                    "is required when grpc.tls_key_file is set",
                ));
            }
            _ => {}
        }
        for origin in &self.grpc.cors_allowed_origins {
            if !is_origin(origin) {
                return Err(ConfigError::Invalid {
                    key: "grpc.cors_allowed_origins",
                    reason: format!(
                        "`{origin}` is not an origin: write scheme://host[:port], nothing after it (e.g. https://console.example.com)"
                    ),
                });
            }
        }
        if self.telemetry.metrics_interval_seconds == 0 {
            return Err(invalid(
                "telemetry.metrics_interval_seconds",
                "must be at least 1",
            ));
        }
        let ingest = &self.ingest;
        if !(1..=100_000).contains(&ingest.max_batch_events) {
            return Err(invalid(
                "ingest.max_batch_events",
                "must be between 1 and 100000",
            ));
        }
        if ingest.backfill_window_days == 0 {
            return Err(invalid("ingest.backfill_window_days", "must be at least 1"));
        }
        if !(1..=1024).contains(&ingest.stream_window) {
            return Err(invalid(
                "ingest.stream_window",
                "must be between 1 and 1024",
            ));
        }
        // A batch takes one block of 100,000 sequence numbers (see the ingest migration).
        if !(1..=100_000).contains(&ingest.pubsub_batch_messages) {
            return Err(invalid(
                "ingest.pubsub_batch_messages",
                "must be between 1 and 100000",
            ));
        }
        self.rating.validate()?;
        self.peers.validate()?;
        self.invoicing.validate()?;
        self.payments.validate()?;
        self.connectors.validate()?;
        self.export.validate()?;
        if self.auth.refresh_interval_seconds == 0 {
            return Err(invalid(
                "auth.refresh_interval_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Whether `text` is a browser origin: `http(s)://host[:port]`, no path,
/// no trailing slash, nothing a header value could not carry.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-.:[]".contains(character))
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

/// `TALLY_…` variables that belong to command-line options, not to this
/// config (`TALLY_CONFIG`, `TALLY_API_KEY`, `TALLY_DEV_DIR`, and
/// `TALLY_ADDRESS`, the admin commands' `--address`: every command loads the
/// config first, so without it here `TALLY_ADDRESS=… tally invoices list`
/// was refused as an unknown key).
const COMMAND_LINE_VARIABLES: &[&str] = &["config", "api_key", "dev_dir", "address"];

/// The section a variable (without `TALLY_`) belongs to, lower case:
/// `GRPC__LISTEN_ADDR` is in `grpc`; `BIN` is in none.
fn section_of(key: &str) -> Option<String> {
    key.split_once("__")
        .map(|(section, _)| section.to_ascii_lowercase())
}

/// The config's sections (`grpc`, `database`, …), read from its defaults.
pub fn section_names() -> Vec<String> {
    figment::Provider::data(&Serialized::defaults(Config::default()))
        .ok()
        .and_then(|mut data| data.remove(&figment::Profile::Default))
        .map(|dict| dict.into_keys().collect())
        .unwrap_or_default()
}

/// `TALLY_<X>__…` variables set in the environment whose section `x` does
/// not exist: ignored by [`Config::load`], but worth a warning (a typo such
/// as `TALLY_INVOICNG__GRACE_PERIOD_HOURS`).
pub fn ignored_variables() -> Vec<String> {
    let sections = section_names();
    let mut ignored: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.strip_prefix("TALLY_")
                .and_then(section_of)
                .is_some_and(|section| !sections.contains(&section))
        })
        .collect();
    ignored.sort();
    ignored
}

/// The ecosystem's standard variables, mapped onto our keys.
fn standard_variables() -> Figment {
    let mut figment = Figment::new();
    let pairs = [
        ("DATABASE_URL", "database.url"),
        ("PUBSUB_EMULATOR_HOST", "bus.emulator_host"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ];
    for (variable, key) in pairs {
        if let Ok(value) = std::env::var(variable)
            && !value.is_empty()
        {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    figment
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its large error type
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn command_line_variables_are_not_config_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TALLY_CONFIG", "/nonexistent.toml");
            jail.set_env("TALLY_API_KEY", "secret");
            jail.set_env("TALLY_DEV_DIR", "/tmp/dev");
            jail.set_env("TALLY_ADDRESS", "http://127.0.0.1:50051");
            jail.set_env("TALLY_INGEST__MAX_BATCH_EVENTS", "500");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.ingest.max_batch_events, 500);
            Ok(())
        });
    }

    #[test]
    fn only_the_loaded_sections_refuse_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            // Not in any section: someone else's variable.
            jail.set_env("TALLY_BIN", "/usr/local/bin/tally");
            jail.set_env("TALLY_NO_SUCH__KEY", "1");
            Config::load(None).expect("loads");
            assert_eq!(ignored_variables(), vec!["TALLY_NO_SUCH__KEY".to_owned()]);
            jail.set_env("TALLY_GRPC__LISTEN_ADR", "x");
            jail.set_env("TALLY_DATABASE__MAX_CONNECTIONS", "3");
            let config = Config::load_sections(None, &["database"]).expect("grpc is not loaded");
            assert_eq!(config.database.max_connections, Some(3));
            let error = Config::load(None).unwrap_err();
            let chain = format!("{:#}", anyhow::Error::from(error));
            assert!(chain.contains("listen_adr"), "{chain}");
            assert_eq!(chain.matches("unknown field").count(), 1, "{chain}");
            Ok(())
        });
    }

    #[test]
    fn cors_origins_come_from_the_environment_and_must_be_origins() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TALLY_GRPC__CORS_ALLOWED_ORIGINS",
                r#"["https://console.example.com", "http://127.0.0.1:50053"]"#,
            );
            let config = Config::load(None).expect("loads");
            assert_eq!(
                config.grpc.cors_allowed_origins,
                ["https://console.example.com", "http://127.0.0.1:50053"]
            );
            jail.set_env(
                "TALLY_GRPC__CORS_ALLOWED_ORIGINS",
                r#"["https://console.example.com/"]"#,
            );
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("grpc.cors_allowed_origins"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_layering() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tally.toml",
                r#"
                [grpc]
                listen_addr = "127.0.0.1:6000"
                [bus]
                max_delivery_attempts = 7
                "#,
            )?;
            jail.set_env("TALLY_BUS__MAX_DELIVERY_ATTEMPTS", "9");
            jail.set_env("DATABASE_URL", "postgres://localhost/tally");
            let config = Config::load(Some(Path::new("tally.toml"))).unwrap();
            assert_eq!(config.grpc.listen_addr.port(), 6000);
            assert_eq!(config.bus.max_delivery_attempts, 9);
            assert_eq!(
                config.database.url.as_deref(),
                Some("postgres://localhost/tally")
            );
            assert!(
                !format!("{config:?}").contains("localhost/tally"),
                "secrets are never printed"
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TALLY_BUS__BACKEND", "pubsub");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("bus.project_id"), "{error}");
            jail.set_env("TALLY_BUS__PROJECT_ID", "p");
            jail.set_env("TALLY_BUS__MAX_DELIVERY_ATTEMPTS", "2");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("bus.max_delivery_attempts"), "{error}");
            jail.set_env("TALLY_GRPC__LISTEN_ADR", "x");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.contains("listen_adr"),
                "unknown keys are refused: {error}"
            );
            Ok(())
        });
    }
}
