//! The catalog's errors and their one mapping to gRPC statuses.
//!
//! INVALID_ARGUMENT (and FAILED_PRECONDITION when publishing an invalid draft)
//! carry a `tally.common.v1.Violations` detail packed in a `google.rpc.Status`
//! (the `grpc-status-details-bin` trailer), as `common.proto` promises.

use prost::Message as _;
use tally_proto::common;
use tally_runtime::{ErrorKind, ServiceError};
use tonic::{Code, Status};

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

fn with_violations(code: Code, message: String, violations: &Violations) -> Status {
    if violations.is_empty() {
        return Status::new(code, message);
    }
    let detail = common::Violations {
        violations: violations.to_proto(),
    };
    let envelope = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: VIOLATIONS_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(
        code,
        message,
        tonic::codegen::Bytes::from(envelope.encode_to_vec()),
    )
}

/// The violations a status carries in its details (empty when it has none):
/// what a client of the catalog reads to show each field's problem.
pub fn status_violations(status: &Status) -> Vec<common::FieldViolation> {
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

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        let message = error.to_string();
        match error {
            CatalogError::Invalid(violations) => {
                with_violations(ErrorKind::InvalidArgument.grpc_code(), message, &violations)
            }
            CatalogError::FailedPrecondition { violations, .. } => with_violations(
                ErrorKind::FailedPrecondition.grpc_code(),
                message,
                &violations,
            ),
            CatalogError::NotFound { .. } => Status::new(ErrorKind::NotFound.grpc_code(), message),
            CatalogError::AlreadyExists(_) => {
                Status::new(ErrorKind::IdempotencyConflict.grpc_code(), message)
            }
            // The runtime's kinds have no ABORTED: optimistic concurrency is
            // the catalog's alone so far.
            CatalogError::Aborted(_) => Status::aborted(message),
            CatalogError::Corrupt { .. } => ServiceError::new(ErrorKind::Internal, message).into(),
            CatalogError::Database(error) => ServiceError::from(error).into(),
        }
    }
}
