//! The catalog's errors and their kinds, mapped to gRPC statuses by the
//! runtime's one table: INVALID_ARGUMENT (and FAILED_PRECONDITION when
//! publishing an invalid draft) carry the `tally.common.v1.Violations` detail.

use tally_runtime::error::{FieldViolation, HasErrorKind};
use tally_runtime::{ErrorKind, ServiceError};
use tonic::Status;

use super::mapping::Violations;

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request breaks rules; every violation is named.
    #[error("{}", .0.summary())]
    Invalid(Violations),
    /// The named resource does not exist.
    #[error("{resource} {id:?} does not exist")]
    NotFound {
        /// What kind of thing, e.g. `plan version`.
        resource: &'static str,
        /// The id or code asked for.
        id: String,
    },
    /// A create that is not a replay: the code or key exists with a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource's state forbids the call (e.g. editing a published version).
    #[error("{message}")]
    FailedPrecondition {
        /// What is wrong.
        message: String,
        /// The violations that block it, if that is the reason.
        violations: Violations,
    },
    /// An optimistic-concurrency check failed; re-read and retry.
    #[error("{0}")]
    Aborted(String),
    /// A stored row cannot be decoded (a bug or a manual edit).
    #[error("stored {what} cannot be read: {detail}")]
    Corrupt {
        /// Which row.
        what: String,
        /// The decoding error.
        detail: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The audit entry could not be written (the change rolls back with it).
    #[error(transparent)]
    Audit(#[from] tally_audit::AuditError),
}

impl CatalogError {
    /// `NotFound` for `resource` `id`.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        CatalogError::NotFound {
            resource,
            id: id.into(),
        }
    }
}

impl HasErrorKind for CatalogError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            CatalogError::Invalid(_) => ErrorKind::InvalidArgument,
            CatalogError::NotFound { .. } => ErrorKind::NotFound,
            CatalogError::AlreadyExists(_) => ErrorKind::IdempotencyConflict,
            CatalogError::FailedPrecondition { .. } => ErrorKind::FailedPrecondition,
            CatalogError::Aborted(_) => ErrorKind::Aborted,
            CatalogError::Corrupt { .. } | CatalogError::Audit(_) => ErrorKind::Internal,
            CatalogError::Database(error) => ServiceError::from_database_kind(error),
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            CatalogError::Invalid(violations)
            | CatalogError::FailedPrecondition { violations, .. } => violations
                .to_proto()
                .into_iter()
                .map(FieldViolation::from)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        ServiceError::from_error(&error).into()
    }
}
