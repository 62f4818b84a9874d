//! One mapping from error kind to `tonic::Code`, used by every service.
//!
//! Each crate keeps its own precise `thiserror` enum and says which
//! [`ErrorKind`] each variant is (via [`HasErrorKind`]); only this module turns
//! kinds into gRPC statuses. Internal errors are logged once here and reach the
//! caller as a bare `INTERNAL` without details. Field violations travel as the
//! `tally.common.v1.Violations` detail `common.proto` promises on every
//! INVALID_ARGUMENT; [`status_violations`] reads them back on the client side.

use std::fmt;

use prost::Message as _;
use tally_proto::common;

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
    /// A concurrent change won (an optimistic-concurrency check, a held lock); re-read and retry.
    Aborted,
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
            ErrorKind::Aborted => tonic::Code::Aborted,
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

    /// The fields at fault (sent as the `Violations` detail); every error of
    /// kind `InvalidArgument` names at least one.
    fn violations(&self) -> Vec<FieldViolation> {
        Vec::new()
    }
}

/// One broken rule on one field, e.g. `timestamp`, `too_far_in_future`,
/// `timestamp 2026-01-01T00:00:00Z is more than 300 s ahead of the service clock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field, e.g. `events[3].properties.tokens`.
    pub field: String,
    /// Stable rule name in lower snake case (`required`, `invalid_decimal`, …); clients switch on it.
    pub rule: String,
    /// What is wrong, in words a caller can act on.
    pub description: String,
}

impl FieldViolation {
    /// `rule` broken on `field`, described.
    pub fn new(
        field: impl Into<String>,
        rule: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
            description: description.into(),
        }
    }

    /// The violation a `field: description` message states, for errors that
    /// carry only such text: the field is the text before the first `: `
    /// when it is a field path (no spaces), otherwise empty; the rule is
    /// `required` for `is required`, `invalid_page_token` on a page or resume
    /// token, and `invalid_value` otherwise.
    pub fn from_message(message: &str) -> Self {
        let (field, description) = match message.split_once(": ") {
            Some((field, description)) if !field.is_empty() && !field.contains(' ') => {
                (field, description)
            }
            _ => ("", message),
        };
        Self::inferred(field, description)
    }

    /// A violation on `field` whose only statement is its `description`:
    /// the rule is `required` when the description is `is required` or
    /// `required`, `invalid_page_token` on a page or resume token, otherwise
    /// the generic `invalid_value`.
    pub fn inferred(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        let rule = if matches!(description.as_str(), "is required" | "required") {
            "required"
        } else if field.ends_with("page_token") || field.ends_with("resume_token") {
            "invalid_page_token"
        } else {
            "invalid_value"
        };
        Self::new(field, rule, description)
    }

    /// The wire form.
    pub fn to_proto(&self) -> common::FieldViolation {
        common::FieldViolation {
            field: self.field.clone(),
            rule: self.rule.clone(),
            description: self.description.clone(),
        }
    }
}

impl From<tally_proto::convert::Violation> for FieldViolation {
    fn from(violation: tally_proto::convert::Violation) -> Self {
        Self::new(violation.field, violation.rule, violation.description)
    }
}

impl From<common::FieldViolation> for FieldViolation {
    fn from(violation: common::FieldViolation) -> Self {
        Self::new(violation.field, violation.rule, violation.description)
    }
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
            .map(|violation| match violation.field.as_str() {
                "" => violation.description.clone(),
                field => format!("{field}: {}", violation.description),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            kind: ErrorKind::InvalidArgument,
            message,
            violations,
        }
    }

    /// `InvalidArgument` for one `rule` broken on `field`.
    pub fn invalid_field(
        field: impl Into<String>,
        rule: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self::invalid(vec![FieldViolation::new(field, rule, description)])
    }

    /// `kind` with a caller-facing `message` and the `violations` behind it
    /// (e.g. a publish refused as FAILED_PRECONDITION for what a draft breaks).
    pub fn with_violations(
        kind: ErrorKind,
        message: impl Into<String>,
        violations: Vec<FieldViolation>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            violations,
        }
    }

    /// Converts any crate error that knows its kind and violations.
    pub fn from_error<E: HasErrorKind>(error: &E) -> Self {
        Self::with_violations(error.error_kind(), error.to_string(), error.violations())
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
        let mut violations = error.violations;
        if violations.is_empty() && error.kind == ErrorKind::InvalidArgument {
            // The contract promises a violation on every INVALID_ARGUMENT: an
            // error that named no field still says which rule it broke.
            violations.push(FieldViolation::new(
                "",
                "invalid_argument",
                error.message.clone(),
            ));
        }
        with_violations(error.kind.grpc_code(), error.message, &violations)
    }
}

/// `google.rpc.Status`, the envelope of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

const VIOLATIONS_TYPE_URL: &str = "type.googleapis.com/tally.common.v1.Violations";

fn with_violations(
    code: tonic::Code,
    message: String,
    violations: &[FieldViolation],
) -> tonic::Status {
    if violations.is_empty() {
        return tonic::Status::new(code, message);
    }
    let detail = common::Violations {
        violations: violations.iter().map(FieldViolation::to_proto).collect(),
    };
    let envelope = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: VIOLATIONS_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        code,
        message,
        tonic::codegen::Bytes::from(envelope.encode_to_vec()),
    )
}

/// The violations a status carries in its details (empty when it has none):
/// what a client reads to show each field's problem.
pub fn status_violations(status: &tonic::Status) -> Vec<common::FieldViolation> {
    let Ok(envelope) = RpcStatus::decode(status.details()) else {
        return Vec::new();
    };
    envelope
        .details
        .iter()
        .filter(|any| any.type_url == VIOLATIONS_TYPE_URL)
        .filter_map(|any| common::Violations::decode(any.value.as_slice()).ok())
        .flat_map(|detail| detail.violations)
        .collect()
}

impl ServiceError {
    /// The kind of a database error: a missing row is `NotFound`, a pool or
    /// connection failure `Unavailable`, anything else `Internal`.
    pub fn from_database_kind(error: &sqlx::Error) -> ErrorKind {
        match error {
            sqlx::Error::RowNotFound => ErrorKind::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        Self::new(Self::from_database_kind(&error), error.to_string())
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

        let status: tonic::Status = ServiceError::invalid(vec![FieldViolation::new(
            "events[0].timestamp",
            "too_far_in_future",
            "more than 5 minutes in the future",
        )])
        .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "events[0].timestamp: more than 5 minutes in the future"
        );
        let violations = status_violations(&status);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "events[0].timestamp");
        assert_eq!(violations[0].rule, "too_far_in_future");
        assert_eq!(
            violations[0].description,
            "more than 5 minutes in the future"
        );

        let status: tonic::Status =
            ServiceError::new(ErrorKind::InvalidArgument, "no field named").into();
        assert_eq!(status_violations(&status)[0].rule, "invalid_argument");
        let status: tonic::Status = ServiceError::new(ErrorKind::NotFound, "gone").into();
        assert!(status_violations(&status).is_empty());
        assert_eq!(ErrorKind::Aborted.grpc_code(), tonic::Code::Aborted);
    }

    #[test]
    fn text_only_violations_get_a_rule() {
        let rules = |violation: FieldViolation| (violation.field, violation.rule);
        assert_eq!(
            rules(FieldViolation::from_message("customer_id: is required")),
            ("customer_id".into(), "required".into())
        );
        assert_eq!(
            rules(FieldViolation::from_message(
                "page_token: \"x\" was not issued for this listing"
            )),
            ("page_token".into(), "invalid_page_token".into())
        );
        assert_eq!(
            rules(FieldViolation::from_message(
                "event_ids: between 1 and 100 ids, got 0"
            )),
            ("event_ids".into(), "invalid_value".into())
        );
        assert_eq!(
            rules(FieldViolation::from_message("sub_1 2025-01: went wrong")),
            (String::new(), "invalid_value".into())
        );
        assert_eq!(
            rules(FieldViolation::inferred(
                "page_token",
                "is not a token of this listing"
            )),
            ("page_token".into(), "invalid_page_token".into())
        );
        assert_eq!(
            ErrorKind::IdempotencyConflict.grpc_code(),
            tonic::Code::AlreadyExists
        );
    }
}
