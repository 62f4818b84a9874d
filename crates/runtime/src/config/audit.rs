//! `[audit]`: publishing the audit chains' heads.

use serde::{Deserialize, Serialize};

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Seconds between looks at this process's audit chains; a head that
    /// moved is published (an `audit chain head` log line) for
    /// `tally audit verify --head` to compare with later.
    pub head_publish_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            head_publish_interval_seconds: 300,
        }
    }
}
