//! The gRPC surface of export.

use sqlx::PgPool;
use tally_proto::convert::maybe_timestamp;
use tally_proto::export::export_service_server::ExportService;
use tally_proto::export::{
    BackfillPartitionsRequest, BackfillPartitionsResponse, BackfilledPartition,
    GetExportStatusRequest, GetExportStatusResponse, TableExportStatus,
};
use tally_runtime::SharedClock;
use tally_runtime::error::ServiceError;
use tonic::{Request, Response, Status};

use super::store;
use crate::backfill::Backfill;
use crate::error::ExportServiceError;
use crate::tables;

/// `ExportService`.
#[derive(Debug, Clone)]
pub struct ExportApi {
    pool: PgPool,
    clock: SharedClock,
    /// `project.dataset`, or `None` when export is off.
    dataset: Option<String>,
    /// The partitions' rebuilder, `None` when export is off.
    backfill: Option<Backfill>,
}

impl ExportApi {
    /// The API over `pool`; `dataset` is `None` when export is off.
    pub fn new(pool: PgPool, clock: SharedClock, dataset: Option<String>) -> Self {
        Self {
            pool,
            clock,
            dataset,
            backfill: None,
        }
    }

    /// The same, rebuilding partitions with `backfill`.
    #[must_use]
    pub fn with_backfill(mut self, backfill: Backfill) -> Self {
        self.backfill = Some(backfill);
        self
    }
}

/// `YYYY-MM-DD` in `field`.
fn day(field: &str, text: &str) -> Result<chrono::NaiveDate, Status> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ServiceError::invalid_field(
            field,
            "invalid_date",
            format!("{field} {text:?} is not a day YYYY-MM-DD"),
        )
        .into()
    })
}

#[tonic::async_trait]
impl ExportService for ExportApi {
    async fn get_export_status(
        &self,
        _request: Request<GetExportStatusRequest>,
    ) -> Result<Response<GetExportStatusResponse>, Status> {
        let Some(dataset) = &self.dataset else {
            return Ok(Response::new(GetExportStatusResponse::default()));
        };
        let now = self.clock.now();
        let mut statuses = Vec::with_capacity(tables::ALL.len());
        for table in tables::ALL {
            let figures = store::figures(&self.pool, table.name)
                .await
                .map_err(ExportServiceError::from)?;
            let lag = figures
                .oldest_waiting
                .map(|oldest| (now - oldest).max(chrono::TimeDelta::zero()))
                .unwrap_or_default();
            statuses.push(TableExportStatus {
                table: table.name.to_owned(),
                rows_exported: u64::try_from(figures.rows_exported).unwrap_or(0),
                rows_waiting: u64::try_from(figures.rows_waiting).unwrap_or(0),
                stream: figures.stream.unwrap_or_default(),
                next_offset: figures.next_offset,
                lag: Some(prost_types::Duration {
                    seconds: lag.num_seconds(),
                    nanos: lag.subsec_nanos(),
                }),
                last_exported_at: maybe_timestamp(figures.last_exported_at),
                last_error: figures.last_error,
                last_error_at: maybe_timestamp(figures.last_error_at),
                stopped: figures.stopped,
            });
        }
        Ok(Response::new(GetExportStatusResponse {
            enabled: true,
            dataset: dataset.clone(),
            tables: statuses,
        }))
    }

    async fn backfill_partitions(
        &self,
        request: Request<BackfillPartitionsRequest>,
    ) -> Result<Response<BackfillPartitionsResponse>, Status> {
        let request = request.into_inner();
        let Some(backfill) = &self.backfill else {
            return Err(ExportServiceError::Off.into());
        };
        let Some(table) = tables::by_name(&request.table) else {
            return Err(ServiceError::invalid_field(
                "table",
                "unknown_table",
                format!(
                    "no table {:?}: one of {}",
                    request.table,
                    tables::ALL.map(|table| table.name).join(", ")
                ),
            )
            .into());
        };
        let from = day("from_day", &request.from_day)?;
        let to = day("to_day", &request.to_day)?;
        let partitions = backfill
            .run(table, from, to, request.generation)
            .await
            .map_err(ExportServiceError::from)?;
        Ok(Response::new(BackfillPartitionsResponse {
            partitions: partitions
                .into_iter()
                .map(|partition| BackfilledPartition {
                    day: partition.day.format("%Y-%m-%d").to_string(),
                    rows: partition.rows,
                    job_id: partition.job_id,
                    already_loaded: partition.already_loaded,
                })
                .collect(),
        }))
    }
}
