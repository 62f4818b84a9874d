//! Invoicing's errors and their one mapping to gRPC statuses (through the
//! runtime's `ServiceError`: internal failures are logged once and answered
//! as INTERNAL without details).

use tally_domain::ids::{IdError, PrefixedId};
use tally_runtime::error::{FieldViolation, HasErrorKind};
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
        .map(|violation| format!("{}: {}", violation.field, violation.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl InvoicingError {
    /// One violation on `field`; its rule is inferred from the reason
    /// ([`FieldViolation::inferred`]: `required` or `invalid_value`).
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvoicingError::Invalid(vec![FieldViolation::inferred(field, reason)])
    }

    /// One violation of `rule` on `field`.
    pub fn invalid_rule(
        field: impl Into<String>,
        rule: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        InvoicingError::Invalid(vec![FieldViolation::new(field, rule, description)])
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
    /// Adds one; its rule is inferred from the reason ([`FieldViolation::inferred`]).
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldViolation::inferred(field, reason));
    }

    /// Reads an id of type `T` at the edge (`tally_proto::convert::id`: required,
    /// `invalid_prefix` for another type's id, …); records the violation and gives `None`.
    pub fn id<T>(&mut self, text: &str, field: &str) -> Option<T>
    where
        T: PrefixedId + std::str::FromStr<Err = IdError>,
    {
        tally_proto::convert::id(text, field)
            .map_err(|violation| self.0.push(violation.into()))
            .ok()
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

impl From<tally_proto::convert::Violation> for InvoicingError {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        InvoicingError::Invalid(vec![violation.into()])
    }
}

impl HasErrorKind for InvoicingError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            InvoicingError::Invalid(_) => ErrorKind::InvalidArgument,
            InvoicingError::NotFound(_) => ErrorKind::NotFound,
            InvoicingError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            InvoicingError::IdempotencyConflict(_) => ErrorKind::IdempotencyConflict,
            InvoicingError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            InvoicingError::Aborted(_) => ErrorKind::Aborted,
            InvoicingError::Unavailable(_) => ErrorKind::Unavailable,
            InvoicingError::Internal(_) => ErrorKind::Internal,
            InvoicingError::Database(error) => ServiceError::from_database_kind(error),
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            InvoicingError::Invalid(violations) => violations.clone(),
            _ => Vec::new(),
        }
    }
}

impl From<InvoicingError> for Status {
    fn from(error: InvoicingError) -> Self {
        ServiceError::from_error(&error).into()
    }
}

/// The result of invoicing operations.
pub type Result<T, E = InvoicingError> = std::result::Result<T, E>;
