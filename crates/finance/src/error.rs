//! Finance's errors and their kinds (mapped to gRPC codes by `runtime::error`).

use tally_domain::finance::FinanceError;
use tally_runtime::error::{ErrorKind, FieldViolation, HasErrorKind};

/// What can go wrong in the finance service.
#[derive(Debug, thiserror::Error)]
pub enum FinanceServiceError {
    /// A request or message field breaks a rule.
    #[error("{}: {}", .0.field, .0.description)]
    Invalid(FieldViolation),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// A transaction id was posted before with other content: the fact it is
    /// derived from changed. Never retried (a dead letter says which).
    #[error("{0}")]
    Conflict(String),
    /// The posting rules refused a fact (a wrong sign, an unrounded amount).
    #[error(transparent)]
    Rules(#[from] FinanceError),
    /// A bug: a stored value that cannot be read back.
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The audit entry could not be written (the change rolls back with it).
    #[error(transparent)]
    Audit(#[from] tally_audit::AuditError),
}

impl FinanceServiceError {
    /// Whether trying again may succeed (the database was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, FinanceServiceError::Database(_))
    }
}

impl HasErrorKind for FinanceServiceError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            FinanceServiceError::Invalid(_) => ErrorKind::InvalidArgument,
            FinanceServiceError::NotFound(_) => ErrorKind::NotFound,
            FinanceServiceError::Conflict(_) | FinanceServiceError::Rules(_) => {
                ErrorKind::FailedPrecondition
            }
            FinanceServiceError::Database(error) => {
                tally_runtime::error::ServiceError::from_database_kind(error)
            }
            FinanceServiceError::Internal(_) | FinanceServiceError::Audit(_) => ErrorKind::Internal,
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            FinanceServiceError::Invalid(violation) => vec![violation.clone()],
            _ => Vec::new(),
        }
    }
}

impl From<tally_proto::convert::Violation> for FinanceServiceError {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        FinanceServiceError::Invalid(violation.into())
    }
}

impl From<FieldViolation> for FinanceServiceError {
    fn from(violation: FieldViolation) -> Self {
        FinanceServiceError::Invalid(violation)
    }
}

impl From<FinanceServiceError> for tonic::Status {
    fn from(error: FinanceServiceError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
