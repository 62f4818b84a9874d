//! Backfills: a customer's time range in which events older than the
//! backfill window are accepted, for a limited time (an operator decision,
//! kept for audit: `backfill.opened` and `backfill.closed` in ingest's audit
//! chain, in the change's transaction). The SQL is in [`store`].

mod store;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tally_audit::{Entry, Origin, Schema};
use tally_domain::ids::{BackfillId, CustomerId};
use tally_proto::common::TimeRange;
use tally_proto::ingest::Backfill;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::idempotency::fingerprint;

use store::BackfillRow;
pub use store::open_windows;

/// A backfill request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackfill {
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The customer.
    pub customer_id: CustomerId,
    /// Range start (inclusive).
    pub start: DateTime<Utc>,
    /// Range end (exclusive).
    pub end: DateTime<Utc>,
    /// How long it stays open.
    pub duration: chrono::Duration,
    /// Why.
    pub reason: String,
}

impl NewBackfill {
    /// The request's fingerprint (`ingest.backfills.request_hash`, the runtime's one
    /// framing, which backfills always stored).
    fn request_hash(&self) -> Vec<u8> {
        let parts = [
            self.customer_id.as_str(),
            &self.start.to_rfc3339(),
            &self.end.to_rfc3339(),
            &self.duration.num_seconds().to_string(),
            self.reason.as_str(),
        ];
        fingerprint(parts.iter().map(|part| part.as_bytes()))
            .as_bytes()
            .to_vec()
    }
}

/// Why a backfill call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The idempotency key was used for a different request.
    #[error("idempotency key {0:?} was already used for a different backfill request")]
    IdempotencyConflict(String),
    /// No such backfill.
    #[error("backfill {0:?} does not exist")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The audit entry could not be written (the change rolled back).
    #[error(transparent)]
    Audit(#[from] tally_audit::AuditError),
}

/// Who opens or closes a backfill, and the ids of their audit entries.
#[derive(Debug)]
pub struct Audit<'a> {
    /// The caller.
    pub origin: Origin,
    /// Mints the entries' ids.
    pub ids: &'a dyn tally_runtime::ids::IdGenerator,
}

/// What the audit log keeps of a backfill (all of it: no secret in it).
fn state(row: &BackfillRow) -> Value {
    let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let (id, customer_id, start, end, reason, opened_at, expires_at, closed_at) = row;
    json!({
        "id": id,
        "customer_id": customer_id,
        "start_time": time(start),
        "end_time": time(end),
        "reason": reason,
        "opened_at": time(opened_at),
        "expires_at": time(expires_at),
        "closed_at": closed_at.as_ref().map(time),
    })
}

/// Opens a backfill, or returns the one opened earlier with the same key and
/// request. A backfill opened records `backfill.opened` by `audit`'s origin
/// (the request's reason, the backfill after) in the same transaction; a
/// replay records nothing.
pub async fn open(
    pool: &PgPool,
    id: BackfillId,
    request: &NewBackfill,
    now: DateTime<Utc>,
    audit: &Audit<'_>,
) -> Result<Backfill, BackfillError> {
    let hash = request.request_hash();
    let mut transaction = pool.begin().await?;
    if let Some(row) = store::insert(&mut transaction, &id, request, &hash, now).await? {
        let entry = Entry::minted(
            audit.ids,
            now,
            "backfill.opened",
            ("backfill", id.as_str()),
            &audit.origin,
        )
        .reason(request.reason.clone())
        .after(state(&row));
        tally_audit::record(&mut transaction, Schema::Ingest, entry).await?;
        transaction.commit().await?;
        return Ok(to_proto(row));
    }
    transaction.rollback().await?;
    let (stored_hash, row) = store::by_key(pool, &request.idempotency_key).await?;
    if stored_hash != hash {
        return Err(BackfillError::IdempotencyConflict(
            request.idempotency_key.clone(),
        ));
    }
    Ok(to_proto(row))
}

/// Closes a backfill (idempotent: closing a closed one returns it
/// unchanged). Closing an open one records `backfill.closed` by `audit`'s
/// origin, with the backfill before and after, in the same transaction.
pub async fn close(
    pool: &PgPool,
    id: &BackfillId,
    now: DateTime<Utc>,
    audit: &Audit<'_>,
) -> Result<Backfill, BackfillError> {
    let mut transaction = pool.begin().await?;
    let Some(before) = store::lock(&mut transaction, id).await? else {
        return Err(BackfillError::NotFound(id.to_string()));
    };
    let after = store::close(&mut transaction, id, now)
        .await?
        .ok_or_else(|| BackfillError::NotFound(id.to_string()))?;
    if after != before {
        let entry = Entry::minted(
            audit.ids,
            now,
            "backfill.closed",
            ("backfill", id.as_str()),
            &audit.origin,
        )
        .before(state(&before))
        .after(state(&after));
        tally_audit::record(&mut transaction, Schema::Ingest, entry).await?;
    }
    transaction.commit().await?;
    Ok(to_proto(after))
}

/// A page of backfills, newest first; `after` is the last id of the previous page.
pub async fn list(
    pool: &PgPool,
    customer_id: Option<&str>,
    open_only: bool,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Backfill>, sqlx::Error> {
    let rows = store::list(pool, customer_id, open_only, now, after, limit).await?;
    Ok(rows.into_iter().map(to_proto).collect())
}

fn to_proto(row: BackfillRow) -> Backfill {
    let (id, customer_id, start, end, reason, opened_at, expires_at, closed_at) = row;
    Backfill {
        id,
        customer_id,
        event_time_range: Some(TimeRange {
            start_time: Some(chrono_to_timestamp(start)),
            end_time: Some(chrono_to_timestamp(end)),
        }),
        reason,
        opened_at: Some(chrono_to_timestamp(opened_at)),
        expires_at: Some(chrono_to_timestamp(expires_at)),
        closed_at: closed_at.map(chrono_to_timestamp),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// `ingest.backfills.request_hash` is stored: the same request gives these exact
    /// bytes forever (a retry of an open backfill is recognised across upgrades).
    #[test]
    fn a_backfill_request_has_the_hash_stored_before() {
        let request = NewBackfill {
            idempotency_key: "k".into(),
            customer_id: CustomerId::parse("cus_1").unwrap(),
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
            duration: chrono::Duration::hours(1),
            reason: "late data".into(),
        };
        let hex: String = request
            .request_hash()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            hex,
            "2394f947965c491f8e4ce09d017dfd70529dee729074e28b97256cc460896a53"
        );
    }
}
