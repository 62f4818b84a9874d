//! Who bills a customer (`CustomerService.SetBillingMode`): Tally, or an
//! external billing system while connectors moves the customer over
//! (docs/architecture.md, "Connectors: billing system of record").
//!
//! The rule: an invoice of a held customer's boundary is a draft that is
//! never finalized, numbered or collected — its grace period ends at
//! [`held_until`], so no bill run finalizes it, and `FinalizeInvoice`
//! refuses it. Everything else about it is ordinary: it is composed,
//! refreshed with late usage and readable, which is what shadow billing
//! compares. Changes come with a version from connectors and are applied
//! only when newer, so a repeat or a late retry changes nothing.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use tally_audit::Origin;
use tally_domain::ids::CustomerId;
use tally_proto::invoicing::{SetBillingModeRequest, SetBillingModeResponse};

use super::Customers;
use super::store::billing_modes::{self, StoredMode};
use crate::error::{InvoicingError, Result};
use crate::wire::{instant, timestamp};

/// When a held draft's grace ends: never, in practice (9999-12-31).
pub fn held_until() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether the invoice of `boundary` of `customer_id` is held.
pub(crate) async fn held(
    connection: &mut PgConnection,
    customer_id: &str,
    boundary: DateTime<Utc>,
) -> Result<bool> {
    Ok(billing_modes::get(connection, customer_id, false)
        .await?
        .is_some_and(|mode| mode.tally_bills_after.is_none_or(|after| boundary <= after)))
}

/// The grace of the invoice of `boundary`: `grace`, or until
/// [`held_until`] when the customer's invoice of that boundary is held.
pub(crate) async fn grace_for(
    connection: &mut PgConnection,
    customer_id: &str,
    boundary: DateTime<Utc>,
    grace: Duration,
) -> Result<Duration> {
    if held(connection, customer_id, boundary).await? {
        return Ok(held_until() - boundary);
    }
    Ok(grace)
}

impl Customers<'_> {
    pub(crate) async fn set_billing_mode(
        &self,
        request: SetBillingModeRequest,
        origin: &Origin,
    ) -> Result<SetBillingModeResponse> {
        tally_proto::convert::id::<CustomerId>(&request.customer_id, "customer_id")?;
        if request.version < 1 {
            return Err(InvoicingError::invalid("version", "must be at least 1"));
        }
        let tally_bills_after = instant(request.tally_bills_after.as_ref());
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        super::load(&mut transaction, &request.customer_id, true).await?;
        let stored = billing_modes::get(&mut transaction, &request.customer_id, true).await?;
        if let Some(stored) = stored.filter(|stored| stored.version >= request.version) {
            return Ok(SetBillingModeResponse {
                tally_bills_after: stored.tally_bills_after.map(timestamp),
                version: stored.version,
                applied: false,
                drafts_held: 0,
            });
        }
        let mode = StoredMode {
            tally_bills_after,
            version: request.version,
        };
        billing_modes::set(&mut transaction, &request.customer_id, mode, now).await?;
        let held = billing_modes::hold_drafts(
            &mut transaction,
            &request.customer_id,
            tally_bills_after,
            held_until(),
        )
        .await?;
        let entry = self
            .audit_entry(
                now,
                "customer.billing_mode_set",
                ("customer", &request.customer_id),
                origin,
            )
            .comment(format!("{held} drafts held"))
            .after(mode_json(Some(mode)));
        let entry = match stored {
            Some(stored) => entry.before(mode_json(Some(stored))),
            None => entry.before(mode_json(None)),
        };
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(SetBillingModeResponse {
            tally_bills_after: tally_bills_after.map(timestamp),
            version: request.version,
            applied: true,
            drafts_held: i64::try_from(held).unwrap_or(i64::MAX),
        })
    }
}

fn mode_json(mode: Option<StoredMode>) -> serde_json::Value {
    match mode {
        None => serde_json::json!({"billed_by": "tally"}),
        Some(StoredMode {
            tally_bills_after: None,
            version,
        }) => serde_json::json!({"billed_by": "external", "version": version}),
        Some(StoredMode {
            tally_bills_after: Some(after),
            version,
        }) => serde_json::json!({
            "billed_by": "tally",
            "tally_bills_after": after.to_rfc3339(),
            "version": version,
        }),
    }
}
