//! The gRPC surface of export.

use sqlx::PgPool;
use tally_proto::convert::maybe_timestamp;
use tally_proto::export::export_service_server::ExportService;
use tally_proto::export::{GetExportStatusRequest, GetExportStatusResponse, TableExportStatus};
use tally_runtime::SharedClock;
use tonic::{Request, Response, Status};

use super::store;
use crate::error::ExportServiceError;
use crate::tables;

/// `ExportService`.
#[derive(Debug, Clone)]
pub struct ExportApi {
    pool: PgPool,
    clock: SharedClock,
    /// `project.dataset`, or `None` when export is off.
    dataset: Option<String>,
}

impl ExportApi {
    /// The API over `pool`; `dataset` is `None` when export is off.
    pub fn new(pool: PgPool, clock: SharedClock, dataset: Option<String>) -> Self {
        Self {
            pool,
            clock,
            dataset,
        }
    }
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
}
