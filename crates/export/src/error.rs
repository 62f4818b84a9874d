//! Export's errors and their kinds (mapped to gRPC codes by `runtime::error`).

use tally_runtime::error::{ErrorKind, FieldViolation, HasErrorKind};

/// What can go wrong in the export service's API.
#[derive(Debug, thiserror::Error)]
pub enum ExportServiceError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A backfill stopped.
    #[error(transparent)]
    Backfill(#[from] crate::backfill::BackfillError),
    /// Export is off (no `export.project_id`).
    #[error("export is off: set export.project_id on the export service")]
    Off,
}

impl HasErrorKind for ExportServiceError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ExportServiceError::Database(error) => {
                tally_runtime::error::ServiceError::from_database_kind(error)
            }
            ExportServiceError::Backfill(error) => {
                use crate::backfill::BackfillError;
                match error {
                    BackfillError::Invalid(_) => ErrorKind::InvalidArgument,
                    BackfillError::Database(error) => {
                        tally_runtime::error::ServiceError::from_database_kind(error)
                    }
                    BackfillError::BigQuery(_) => ErrorKind::Unavailable,
                    // The operator needs BigQuery's reason: not Internal (hidden).
                    BackfillError::JobFailed { .. } => ErrorKind::FailedPrecondition,
                    BackfillError::Unsettled { .. } => ErrorKind::Aborted,
                }
            }
            ExportServiceError::Off => ErrorKind::FailedPrecondition,
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        self.violation().into_iter().collect()
    }
}

impl ExportServiceError {
    fn violation(&self) -> Option<FieldViolation> {
        match self {
            ExportServiceError::Backfill(crate::backfill::BackfillError::Invalid(message)) => Some(
                FieldViolation::new("to_day", "invalid_range", message.clone()),
            ),
            _ => None,
        }
    }
}

impl From<ExportServiceError> for tonic::Status {
    fn from(error: ExportServiceError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
