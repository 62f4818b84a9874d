//! What an audit entry says, its canonical bytes and its hash.
//!
//! The canonical form is JSON with sorted keys and no whitespace, built by
//! [`canonical_json`] (not by `serde_json`'s map, whose order depends on a
//! cargo feature another crate may turn on). A stored entry is hashed from
//! its columns exactly as they are stored: `before`/`after` are canonical
//! JSON *text*, hashed as strings, so reading them back can never change a
//! number's spelling.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AuditEntryId;
use crate::error::AuditError;
use crate::schema::Schema;

/// The hash before the first entry of every chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller authenticated with an API key (its `key_…` id and name).
    ApiKey {
        /// `key_…`.
        id: String,
        /// The key's label.
        name: String,
    },
    /// A job of Tally itself (`bill_run`, `dunning`,
    /// `stripe_webhook:<event id>`) or an operator command (`tally keys`).
    System {
        /// The job, e.g. `bill_run`.
        job: String,
    },
    /// A caller of a server with authentication turned off.
    Anonymous,
}

impl Actor {
    /// A system job.
    pub fn system(job: impl Into<String>) -> Self {
        Actor::System { job: job.into() }
    }

    /// The caller of a gRPC call: the API key the auth layer put in the
    /// request's extensions, or [`Actor::Anonymous`] when auth is off.
    pub fn from_extensions(extensions: &tonic::Extensions) -> Self {
        match extensions.get::<tally_runtime::auth::ApiKey>() {
            Some(key) => Actor::ApiKey {
                id: key.id.clone(),
                name: key.name.clone(),
            },
            None => Actor::Anonymous,
        }
    }

    /// `api_key`, `system` or `anonymous` (the stored kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::ApiKey { .. } => "api_key",
            Actor::System { .. } => "system",
            Actor::Anonymous => "anonymous",
        }
    }

    /// The stored id: the key id, the job, or empty.
    pub fn id(&self) -> &str {
        match self {
            Actor::ApiKey { id, .. } => id,
            Actor::System { job } => job,
            Actor::Anonymous => "",
        }
    }

    /// The stored name: the key's name, the job, or empty.
    pub fn name(&self) -> &str {
        match self {
            Actor::ApiKey { name, .. } => name,
            Actor::System { job } => job,
            Actor::Anonymous => "",
        }
    }
}

/// Where a change came from beyond its actor: the caller's request id and
/// the trace it ran in. Handlers build it from the gRPC request
/// ([`Origin::from_request`]); jobs use [`Origin::system`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Who.
    pub actor: Actor,
    /// The caller's `x-request-id`.
    pub request_id: Option<String>,
    /// The W3C trace id of the current span, when traced.
    pub trace_id: Option<String>,
}

impl Origin {
    /// The actor, `x-request-id` and current trace of a gRPC call.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Self {
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.chars().take(128).collect::<String>())
            .filter(|value| !value.is_empty());
        Self {
            actor: Actor::from_extensions(request.extensions()),
            request_id,
            trace_id: current_trace_id(),
        }
    }

    /// A system job, in the current trace if any.
    pub fn system(job: impl Into<String>) -> Self {
        Self {
            actor: Actor::system(job),
            request_id: None,
            trace_id: current_trace_id(),
        }
    }
}

/// The trace id of the current span, when it belongs to a valid trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// One change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `aud_…`, from the service's id generator.
    pub id: String,
    /// When (the service clock); stored to the microsecond.
    pub at: DateTime<Utc>,
    /// `<resource>.<past tense>`, e.g. `invoice.voided`.
    pub action: String,
    /// `invoice`, `credit_note`, `refund`, `api_key`, …
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// Who, with the request and trace ids.
    pub origin: Origin,
    /// Why, as the caller gave it.
    pub reason: Option<String>,
    /// Free text the caller added.
    pub comment: Option<String>,
    /// The resource before the change (absent when created).
    pub before: Option<Value>,
    /// The resource after the change.
    pub after: Option<Value>,
}

impl Entry {
    /// An entry for `action` on `resource_type` `resource_id`, by `origin`.
    pub fn new(
        id: AuditEntryId,
        at: DateTime<Utc>,
        action: &str,
        resource: (&str, &str),
        origin: Origin,
    ) -> Self {
        Self {
            id: id.into(),
            at,
            action: action.to_owned(),
            resource_type: resource.0.to_owned(),
            resource_id: resource.1.to_owned(),
            origin,
            reason: None,
            comment: None,
            before: None,
            after: None,
        }
    }

    /// [`Entry::new`] with an `aud_…` id minted by the service's `ids`.
    pub fn minted(
        ids: &dyn tally_runtime::ids::IdGenerator,
        at: DateTime<Utc>,
        action: &str,
        resource: (&str, &str),
        origin: &Origin,
    ) -> Self {
        Self::new(
            ids.mint::<AuditEntryId>(),
            at,
            action,
            resource,
            origin.clone(),
        )
    }

    /// With a reason (an empty one counts as none).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into()).filter(|text| !text.is_empty());
        self
    }

    /// With a comment (an empty one counts as none).
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into()).filter(|text| !text.is_empty());
        self
    }

    /// With the state before the change.
    pub fn before(mut self, before: Value) -> Self {
        self.before = Some(before);
        self
    }

    /// With the state after the change.
    pub fn after(mut self, after: Value) -> Self {
        self.after = Some(after);
        self
    }

    /// The row this entry becomes at `sequence` of `schema`'s chain (without
    /// its hashes). Refuses an entry holding something shaped like a secret:
    /// the log is append-only, so a secret written there could never be removed.
    pub(crate) fn into_row(self, schema: Schema, sequence: i64) -> Result<Row, AuditError> {
        let row = Row {
            chain: schema.chain_name(),
            sequence,
            id: self.id,
            // PostgreSQL keeps microseconds: hash what will be read back.
            recorded_at: self.at.trunc_subsecs(6),
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            actor_kind: self.origin.actor.kind().to_owned(),
            actor_id: self.origin.actor.id().to_owned(),
            actor_name: self.origin.actor.name().to_owned(),
            request_id: self.origin.request_id,
            trace_id: self.origin.trace_id,
            reason: self.reason,
            comment: self.comment,
            before_state: self.before.as_ref().map(canonical_json),
            after_state: self.after.as_ref().map(canonical_json),
        };
        if let Some(field) = crate::secrets::field_with_secret(row.text_fields()) {
            return Err(AuditError::SecretInEntry { field });
        }
        Ok(row)
    }
}

/// An entry as stored, minus its hashes: what is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub chain: &'static str,
    pub sequence: i64,
    pub id: String,
    pub recorded_at: DateTime<Utc>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub reason: Option<String>,
    pub comment: Option<String>,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
}

impl Row {
    /// The free-text fields (name, value) the secret check reads.
    fn text_fields(&self) -> [(&'static str, Option<&str>); 11] {
        [
            ("action", Some(self.action.as_str())),
            ("resource_type", Some(self.resource_type.as_str())),
            ("resource_id", Some(self.resource_id.as_str())),
            ("actor_id", Some(self.actor_id.as_str())),
            ("actor_name", Some(self.actor_name.as_str())),
            ("request_id", self.request_id.as_deref()),
            ("trace_id", self.trace_id.as_deref()),
            ("reason", self.reason.as_deref()),
            ("comment", self.comment.as_deref()),
            ("before", self.before_state.as_deref()),
            ("after", self.after_state.as_deref()),
        ]
    }

    /// The canonical bytes of the entry: every stored column but the hashes,
    /// as canonical JSON. The chain name and sequence are inside, so an
    /// entry moved to another chain or position no longer verifies.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let text = |value: &Option<String>| value.clone().map_or(Value::Null, Value::String);
        let object = serde_json::json!({
            "action": self.action,
            "actor_id": self.actor_id,
            "actor_kind": self.actor_kind,
            "actor_name": self.actor_name,
            "after": text(&self.after_state),
            "before": text(&self.before_state),
            "chain": self.chain,
            "comment": text(&self.comment),
            "id": self.id,
            "reason": text(&self.reason),
            "recorded_at": self.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "request_id": text(&self.request_id),
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
            "sequence": self.sequence,
            "trace_id": text(&self.trace_id),
        });
        canonical_json(&object).into_bytes()
    }

    /// SHA-256(previous hash ‖ canonical bytes).
    pub fn hash(&self, previous: &[u8]) -> [u8; 32] {
        chain_hash(previous, &self.canonical_bytes())
    }
}

/// SHA-256(previous ‖ canonical).
pub fn chain_hash(previous: &[u8], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings and numbers as `serde_json` writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": 1, "a": {"z": [ {"y": 2, "x": "é\n"} ], "c": null} }"#)
                .unwrap();
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":null,"z":[{"x":"é\n","y":2}]},"b":1}"#
        );
    }

    #[test]
    fn the_hash_covers_the_previous_hash_and_every_byte() {
        let first = chain_hash(&GENESIS_HASH, b"{}");
        assert_ne!(first, chain_hash(&[1; 32], b"{}"));
        assert_ne!(first, chain_hash(&GENESIS_HASH, b"{ }"));
        // Computed independently: `(head -c 32 /dev/zero; printf '{}') | sha256sum`.
        assert_eq!(
            hex::encode(first),
            "fb1634c4e6cd4b1f1afe3ce2d6ef080f7ac5d1f357d723ad4dfca782733b62db"
        );
    }
}
