//! The catalog's audit entries (rating's chain; docs/architecture.md, "Audit
//! log"): every change — a meter or plan created, a draft created, updated or
//! deleted, a plan deleted, a version published — records one entry as the
//! last statement of its transaction, with the state the catalog keeps of the
//! resource before and after. Replays and refusals record nothing.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::Digest as _;
use sqlx::PgConnection;
use tally_audit::{Entry, Origin, Schema};
use tally_runtime::ids::IdGenerator;

use super::error::CatalogError;
use super::store::{Created, MeterRow, PlanRow, VersionRow};

/// Who changes the catalog, and when: what every entry of one call shares.
pub(super) struct Change<'a> {
    /// Mints the entry's `aud_…` id.
    pub ids: &'a dyn IdGenerator,
    /// The change's time (the service clock).
    pub now: DateTime<Utc>,
    /// The caller.
    pub origin: &'a Origin,
}

impl Change<'_> {
    /// Appends `action` on `resource` to rating's chain on `connection` (the
    /// change's transaction; call it last: the chain's lock after every other).
    pub async fn record(
        &self,
        connection: &mut PgConnection,
        action: &str,
        resource: (&str, &str),
        (before, after): (Option<Value>, Option<Value>),
    ) -> Result<(), CatalogError> {
        let mut entry = Entry::minted(self.ids, self.now, action, resource, self.origin);
        entry.before = before;
        entry.after = after;
        tally_audit::record(connection, Schema::Rating, entry).await?;
        Ok(())
    }

    /// Records `action` on the `resource_type` `created` made, when this
    /// call made it (a replay or a conflict changed nothing); `state` gives
    /// its id and state.
    pub async fn created<T>(
        &self,
        connection: &mut PgConnection,
        created: &Created<T>,
        (action, resource_type): (&str, &str),
        state: impl Fn(&T) -> (String, Value),
    ) -> Result<(), CatalogError> {
        if let Created::New(row) = created {
            let (id, after) = state(row);
            let states = (None, Some(after));
            self.record(connection, action, (resource_type, &id), states)
                .await?;
        }
        Ok(())
    }
}

/// What the audit log keeps of a meter: its identity and definition.
pub(super) fn meter_state(row: &MeterRow) -> Value {
    json!({
        "id": row.id,
        "code": row.spec.0.code().as_str(),
        "name": row.name,
        "unit": row.unit,
        "definition": serde_json::to_value(&row.spec.0).unwrap_or(Value::Null),
    })
}

/// What the audit log keeps of a plan: its identity and attributes.
pub(super) fn plan_state(row: &PlanRow) -> Value {
    json!({
        "id": row.id,
        "code": row.code,
        "name": row.name,
        "description": row.description,
        "metadata": row.metadata.0,
    })
}

/// What the audit log keeps of a plan version: identity, status and a
/// digest of its spec (the spec itself is in the catalog, immutable once
/// published).
pub(super) fn version_state(row: &VersionRow) -> Value {
    json!({
        "id": row.id,
        "plan_id": row.plan_id,
        "version": row.version,
        "status": row.status,
        "revision": row.revision,
        "spec_sha256": hex_digest(&sha2::Sha256::digest(&row.content)),
    })
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
