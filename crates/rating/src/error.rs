//! Rating's errors (usage, replica, queries) and their one mapping to gRPC
//! statuses. Internal failures are logged once and answered as INTERNAL
//! without details (through the runtime's `ServiceError`).

use tally_runtime::error::{FieldViolation, HasErrorKind};
use tally_runtime::{ErrorKind, ServiceError};
use tonic::Status;

/// Why a rating operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RatingError {
    /// The request is malformed (the message is `field: description`, read
    /// back as the violation by [`FieldViolation::from_message`]).
    #[error("{0}")]
    InvalidArgument(String),
    /// A wire value breaks its rule, as `tally_proto::convert` named it
    /// (e.g. `invalid_decimal`).
    #[error("{}: {}", .0.field, .0.description)]
    Invalid(FieldViolation),
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
            RatingError::Invalid(violation) => RatingError::Invalid(FieldViolation {
                description: format!("{context}: {}", violation.description),
                ..violation
            }),
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

impl HasErrorKind for RatingError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            RatingError::InvalidArgument(_) | RatingError::Invalid(_) => ErrorKind::InvalidArgument,
            RatingError::NotFound(_) => ErrorKind::NotFound,
            RatingError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            RatingError::Unavailable(_) => ErrorKind::Unavailable,
            RatingError::AlreadyExists(_) => ErrorKind::IdempotencyConflict,
            RatingError::Corrupt(_) => ErrorKind::Internal,
            RatingError::Database(error) => ServiceError::from_database_kind(error),
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            RatingError::InvalidArgument(message) => vec![FieldViolation::from_message(message)],
            RatingError::Invalid(violation) => vec![violation.clone()],
            _ => Vec::new(),
        }
    }
}

impl From<RatingError> for Status {
    fn from(error: RatingError) -> Self {
        ServiceError::from_error(&error).into()
    }
}

impl From<tally_proto::convert::Violation> for RatingError {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        RatingError::Invalid(violation.into())
    }
}
