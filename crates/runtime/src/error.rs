//! One mapping from error kind to `tonic::Code`, used by every service.
//!
//! Each crate keeps its own precise `thiserror` enum and says which
//! [`ErrorKind`] each variant is (via [`HasErrorKind`]); only this module turns
//! kinds into gRPC statuses. Internal errors are logged once here and reach the
//! caller as a bare `INTERNAL` without details.

use std::fmt;

/// What kind of failure an error is, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed; a field breaks a rule. Retrying will not help.
    InvalidArgument,
    /// The named resource does not exist.
    NotFound,
    /// The resource already exists (a create that is not a replay).
    AlreadyExists,
    /// An idempotency key was reused with a different payload (`ALREADY_EXISTS`, per common.proto).
    IdempotencyConflict,
    /// The resource is in a state that does not allow this (e.g. voiding a paid invoice).
    FailedPrecondition,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials without the needed scope.
    PermissionDenied,
    /// Too many requests or too large; retry later or smaller.
    ResourceExhausted,
    /// A dependency is down or overloaded; retry with backoff.
    Unavailable,
    /// The caller gave up or the server is stopping.
    Cancelled,
    /// A bug or an unexpected failure; details are only in the logs.
    Internal,
}

impl ErrorKind {
    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorKind::IdempotencyConflict => tonic::Code::AlreadyExists,
            ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Cancelled => tonic::Code::Cancelled,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// Implemented by every crate's error enum: which kind each variant is.
pub trait HasErrorKind: std::error::Error {
    /// The kind of this error.
    fn error_kind(&self) -> ErrorKind;
}

/// One broken rule on one field, e.g. `timestamp`: `more than 5 minutes in the future`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field, e.g. `events[3].properties.tokens`.
    pub field: String,
    /// The rule that was broken, in words a caller can act on.
    pub reason: String,
}

/// An error on its way out of a gRPC handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A message safe to show the caller (never for `Internal`).
    pub message: String,
    /// The fields at fault, for `InvalidArgument`.
    pub violations: Vec<FieldViolation>,
}

impl ServiceError {
    /// An error of `kind` with a caller-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    /// `InvalidArgument` naming each field and rule.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let message = violations
            .iter()
            .map(|violation| format!("{}: {}", violation.field, violation.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            kind: ErrorKind::InvalidArgument,
            message,
            violations,
        }
    }

    /// Converts any crate error that knows its kind, logging internal ones once.
    pub fn from_error<E: HasErrorKind>(error: &E) -> Self {
        Self::new(error.error_kind(), error.to_string())
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<ServiceError> for tonic::Status {
    fn from(error: ServiceError) -> Self {
        if error.kind == ErrorKind::Internal {
            // The details may name tables or hosts: log them, never return them.
            tracing::error!(error = %error.message, "internal error");
            return tonic::Status::internal("internal error; see the server logs");
        }
        tonic::Status::new(error.kind.grpc_code(), error.message)
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        let kind = match &error {
            sqlx::Error::RowNotFound => ErrorKind::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        };
        Self::new(kind, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_distinct_code_except_internal_details() {
        let status: tonic::Status =
            ServiceError::new(ErrorKind::Internal, "relation ingest.x missing").into();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("ingest.x"),
            "internal details never leak"
        );

        let status: tonic::Status = ServiceError::invalid(vec![FieldViolation {
            field: "events[0].timestamp".into(),
            reason: "more than 5 minutes in the future".into(),
        }])
        .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "events[0].timestamp: more than 5 minutes in the future"
        );
        assert_eq!(
            ErrorKind::IdempotencyConflict.grpc_code(),
            tonic::Code::AlreadyExists
        );
    }
}
