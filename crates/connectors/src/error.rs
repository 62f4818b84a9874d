//! Connectors' errors and their kinds (mapped to gRPC codes by `runtime::error`).

use tally_runtime::error::{ErrorKind, FieldViolation, HasErrorKind};

/// What can go wrong in the connectors service.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorsError {
    /// A request or message field breaks a rule.
    #[error("{}: {}", .0.field, .0.description)]
    Invalid(FieldViolation),
    /// The Orb external customer id is mapped to another Tally customer.
    #[error("{0}")]
    AlreadyMapped(String),
    /// A change the state does not allow (a cutover or rollback refused, with why).
    #[error("{0}")]
    Refused(String),
    /// What was asked about does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A dependency (invoicing, the external biller) did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The audit log refused the entry.
    #[error(transparent)]
    Audit(#[from] tally_audit::AuditError),
    /// A bug: a stored value that cannot be read back.
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl HasErrorKind for ConnectorsError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ConnectorsError::Invalid(_) => ErrorKind::InvalidArgument,
            ConnectorsError::AlreadyMapped(_) => ErrorKind::AlreadyExists,
            ConnectorsError::Database(error) => {
                tally_runtime::error::ServiceError::from_database_kind(error)
            }
            ConnectorsError::Refused(_) => ErrorKind::FailedPrecondition,
            ConnectorsError::NotFound(_) => ErrorKind::NotFound,
            ConnectorsError::Unavailable(_) => ErrorKind::Unavailable,
            ConnectorsError::Audit(_) | ConnectorsError::Internal(_) => ErrorKind::Internal,
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            ConnectorsError::Invalid(violation) => vec![violation.clone()],
            _ => Vec::new(),
        }
    }
}

impl From<tally_proto::convert::Violation> for ConnectorsError {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        ConnectorsError::Invalid(violation.into())
    }
}

impl From<FieldViolation> for ConnectorsError {
    fn from(violation: FieldViolation) -> Self {
        ConnectorsError::Invalid(violation)
    }
}

impl From<ConnectorsError> for tonic::Status {
    fn from(error: ConnectorsError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
