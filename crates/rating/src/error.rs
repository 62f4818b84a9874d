//! Rating's errors (usage, replica, queries) and their one mapping to gRPC
//! statuses. Internal failures are logged once and answered as INTERNAL
//! without details (through the runtime's `ServiceError`).

use tally_runtime::{ErrorKind, ServiceError};
use tonic::Status;

/// Why a rating operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RatingError {
    /// The request is malformed (the message names the field).
    #[error("{0}")]
    InvalidArgument(String),
    /// The subscription or customer is unknown to rating.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but cannot be answered in this state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A service rating depends on (ingest) cannot be reached; retry.
    #[error("{0}")]
    Unavailable(String),
    /// An idempotency key was reused with a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// A stored row cannot be read or priced (a bug or a manual edit).
    #[error("{0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl RatingError {
    /// The same error with `context` (e.g. the subscription and period it is
    /// about) before its message; a database error is left as it is.
    pub fn prefixed(self, context: &str) -> RatingError {
        match self {
            RatingError::InvalidArgument(message) => {
                RatingError::InvalidArgument(format!("{context}: {message}"))
            }
            RatingError::NotFound(message) => {
                RatingError::NotFound(format!("{context}: {message}"))
            }
            RatingError::FailedPrecondition(message) => {
                RatingError::FailedPrecondition(format!("{context}: {message}"))
            }
            RatingError::Unavailable(message) => {
                RatingError::Unavailable(format!("{context}: {message}"))
            }
            RatingError::AlreadyExists(message) => {
                RatingError::AlreadyExists(format!("{context}: {message}"))
            }
            RatingError::Corrupt(message) => RatingError::Corrupt(format!("{context}: {message}")),
            RatingError::Database(error) => RatingError::Database(error),
        }
    }
}

impl From<RatingError> for Status {
    fn from(error: RatingError) -> Self {
        let message = error.to_string();
        match error {
            RatingError::InvalidArgument(_) => {
                Status::new(ErrorKind::InvalidArgument.grpc_code(), message)
            }
            RatingError::NotFound(_) => Status::new(ErrorKind::NotFound.grpc_code(), message),
            RatingError::FailedPrecondition(_) => {
                Status::new(ErrorKind::FailedPrecondition.grpc_code(), message)
            }
            RatingError::Unavailable(_) => Status::new(ErrorKind::Unavailable.grpc_code(), message),
            RatingError::AlreadyExists(_) => {
                Status::new(ErrorKind::IdempotencyConflict.grpc_code(), message)
            }
            RatingError::Corrupt(_) => ServiceError::new(ErrorKind::Internal, message).into(),
            RatingError::Database(error) => ServiceError::from(error).into(),
        }
    }
}
