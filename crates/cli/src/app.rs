//! The composition root shared by `tally serve` and `tally dev`: builds the
//! clock, pool, key registry and gRPC server from the config and serves until
//! shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use sqlx::PgPool;
use tally_bus::{InProcessBus, PubSubBus, SharedBus};
use tally_runtime::auth::{ApiKeyRegistry, AuthLayer};
use tally_runtime::clock_service::ClockApi;
use tally_runtime::config::{BusBackend, ClockMode};
use tally_runtime::ids::{ClockIds, SharedIdGenerator};
use tally_runtime::peer::Peer;
use tally_runtime::readiness::{self, Readiness};
use tally_runtime::server::{self, GrpcServer};
use tally_runtime::{Config, ManualClock, SharedClock, Shutdown, SystemClock};

/// The services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    /// Usage intake and the event log.
    Ingest,
    /// Catalog and real-time pricing.
    Rating,
    /// Customers, subscriptions, invoices, credits.
    Invoicing,
    /// Stripe collection and reconciliation.
    Payments,
    /// The general ledger, revenue recognition and analytics.
    Finance,
    /// Tally beside external billing systems (usage forwarded to Orb).
    Connectors,
    /// Tally's facts into BigQuery, exactly once (off unless `export.project_id` is set).
    Export,
}

impl ServiceKind {
    /// Every service, in flow order.
    pub const ALL: [ServiceKind; 7] = [
        ServiceKind::Ingest,
        ServiceKind::Rating,
        ServiceKind::Invoicing,
        ServiceKind::Payments,
        ServiceKind::Finance,
        ServiceKind::Connectors,
        ServiceKind::Export,
    ];

    /// The name `tally serve` takes.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Ingest => "ingest",
            ServiceKind::Rating => "rating",
            ServiceKind::Invoicing => "invoicing",
            ServiceKind::Payments => "payments",
            ServiceKind::Finance => "finance",
            ServiceKind::Connectors => "connectors",
            ServiceKind::Export => "export",
        }
    }

    /// The services this one calls, as their `[peers]` keys.
    pub fn peers(self) -> &'static [&'static str] {
        match self {
            ServiceKind::Ingest => &[],
            ServiceKind::Rating => &["peers.ingest_url"],
            ServiceKind::Invoicing => &["peers.rating_url"],
            ServiceKind::Payments => &["peers.invoicing_url"],
            ServiceKind::Finance | ServiceKind::Connectors | ServiceKind::Export => &[],
        }
    }

    /// The name reported to telemetry.
    pub fn telemetry_name(self) -> &'static str {
        match self {
            ServiceKind::Ingest => tally_ingest::SERVICE_NAME,
            ServiceKind::Rating => tally_rating::SERVICE_NAME,
            ServiceKind::Invoicing => tally_invoicing::SERVICE_NAME,
            ServiceKind::Payments => tally_payments::SERVICE_NAME,
            ServiceKind::Finance => tally_finance::SERVICE_NAME,
            ServiceKind::Connectors => tally_connectors::SERVICE_NAME,
            ServiceKind::Export => tally_export::SERVICE_NAME,
        }
    }

    /// The audit chain this service writes (`None`: it keeps none yet).
    pub fn audit_chain(self) -> Option<tally_audit::Schema> {
        match self {
            ServiceKind::Ingest => Some(tally_audit::Schema::Ingest),
            ServiceKind::Rating => Some(tally_audit::Schema::Rating),
            ServiceKind::Invoicing => Some(tally_audit::Schema::Invoicing),
            ServiceKind::Payments => Some(tally_audit::Schema::Payments),
            ServiceKind::Finance => Some(tally_audit::Schema::Finance),
            ServiceKind::Connectors => Some(tally_audit::Schema::Connectors),
            ServiceKind::Export => None,
        }
    }

    /// Builds the service, starts its background loops (relays, consumers;
    /// they stop on `shutdown`) and returns its gRPC surface.
    pub async fn start(self, handles: &Handles, shutdown: &Shutdown) -> anyhow::Result<GrpcServer> {
        let max_message_bytes = handles.config.grpc.max_message_bytes;
        Ok(match self {
            ServiceKind::Ingest => {
                let ingest = tally_ingest::Ingest::start(tally_ingest::IngestDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    ids: Arc::clone(&handles.ids),
                    config: handles.config.ingest.clone(),
                    max_delivery_attempts: handles.config.bus.max_delivery_attempts,
                })
                .await
                .context("starting ingest")?;
                let tasks = ingest.spawn_background(shutdown);
                ingest
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
            ServiceKind::Rating => {
                let deps = tally_rating::RatingDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    ids: Arc::clone(&handles.ids),
                    ingest: handles.peer(
                        "peers.ingest_url",
                        handles.config.peers.ingest_url.as_deref(),
                    )?,
                };
                let rating = tally_rating::Rating::start_with(deps, handles.config.rating.clone())
                    .await
                    .context("starting rating")?;
                let tasks = rating.spawn_background(shutdown);
                rating
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
            ServiceKind::Invoicing => {
                let invoicing = tally_invoicing::Invoicing::start(tally_invoicing::InvoicingDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    ids: Arc::clone(&handles.ids),
                    config: handles.config.invoicing.clone(),
                    rating: handles.peer(
                        "peers.rating_url",
                        handles.config.peers.rating_url.as_deref(),
                    )?,
                    max_delivery_attempts: handles.config.bus.max_delivery_attempts,
                })
                .await
                .context("starting invoicing")?;
                let tasks = invoicing.spawn_background(shutdown);
                invoicing
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
            ServiceKind::Payments => {
                let payments = tally_payments::Payments::start(tally_payments::PaymentsDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    ids: Arc::clone(&handles.ids),
                    config: handles.config.payments.clone(),
                    secrets: tally_payments::StripeSecrets::from_env(),
                    invoicing: handles.peer(
                        "peers.invoicing_url",
                        handles.config.peers.invoicing_url.as_deref(),
                    )?,
                })
                .await
                .context("starting payments")?;
                let listener = match handles.webhook_listener.take() {
                    Some(listener) => listener,
                    None => {
                        bind_webhooks(
                            handles.config.payments.webhook_listen_addr,
                            WEBHOOK_ADDRESS_HINT,
                        )
                        .await?
                    }
                };
                payments
                    .spawn_webhook_listener_on(listener, shutdown)
                    .context("serving Stripe webhooks")?;
                let tasks = payments.spawn_background(shutdown);
                payments
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
            ServiceKind::Finance => {
                let finance = tally_finance::Finance::start(tally_finance::FinanceDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    ids: Arc::clone(&handles.ids),
                    max_delivery_attempts: handles.config.bus.max_delivery_attempts,
                })
                .await
                .context("starting finance")?;
                let tasks = finance.spawn_background(shutdown);
                finance
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
            ServiceKind::Connectors => {
                start_connectors(handles, shutdown, max_message_bytes).await?
            }
            ServiceKind::Export => {
                // Without `export.project_id` only `ExportService` serves
                // (answering `enabled: false`); nothing is consumed.
                let export = tally_export::Export::start(tally_export::ExportDeps {
                    pool: handles.pool.clone(),
                    bus: Arc::clone(&handles.bus),
                    clock: Arc::clone(&handles.clock),
                    config: handles.config.export.clone(),
                    max_delivery_attempts: handles.config.bus.max_delivery_attempts,
                })
                .await
                .context("starting export")?;
                let tasks = export.spawn_background(shutdown);
                export
                    .grpc_server(max_message_bytes)
                    .with_background_tasks(tasks)
            }
        })
    }
}

/// Starts connectors, and its Orb webhook listener when
/// `connectors.orb_webhook_listen_addr` is set.
async fn start_connectors(
    handles: &Handles,
    shutdown: &Shutdown,
    max_message_bytes: usize,
) -> anyhow::Result<GrpcServer> {
    let connectors = tally_connectors::Connectors::start(tally_connectors::ConnectorsDeps {
        pool: handles.pool.clone(),
        bus: Arc::clone(&handles.bus),
        clock: Arc::clone(&handles.clock),
        config: handles.config.connectors.clone(),
        orb_api_key: tally_connectors::OrbApiKey::from_env(),
        max_delivery_attempts: handles.config.bus.max_delivery_attempts,
        // Optional: only migrations (`tally migrate shadow|compare|…`) call invoicing.
        invoicing: match handles.config.peers.invoicing_url.as_deref() {
            Some(url) => Some(handles.peer("peers.invoicing_url", Some(url))?),
            None => None,
        },
    })
    .await
    .context("starting connectors")?;
    let mut tasks = connectors.spawn_background(shutdown);
    if let Some(address) = handles.config.connectors.orb_webhook_listen_addr {
        let listener = bind_webhooks(
            address,
            "pick another with connectors.orb_webhook_listen_addr \
             (TALLY_CONNECTORS__ORB_WEBHOOK_LISTEN_ADDR)",
        )
        .await?;
        let (_, task) = connectors
            .spawn_webhook_listener_on(listener, shutdown)
            .context("serving the Orb webhook endpoint")?;
        tasks.push(task);
    }
    Ok(connectors
        .grpc_server(max_message_bytes)
        .with_background_tasks(tasks))
}

/// How `tally serve` says to move the webhook endpoint to another port.
const WEBHOOK_ADDRESS_HINT: &str =
    "pick another with payments.webhook_listen_addr (TALLY_PAYMENTS__WEBHOOK_LISTEN_ADDR)";

/// Binds the Stripe webhook endpoint's address; `hint` says how to pick
/// another when it is taken.
pub async fn bind_webhooks(
    address: SocketAddr,
    hint: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen for Stripe webhooks on {address}: {error} \
                 (is another process using the port? {hint})"
            )
        })
}

/// A listener bound before anything starts (so a taken port stops the
/// process before PostgreSQL or migrations), taken by the one service that
/// serves on it.
#[derive(Debug, Clone, Default)]
pub struct ReservedListener(Arc<Mutex<Option<tokio::net::TcpListener>>>);

impl ReservedListener {
    /// Holds `listener` until [`ReservedListener::take`].
    pub fn new(listener: tokio::net::TcpListener) -> Self {
        Self(Arc::new(Mutex::new(Some(listener))))
    }

    /// The listener, once; `None` when none was reserved.
    pub fn take(&self) -> Option<tokio::net::TcpListener> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What every service is built from: config, database, bus, clock and ids.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The validated config.
    pub config: Config,
    /// The PostgreSQL pool.
    pub pool: PgPool,
    /// The bus.
    pub bus: SharedBus,
    /// The clock.
    pub clock: SharedClock,
    /// Id minting, stamped from the clock.
    pub ids: SharedIdGenerator,
    /// The API key this process sends to its peers (`TALLY_API_KEY`; `tally
    /// dev` creates one).
    pub peer_api_key: Option<String>,
    /// The Stripe webhook endpoint's listener, when bound before start
    /// (otherwise payments binds `payments.webhook_listen_addr` itself).
    pub webhook_listener: ReservedListener,
}

impl Handles {
    /// A connection to the peer at `url` (a `[peers]` key, named by `key` in errors).
    pub fn peer(&self, key: &str, url: Option<&str>) -> anyhow::Result<Peer> {
        let url = url.with_context(|| {
            format!(
                "{key} is required when services run as separate processes (set TALLY_{})",
                key.to_uppercase().replace('.', "__")
            )
        })?;
        Ok(Peer::lazy_with_ca(
            url,
            self.peer_api_key.as_deref(),
            self.config.peers.ca_file.as_deref(),
        )?)
    }
}

/// The bus the config asks for.
pub async fn connect_bus(config: &Config) -> anyhow::Result<SharedBus> {
    Ok(match config.bus.backend {
        BusBackend::InProcess => Arc::new(InProcessBus::new()),
        BusBackend::Pubsub => {
            let project = config.bus.project_id.as_deref().unwrap_or_default();
            Arc::new(
                PubSubBus::connect(
                    project,
                    config.bus.emulator_host.as_deref(),
                    &config.bus.name_prefix,
                )
                .await
                .with_context(|| format!("connecting to Pub/Sub project {project:?}"))?,
            )
        }
    })
}

/// The clock the config asks for.
pub fn build_clock(config: &Config) -> SharedClock {
    match config.clock.mode {
        ClockMode::System => Arc::new(SystemClock),
        ClockMode::Manual => Arc::new(ManualClock::new(
            config.clock.start.unwrap_or_else(chrono::Utc::now),
        )),
    }
}

/// `tally serve <service>`.
pub async fn serve(kind: ServiceKind, config: Config) -> anyhow::Result<()> {
    let _telemetry = tally_runtime::telemetry::init(kind.telemetry_name(), &config.telemetry)?;
    let peer_api_key = std::env::var("TALLY_API_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    require_peer_key(kind, &config, peer_api_key.as_deref())?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();
    // Bind first: a taken port should fail before anything is started.
    let listener = server::bind(config.grpc.listen_addr).await?;
    let webhook_listener = if kind == ServiceKind::Payments {
        let address = config.payments.webhook_listen_addr;
        ReservedListener::new(bind_webhooks(address, WEBHOOK_ADDRESS_HINT).await?)
    } else {
        ReservedListener::default()
    };
    let pool = tally_runtime::db::connect(&config.database).await?;
    let clock = build_clock(&config);
    let handles = Handles {
        bus: connect_bus(&config).await?,
        ids: Arc::new(ClockIds::new(Arc::clone(&clock))),
        clock,
        pool,
        config,
        peer_api_key,
        webhook_listener,
    };
    let services =
        kind.start(&handles, &shutdown)
            .await?
            .merge(audit_server(&handles, &[kind], &shutdown));
    let clock_chain = kind.audit_chain().unwrap_or(tally_audit::Schema::Auth);
    run_server(
        services,
        listener,
        &handles,
        (clock_chain, kind.name()),
        shutdown,
    )
    .await
}

/// `AuditService` answering for the chains of `kinds` and `auth` (API keys,
/// which every service reads): one service's in a cluster, all in `tally dev`.
/// Its background task publishes those chains' heads as they move (an
/// `audit chain head` log line; docs/operations.md, "Audit log").
pub fn audit_server(handles: &Handles, kinds: &[ServiceKind], shutdown: &Shutdown) -> GrpcServer {
    let mut schemas = vec![tally_audit::Schema::Auth];
    schemas.extend(kinds.iter().filter_map(|kind| kind.audit_chain()));
    let publisher = tally_audit::HeadPublisher::new(
        handles.pool.clone(),
        Arc::clone(&handles.clock),
        &schemas,
        Duration::from_secs(handles.config.audit.head_publish_interval_seconds.max(1)),
        Arc::new(tally_audit::LogSink),
    );
    let task = tokio::spawn(publisher.run(shutdown.clone()));
    tally_audit::AuditApi::new(handles.pool.clone(), Arc::clone(&handles.clock), &schemas)
        .grpc_server(handles.config.grpc.max_message_bytes)
        .with_background_tasks(vec![task])
}

/// A service that calls peers needs a key to call them with: without one
/// every call would be refused, so it does not start (unless authentication
/// is off).
fn require_peer_key(kind: ServiceKind, config: &Config, key: Option<&str>) -> anyhow::Result<()> {
    if key.is_some() || !config.auth.enabled || kind.peers().is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "TALLY_API_KEY is not set, but {} calls its peers ({}) and every call between services \
         needs an API key: set TALLY_API_KEY to a key with the `read` and `write` scopes (the \
         Helm chart and docker-compose.yml generate and register one; otherwise \
         `tally keys create --name tally-peers --scope read,write`)",
        kind.name(),
        kind.peers().join(", ")
    )
}

/// Serves `services` plus the clock service, authenticated by the key table
/// in `pool`; health reports them ready only while `pool`'s database answers
/// at the migrated version and their background tasks run. The clock's moves
/// are audited in `clock_chain`'s chain as resource `clock` `<process>`.
pub async fn run_server(
    services: GrpcServer,
    listener: server::BoundListener,
    handles: &Handles,
    (clock_chain, process): (tally_audit::Schema, &str),
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Handles {
        config,
        pool,
        clock,
        ids,
        ..
    } = handles;
    let auth = if config.auth.enabled {
        let registry = Arc::new(ApiKeyRegistry::default());
        let count = registry.reload(pool).await.context("loading API keys")?;
        if count == 0 {
            tracing::warn!(
                "no API keys exist yet: every call will be refused; create one with `tally keys create`"
            );
        }
        registry.spawn_refresh(
            pool.clone(),
            Duration::from_secs(config.auth.refresh_interval_seconds),
            shutdown.clone(),
        );
        AuthLayer::new(registry)
    } else {
        tracing::warn!("authentication is disabled (auth.enabled = false): every call is allowed");
        AuthLayer::disabled()
    };
    let mut services = services
        .merge(
            ClockApi::new(Arc::clone(clock))
                .with_moves(Arc::new(tally_audit::ClockRecorder::new(
                    pool.clone(),
                    Arc::clone(ids),
                    clock_chain,
                    process,
                )))
                .grpc_server(),
        )
        .with_browser_origins(config.grpc.cors_allowed_origins.clone())
        .with_readiness(
            Readiness::default().with_database(pool.clone(), readiness::DEFAULT_DATABASE_TIMEOUT),
        );
    if let Some(files) = config.grpc.tls() {
        services = services.with_tls(tally_runtime::tls::acceptor(&files)?);
    }
    let grace = Duration::from_secs(config.shutdown.grace_period_seconds);
    services.serve(listener, auth, shutdown, grace).await?;
    Ok(())
}

/// `tally migrate`.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    tally_runtime::db::migrate(&pool).await?;
    // Rows an earlier release stored as protobuf become invoicing's model
    // (once; idempotent; see `tally_invoicing::upgrade`).
    let converted = tally_invoicing::upgrade::convert_stored_protobuf(&pool).await?;
    if !converted.is_empty() {
        eprintln!(
            "converted invoicing rows stored as protobuf: {} customers, {} credit notes, {} invoice lines",
            converted.customers, converted.credit_notes, converted.invoice_lines
        );
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await?;
    eprintln!("migrations up to date ({applied} applied)");
    Ok(())
}
