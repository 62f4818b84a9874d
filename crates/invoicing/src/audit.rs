//! Invoicing's audit entries (chain `invoicing`): what a void, a credit note
//! or a finalization looked like before and after, written by
//! `tally_audit::record` in the change's transaction, as its last statement
//! (the chain-head lock is then held only until the commit, and taken after
//! every other lock, so it cannot deadlock with them).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgConnection;
use tally_audit::{Entry, Origin, Schema};
use tally_proto::events::{PaymentEvent, payment_event};
use tally_proto::invoicing::{self as proto, CreditNoteReason};

use crate::Shared;
use crate::billing::store::{self, InvoiceRow};
use crate::error::{InvoicingError, Result};
use crate::wire::money;

/// The actor of the bill run's finalizations.
pub(crate) const BILL_RUN: &str = "bill_run";

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the audit log keeps of an invoice: its state and money, no lines.
pub(crate) fn invoice_state(row: &InvoiceRow) -> Value {
    // Amounts as the API shows them (padded to the currency's minor units),
    // whatever scale the column happens to hold.
    let amount = |value: Decimal| match row.currency() {
        Ok(currency) => money(value, currency).amount,
        Err(_) => value.to_string(),
    };
    json!({
        "id": row.id,
        "customer_id": row.customer_id,
        "subscription_id": row.subscription_id,
        "status": row.status,
        "number": row.number,
        "currency": row.currency,
        "period_start": time(row.period_start),
        "period_end": time(row.period_end),
        "subtotal": amount(row.subtotal),
        "credits_applied": amount(row.credits_applied),
        "total": amount(row.total),
        "amount_paid": amount(row.amount_paid),
        "amount_credited": amount(row.amount_credited),
        "due_at": row.due_at.map(time),
        "finalized_at": row.finalized_at.map(time),
        "voided_at": row.voided_at.map(time),
        "void_reason": row.void_reason,
        "version": row.version,
    })
}

/// What the audit log keeps of a credit note.
pub(crate) fn credit_note_state(note: &proto::CreditNote) -> Value {
    let money = |value: &Option<tally_proto::common::Money>| {
        value.as_ref().map(|money| {
            json!({
                "amount": money.amount,
                "currency": money.currency,
            })
        })
    };
    json!({
        "id": note.id,
        "number": note.number,
        "invoice_id": note.invoice_id,
        "customer_id": note.customer_id,
        "reason": reason_name(note.reason),
        "memo": note.memo,
        "lines": note.lines.iter().map(|line| json!({
            "invoice_line_id": line.invoice_line_id,
            "description": line.description,
            "amount": money(&line.amount),
        })).collect::<Vec<_>>(),
        "total": money(&note.total),
        "credited_to_balance": note.credited_to_balance,
        "refund_id": note.refund_id,
        "refund_amount": money(&note.refund_amount),
    })
}

/// What the audit log keeps of a subscription: its plan, status and dates.
pub(crate) fn subscription_state(subscription: &proto::Subscription) -> Value {
    let instant =
        |value: &Option<prost_types::Timestamp>| crate::wire::instant(value.as_ref()).map(time);
    json!({
        "id": subscription.id,
        "customer_id": subscription.customer_id,
        "plan_id": subscription.plan_id,
        "plan_version_id": subscription.plan_version_id,
        "status": proto::SubscriptionStatus::try_from(subscription.status).map_or_else(
            |_| subscription.status.to_string(),
            |status| status.as_str_name().to_owned()
        ),
        "currency": subscription.currency,
        "start_at": instant(&subscription.start_at),
        "trial_end_at": instant(&subscription.trial_end_at),
        "cancel_at": instant(&subscription.cancel_at),
        "canceled_at": instant(&subscription.canceled_at),
        "ended_at": instant(&subscription.ended_at),
        "pause": subscription.pause.as_ref().map(|pause| json!({
            "pause_at": instant(&pause.pause_at),
            "resume_at": instant(&pause.resume_at),
        })),
        "version": subscription.version,
    })
}

/// What the audit log keeps of a customer: how it is billed, not its
/// personal data (email, address and tax id stay out of the append-only log;
/// an update's entry names the fields it changed).
pub(crate) fn customer_state(customer: &proto::Customer) -> Value {
    json!({
        "id": customer.id,
        "external_id": customer.external_id,
        "name": customer.name,
        "currency": customer.currency,
        "status": proto::CustomerStatus::try_from(customer.status)
            .map_or_else(|_| customer.status.to_string(), |status| status.as_str_name().to_owned()),
        "collection_mode": proto::CollectionMode::try_from(customer.collection_mode)
            .map_or_else(|_| customer.collection_mode.to_string(), |mode| mode.as_str_name().to_owned()),
        "net_terms_days": customer.net_terms_days,
        "metadata_keys": customer.metadata.keys().collect::<std::collections::BTreeSet<_>>(),
    })
}

/// What the audit log keeps of a credit grant.
pub(crate) fn credit_grant_state(grant: &proto::CreditGrant) -> Value {
    let money = |value: &Option<tally_proto::common::Money>| {
        value
            .as_ref()
            .map(|money| json!({ "amount": money.amount, "currency": money.currency }))
    };
    let instant =
        |value: &Option<prost_types::Timestamp>| crate::wire::instant(value.as_ref()).map(time);
    json!({
        "id": grant.id,
        "customer_id": grant.customer_id,
        "kind": proto::CreditGrantKind::try_from(grant.kind)
            .map_or_else(|_| grant.kind.to_string(), |kind| kind.as_str_name().to_owned()),
        "status": proto::CreditGrantStatus::try_from(grant.status)
            .map_or_else(|_| grant.status.to_string(), |status| status.as_str_name().to_owned()),
        "amount": money(&grant.amount),
        "remaining": money(&grant.remaining),
        "priority": grant.priority,
        "effective_at": instant(&grant.effective_at),
        "expires_at": instant(&grant.expires_at),
        "description": grant.description,
    })
}

/// `duplicate`, `fraudulent`, … (the enum's name without its prefix).
pub(crate) fn reason_name(reason: i32) -> String {
    CreditNoteReason::try_from(reason)
        .map(|reason| {
            reason
                .as_str_name()
                .trim_start_matches("CREDIT_NOTE_REASON_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| reason.to_string())
}

impl Shared {
    /// A new entry with an `aud_…` id from the service's generator.
    pub(crate) fn audit_entry(
        &self,
        now: DateTime<Utc>,
        action: &str,
        resource: (&str, &str),
        origin: &Origin,
    ) -> Entry {
        Entry::minted(&*self.ids, now, action, resource, origin)
    }

    /// Appends `entry` to invoicing's chain in the caller's transaction.
    pub(crate) async fn audit(&self, connection: &mut PgConnection, entry: Entry) -> Result<()> {
        tally_audit::record(connection, Schema::Invoicing, entry)
            .await
            .map_err(InvoicingError::internal)?;
        Ok(())
    }

    /// After payment event `event` (applied under `key`) changed its invoice
    /// from `before`: `invoice.<event kind>` (`invoice.payment_succeeded`,
    /// `invoice.uncollectible`, `invoice.refunded`, …) by
    /// `payment_event:<key>`, the payment and refund ids as comment. Nothing
    /// when the invoice did not change (a failed payment moves only the
    /// subscription).
    pub(crate) async fn audit_payment_event(
        &self,
        connection: &mut PgConnection,
        event: &PaymentEvent,
        key: &str,
        before: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let row = store::load(&mut *connection, &event.invoice_id, false).await?;
        let after = invoice_state(&row);
        if after == before {
            return Ok(());
        }
        let (kind, refund_id) = match &event.kind {
            Some(payment_event::Kind::Succeeded(_)) => ("payment_succeeded", ""),
            Some(payment_event::Kind::Failed(_)) => ("payment_failed", ""),
            Some(payment_event::Kind::Uncollectible(_)) => ("uncollectible", ""),
            Some(payment_event::Kind::Refunded(refunded)) => {
                ("refunded", refunded.refund_id.as_str())
            }
            Some(payment_event::Kind::RefundFailed(failed)) => {
                ("refund_failed", failed.refund_id.as_str())
            }
            Some(payment_event::Kind::DisputeCreated(_)) => ("disputed", ""),
            Some(payment_event::Kind::DunningStep(_)) => ("dunning_step", ""),
            None => ("changed", ""),
        };
        let payment_id = event
            .payment
            .as_ref()
            .map_or("", |payment| payment.id.as_str());
        let comment = [("payment", payment_id), ("refund", refund_id)]
            .iter()
            .filter(|(_, id)| !id.is_empty())
            .map(|(name, id)| format!("{name} {id}"))
            .collect::<Vec<_>>()
            .join(", ");
        let origin = Origin::system(format!("payment_event:{key}"));
        let entry = self
            .audit_entry(
                now,
                &format!("invoice.{kind}"),
                ("invoice", &row.id),
                &origin,
            )
            .comment(comment)
            .before(before)
            .after(after);
        self.audit(connection, entry).await
    }

    /// `subscription.<action>` for a change by `origin`: the subscription
    /// `before` (none when created) and `after` it.
    pub(crate) async fn audit_subscription(
        &self,
        connection: &mut PgConnection,
        (action, reason): (&str, &str),
        before: Option<&proto::Subscription>,
        after: &proto::Subscription,
        (origin, now): (&Origin, DateTime<Utc>),
    ) -> Result<()> {
        let mut entry = self
            .audit_entry(
                now,
                &format!("subscription.{action}"),
                ("subscription", &after.id),
                origin,
            )
            .reason(reason)
            .after(subscription_state(after));
        if let Some(before) = before {
            entry = entry.before(subscription_state(before));
        }
        self.audit(connection, entry).await
    }

    /// `invoice.created` by the bill run for a draft it just inserted with
    /// `lines` lines: the draft after (nothing before it).
    pub(crate) fn created_entry(
        &self,
        row: &InvoiceRow,
        lines: usize,
        now: DateTime<Utc>,
        origin: &Origin,
    ) -> Entry {
        self.audit_entry(now, "invoice.created", ("invoice", &row.id), origin)
            .comment(format!("{lines} lines"))
            .after(invoice_state(row))
    }

    /// `entries` appended in one go (nothing when there are none).
    pub(crate) async fn audit_all(
        &self,
        connection: &mut PgConnection,
        entries: Vec<Entry>,
    ) -> Result<()> {
        // Three statements whatever the number of entries.
        tally_audit::record_many(connection, Schema::Invoicing, entries)
            .await
            .map_err(InvoicingError::internal)?;
        Ok(())
    }

    /// `created` (entries made before), then `invoice.finalized` for each of
    /// `finalized` (rows as they are now) with the rows `before` them (by
    /// id), in one append.
    pub(crate) async fn audit_finalized(
        &self,
        connection: &mut PgConnection,
        mut created: Vec<Entry>,
        (before, finalized): (&HashMap<String, Value>, &[InvoiceRow]),
        now: DateTime<Utc>,
        origin: &Origin,
    ) -> Result<()> {
        created.extend(finalized.iter().map(|row| {
            let entry = self
                .audit_entry(now, "invoice.finalized", ("invoice", &row.id), origin)
                .after(invoice_state(row));
            match before.get(&row.id) {
                Some(state) => entry.before(state.clone()),
                None => entry,
            }
        }));
        // One append for the whole batch: three statements, not three per invoice.
        self.audit_all(connection, created).await
    }
}

/// The audit states of invoices `ids` as they are now, by id.
pub(crate) async fn invoice_states(
    connection: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, Value>> {
    let mut states = HashMap::with_capacity(ids.len());
    for row in store::load_many(connection, ids).await? {
        states.insert(row.id.clone(), invoice_state(&row));
    }
    Ok(states)
}
