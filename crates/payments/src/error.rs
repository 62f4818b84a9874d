//! Payments' errors and their kinds (mapped to gRPC codes by `runtime::error`).

use tally_domain::ledger::LedgerError;
use tally_domain::money::MoneyError;
use tally_runtime::error::{ErrorKind, FieldViolation, HasErrorKind};

use crate::ledger::PostError;
use crate::stripe::StripeError;

/// What can go wrong in payments.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// A request field breaks a rule.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: String,
    },
    /// A wire value breaks its rule (read by `tally_proto::convert`).
    #[error("{0}")]
    Invalid(tally_proto::convert::Violation),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The object's state forbids the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An idempotency key was reused with a different request.
    #[error("idempotency key `{0}` was used with a different request")]
    IdempotencyConflict(String),
    /// A peer service (invoicing) could not answer now; retry later.
    #[error("{0}")]
    PeerUnavailable(String),
    /// Stripe failed (boxed: Stripe's errors carry several strings).
    #[error(transparent)]
    Stripe(Box<StripeError>),
    /// The ledger refused a transaction (a bug: every posting is built balanced).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// A ledger post failed.
    #[error(transparent)]
    Post(#[from] PostError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The audit entry could not be written (the change is rolled back with it).
    #[error(transparent)]
    Audit(#[from] tally_audit::AuditError),
}

impl HasErrorKind for PaymentsError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            PaymentsError::InvalidArgument { .. } | PaymentsError::Invalid(_) => {
                ErrorKind::InvalidArgument
            }
            PaymentsError::NotFound(_) => ErrorKind::NotFound,
            PaymentsError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            PaymentsError::IdempotencyConflict(_) => ErrorKind::IdempotencyConflict,
            PaymentsError::PeerUnavailable(_) => ErrorKind::Unavailable,
            PaymentsError::Stripe(error) if error.is_transient() => ErrorKind::Unavailable,
            PaymentsError::Stripe(error)
                if matches!(
                    **error,
                    StripeError::Rejected { .. } | StripeError::Declined { .. }
                ) =>
            {
                ErrorKind::FailedPrecondition
            }
            PaymentsError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => ErrorKind::Unavailable,
            PaymentsError::Stripe(_)
            | PaymentsError::Ledger(_)
            | PaymentsError::Money(_)
            | PaymentsError::Post(_)
            | PaymentsError::Audit(_)
            | PaymentsError::Database(_) => ErrorKind::Internal,
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            PaymentsError::InvalidArgument { field, reason } => {
                vec![FieldViolation::inferred(*field, reason.clone())]
            }
            PaymentsError::Invalid(violation) => vec![violation.clone().into()],
            _ => Vec::new(),
        }
    }
}

impl From<tally_proto::convert::Violation> for PaymentsError {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        PaymentsError::Invalid(violation)
    }
}

impl From<StripeError> for PaymentsError {
    fn from(error: StripeError) -> Self {
        PaymentsError::Stripe(Box::new(error))
    }
}

impl PaymentsError {
    /// Whether retrying later may succeed (database or Stripe unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self.error_kind(), ErrorKind::Unavailable)
            || matches!(self, PaymentsError::Database(_))
    }
}

impl From<PaymentsError> for tonic::Status {
    fn from(error: PaymentsError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
