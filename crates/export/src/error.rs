//! Export's errors and their kinds (mapped to gRPC codes by `runtime::error`).

use tally_runtime::error::{ErrorKind, HasErrorKind};

/// What can go wrong in the export service's API.
#[derive(Debug, thiserror::Error)]
pub enum ExportServiceError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl HasErrorKind for ExportServiceError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ExportServiceError::Database(error) => {
                tally_runtime::error::ServiceError::from_database_kind(error)
            }
        }
    }
}

impl From<ExportServiceError> for tonic::Status {
    fn from(error: ExportServiceError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
