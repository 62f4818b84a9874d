//! Errors of the audit crate and their gRPC kinds.

use tally_runtime::error::{ErrorKind, FieldViolation, HasErrorKind};

/// Why an audit call failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The entry holds something shaped like a secret (see `secrets`): a bug
    /// in the caller, refused before it reaches the append-only log.
    #[error("audit entry refused: its `{field}` holds something shaped like a secret")]
    SecretInEntry {
        /// The field.
        field: &'static str,
    },
    /// A request field breaks a rule.
    #[error("{field}: {description}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule (`invalid_value`, `invalid_page_token`, `invalid_range`, …).
        rule: &'static str,
        /// What is wrong.
        description: String,
    },
    /// No entry with this id in the chains served here.
    #[error("no audit entry {0} in the chains served here")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl AuditError {
    pub(crate) fn invalid(
        field: &'static str,
        rule: &'static str,
        description: impl Into<String>,
    ) -> Self {
        AuditError::Invalid {
            field,
            rule,
            description: description.into(),
        }
    }
}

impl HasErrorKind for AuditError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            AuditError::Invalid { .. } => ErrorKind::InvalidArgument,
            AuditError::NotFound(_) => ErrorKind::NotFound,
            AuditError::SecretInEntry { .. } | AuditError::Database(_) => ErrorKind::Internal,
        }
    }

    fn violations(&self) -> Vec<FieldViolation> {
        match self {
            AuditError::Invalid {
                field,
                rule,
                description,
            } => vec![FieldViolation::new(*field, *rule, description.clone())],
            _ => Vec::new(),
        }
    }
}

impl From<AuditError> for tonic::Status {
    fn from(error: AuditError) -> Self {
        tally_runtime::error::ServiceError::from_error(&error).into()
    }
}
