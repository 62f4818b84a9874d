//! Invoicing's errors and their one mapping to gRPC statuses (through the
//! runtime's `ServiceError`: internal failures are logged once and answered
//! as INTERNAL without details).

use tally_runtime::error::FieldViolation;
use tally_runtime::{ErrorKind, ServiceError};
use tonic::Status;

/// Why an invoicing operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvoicingError {
    /// The request breaks field rules (each violation names its field).
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldViolation>),
    /// A named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A create that is not a replay (e.g. an external id with other attributes).
    #[error("{0}")]
    AlreadyExists(String),
    /// An idempotency key reused with a different request.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// Well formed, but the resource's state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another bill run holds the lock.
    #[error("{0}")]
    Aborted(String),
    /// A peer (rating) failed transiently.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a stored row that cannot be read.
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|violation| format!("{}: {}", violation.field, violation.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl InvoicingError {
    /// One violation on `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvoicingError::Invalid(vec![FieldViolation {
            field: field.into(),
            reason: reason.into(),
        }])
    }

    /// An internal error from anything displayable.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        InvoicingError::Internal(error.to_string())
    }
}

/// Collects violations and fails when any were found.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Adds one.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// `Err(Invalid)` when something was added.
    pub fn into_result(self) -> Result<(), InvoicingError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvoicingError::Invalid(self.0))
        }
    }
}

impl From<InvoicingError> for Status {
    fn from(error: InvoicingError) -> Self {
        let message = error.to_string();
        match error {
            InvoicingError::Invalid(violations) => ServiceError::invalid(violations).into(),
            InvoicingError::NotFound(_) => ServiceError::new(ErrorKind::NotFound, message).into(),
            InvoicingError::AlreadyExists(_) => {
                ServiceError::new(ErrorKind::AlreadyExists, message).into()
            }
            InvoicingError::IdempotencyConflict(_) => {
                ServiceError::new(ErrorKind::IdempotencyConflict, message).into()
            }
            InvoicingError::FailedPrecondition(_) => {
                ServiceError::new(ErrorKind::FailedPrecondition, message).into()
            }
            InvoicingError::Aborted(_) => Status::aborted(message),
            InvoicingError::Unavailable(_) => {
                ServiceError::new(ErrorKind::Unavailable, message).into()
            }
            InvoicingError::Internal(_) => ServiceError::new(ErrorKind::Internal, message).into(),
            InvoicingError::Database(error) => ServiceError::from(error).into(),
        }
    }
}

/// The result of invoicing operations.
pub type Result<T, E = InvoicingError> = std::result::Result<T, E>;
