//! The export service: Tally's facts streamed into a BigQuery dataset
//! exactly once, minutes behind (see docs/architecture.md, "Export"; the
//! tables: docs/warehouse.md). It consumes the bus (`usage-accepted`,
//! `invoice-events`, `payment-events`, `subscription-events`), stages one row per fact
//! in its schema and appends the rows to one committed write stream per
//! table at explicit offsets. It never calls another Tally service.
//!
//! * [`tables`] — the warehouse's tables and views, declared once;
//! * [`staging`] — the consumers: bus facts → staged rows, once;
//! * [`exporter`] — staged rows → BigQuery, exactly once, per table;
//! * [`bigquery`] — the REST control plane and the Storage Write client;
//! * [`backfill`] — daily partitions rebuilt with deterministic load jobs;
//! * [`status`] — `ExportService`.
//!
//! Off unless `export.project_id` is set: then nothing is consumed and
//! `ExportService` answers `enabled: false`.

pub mod backfill;
pub mod bigquery;
mod error;
pub mod exporter;
mod metrics;
pub mod staging;
pub mod status;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tally_bus::consumer::{Consumer, MessageHandler};
use tally_bus::{BusError, SharedBus, SubscriptionConfig, topics};
use tally_proto::export::export_service_server::ExportServiceServer;
use tally_runtime::config::ExportConfig;
use tally_runtime::server::GrpcServer;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use bigquery::{Auth, BigQueryError, Target};
pub use error::ExportServiceError;
pub use exporter::{Round, TableExporter};
pub use staging::consumers::{
    InvoiceEventsHandler, PaymentEventsHandler, Stager, SubscriptionEventsHandler,
    UsageAcceptedHandler,
};
pub use status::api::ExportApi;

/// The name this service reports to telemetry.
pub const SERVICE_NAME: &str = "tally-export";

/// Export's subscription to `usage-accepted`: unordered (rows are facts;
/// the warehouse orders them by their own columns).
pub const USAGE_ACCEPTED_SUBSCRIPTION: &str = "export-usage-accepted";

/// Export's subscription to `invoice-events`: unordered too (every event is
/// its own row; the current state is the highest `version`).
pub const INVOICE_EVENTS_SUBSCRIPTION: &str = "export-invoice-events";

/// Export's subscription to `payment-events`: unordered (every outcome is its own row).
pub const PAYMENT_EVENTS_SUBSCRIPTION: &str = "export-payment-events";

/// Export's subscription to `subscription-events`: unordered (every version is
/// its own row; the current state is the highest `version`).
pub const SUBSCRIPTION_EVENTS_SUBSCRIPTION: &str = "export-subscription-events";

/// Longest wait between two tries of the start-up setup (dataset, tables).
const SETUP_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What export needs from the composition root.
#[derive(Debug, Clone)]
pub struct ExportDeps {
    /// The database (schema `export`).
    pub pool: PgPool,
    /// The bus (`usage-accepted`, `invoice-events`, `payment-events` and
    /// `subscription-events` in).
    pub bus: SharedBus,
    /// The service clock.
    pub clock: SharedClock,
    /// The `[export]` section.
    pub config: ExportConfig,
    /// Deliveries before a failing message is dead-lettered.
    pub max_delivery_attempts: u32,
}

/// Why export did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportStartError {
    /// The bus refused a topic or subscription.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A BigQuery client could not be built (credentials, endpoint).
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
}

/// A running export service.
#[derive(Debug, Clone)]
pub struct Export {
    deps: ExportDeps,
    warehouse: Option<Warehouse>,
}

/// The dataset and its clients (export on).
#[derive(Debug, Clone)]
pub struct Warehouse {
    /// Where.
    pub target: Target,
    /// Dataset, tables, views, queries.
    pub rest: bigquery::rest::Rest,
    /// Rows.
    pub writer: bigquery::write::Writer,
}

impl Warehouse {
    /// The clients of `target`.
    pub fn new(target: Target) -> Result<Self, BigQueryError> {
        let auth = Auth::new(target.anonymous)?;
        Ok(Self {
            rest: bigquery::rest::Rest::new(target.clone(), auth.clone())?,
            writer: bigquery::write::Writer::new(target.clone(), auth)?,
            target,
        })
    }

    /// Creates the dataset, the tables (or adds their new columns) and the views.
    pub async fn set_up(&self) -> Result<(), BigQueryError> {
        self.rest.ensure_dataset().await?;
        for table in tables::ALL {
            let change = self.rest.ensure_table(&table).await?;
            if change != bigquery::rest::TableChange::None {
                tracing::info!(table = table.name, ?change, "warehouse table set up");
            }
        }
        for view in tables::VIEWS {
            self.rest.ensure_view(&view).await?;
        }
        Ok(())
    }
}

impl Export {
    /// Builds export; when configured, ensures the subscriptions it reads.
    pub async fn start(deps: ExportDeps) -> Result<Self, ExportStartError> {
        let warehouse = match Target::from_config(&deps.config) {
            Some(target) => Some(Warehouse::new(target)?),
            None => None,
        };
        if warehouse.is_some() {
            for topic in [
                topics::USAGE_ACCEPTED,
                topics::INVOICE_EVENTS,
                topics::PAYMENT_EVENTS,
                topics::SUBSCRIPTION_EVENTS,
            ] {
                deps.bus.ensure_topic(topic).await?;
            }
            for subscription in subscriptions(deps.max_delivery_attempts) {
                deps.bus.ensure_subscription(&subscription).await?;
            }
        }
        Ok(Self { deps, warehouse })
    }

    /// The warehouse, when configured.
    pub fn warehouse(&self) -> Option<&Warehouse> {
        self.warehouse.as_ref()
    }

    /// The exporter of `table` (for tests and in-process callers).
    pub fn exporter(&self, table: tables::Table) -> Option<TableExporter> {
        self.warehouse.as_ref().map(|warehouse| {
            TableExporter::new(
                self.deps.pool.clone(),
                Arc::clone(&self.deps.clock),
                warehouse.writer.clone(),
                table,
                self.deps.config.batch_rows,
            )
        })
    }

    /// The stager of `subscription` (for tests and in-process callers).
    pub fn stager(&self, subscription: &str) -> Stager {
        Stager::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            subscription,
        )
    }

    /// The gRPC service of export (served whether or not export is on).
    pub fn grpc_server(&self, max_message_bytes: usize) -> GrpcServer {
        let dataset = self
            .warehouse
            .as_ref()
            .map(|w| format!("{}.{}", w.target.project, w.target.dataset));
        let mut api = ExportApi::new(
            self.deps.pool.clone(),
            Arc::clone(&self.deps.clock),
            dataset,
        );
        if let Some(warehouse) = &self.warehouse {
            api = api.with_backfill(backfill::Backfill::new(
                self.deps.pool.clone(),
                warehouse.rest.clone(),
            ));
        }
        let api = ExportServiceServer::new(api)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(api),
            vec![<ExportServiceServer<ExportApi> as NamedService>::NAME],
        )
    }

    /// Starts the consumers and, once the dataset is set up, one exporter
    /// per table (only when configured); they stop on `shutdown`.
    pub fn spawn_background(&self, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        let Some(warehouse) = self.warehouse.clone() else {
            return Vec::new();
        };
        let [usage, invoices, payments, subscription_events] =
            subscriptions(self.deps.max_delivery_attempts);
        let handlers: [(SubscriptionConfig, Arc<dyn MessageHandler>); 4] = [
            (
                usage,
                Arc::new(UsageAcceptedHandler(
                    self.stager(USAGE_ACCEPTED_SUBSCRIPTION),
                )),
            ),
            (
                invoices,
                Arc::new(InvoiceEventsHandler(
                    self.stager(INVOICE_EVENTS_SUBSCRIPTION),
                )),
            ),
            (
                payments,
                Arc::new(PaymentEventsHandler(
                    self.stager(PAYMENT_EVENTS_SUBSCRIPTION),
                )),
            ),
            (
                subscription_events,
                Arc::new(SubscriptionEventsHandler(
                    self.stager(SUBSCRIPTION_EVENTS_SUBSCRIPTION),
                )),
            ),
        ];
        let mut tasks: Vec<JoinHandle<()>> = handlers
            .into_iter()
            .map(|(config, handler)| {
                let name = config.name.clone();
                let consumer = Consumer::new(Arc::clone(&self.deps.bus), config, handler);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) = consumer.run(shutdown).await {
                        tracing::error!(%error, subscription = %name, "an export consumer stopped");
                    }
                })
            })
            .collect();
        let exporters: Vec<TableExporter> = tables::ALL
            .into_iter()
            .filter_map(|table| self.exporter(table))
            .collect();
        let poll = Duration::from_millis(self.deps.config.poll_interval_ms);
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if !set_up_until_done(&warehouse, poll, &shutdown).await {
                return;
            }
            let running: Vec<JoinHandle<()>> = exporters
                .into_iter()
                .map(|exporter| tokio::spawn(exporter.run(poll, shutdown.clone())))
                .collect();
            for task in running {
                let _ = task.await;
            }
        }));
        tasks
    }
}

/// Sets the warehouse up, retrying until it works; `false` on shutdown first.
async fn set_up_until_done(warehouse: &Warehouse, poll: Duration, shutdown: &Shutdown) -> bool {
    let mut backoff = poll;
    loop {
        match warehouse.set_up().await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis(), "the BigQuery dataset could not be set up; rows are staged meanwhile");
            }
        }
        tokio::select! {
            () = shutdown.wait() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(SETUP_MAX_BACKOFF);
    }
}

fn subscriptions(max_delivery_attempts: u32) -> [SubscriptionConfig; 4] {
    [
        SubscriptionConfig::unordered(USAGE_ACCEPTED_SUBSCRIPTION, topics::USAGE_ACCEPTED)
            .with_max_delivery_attempts(max_delivery_attempts),
        SubscriptionConfig::unordered(INVOICE_EVENTS_SUBSCRIPTION, topics::INVOICE_EVENTS)
            .with_max_delivery_attempts(max_delivery_attempts),
        SubscriptionConfig::unordered(PAYMENT_EVENTS_SUBSCRIPTION, topics::PAYMENT_EVENTS)
            .with_max_delivery_attempts(max_delivery_attempts),
        SubscriptionConfig::unordered(
            SUBSCRIPTION_EVENTS_SUBSCRIPTION,
            topics::SUBSCRIPTION_EVENTS,
        )
        .with_max_delivery_attempts(max_delivery_attempts),
    ]
}
