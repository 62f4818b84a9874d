//! Payments' audit entries (chain `payments`): a refund requested and a
//! payment refunded through the API, and a payment changed by a Stripe
//! webhook (by `stripe_webhook:<event id>`), with the payment before and
//! after. Written by
//! `tally_audit::record` as the last statement of the change's transaction
//! (the chain-head lock is then taken after every other lock and held only
//! until the commit).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tally_audit::{Entry, Origin, Schema};

use crate::core::Core;
use crate::error::PaymentsError;
use crate::store::{self, PaymentKey, PaymentRow, PaymentState};
use tally_domain::money::Money;

/// What the audit log keeps of a payment (ids, amounts, status; never
/// card data, which Tally never holds).
pub(crate) fn payment_state(payment: &PaymentRow) -> Value {
    json!({
        "id": payment.id,
        "invoice_id": payment.invoice_id,
        "customer_id": payment.customer_id,
        "currency": payment.amount.currency().code(),
        "amount": payment.amount.amount().to_string(),
        "amount_refunded": payment.amount_refunded.amount().to_string(),
        "status": payment.status.as_str(),
        "stripe_charge_id": payment.stripe_charge_id,
    })
}

/// Appends `entry` to payments' chain in the caller's transaction.
pub(crate) async fn record(
    connection: &mut PgConnection,
    entry: Entry,
) -> Result<(), PaymentsError> {
    tally_audit::record(connection, Schema::Payments, entry).await?;
    Ok(())
}

/// A payment as it was before a webhook's changes.
pub(crate) struct PaymentBefore {
    state: Value,
    status: PaymentState,
    refunded: Money,
}

impl PaymentBefore {
    pub(crate) fn of(payment: &PaymentRow) -> Self {
        Self {
            state: payment_state(payment),
            status: payment.status,
            refunded: payment.amount_refunded,
        }
    }
}

/// After Stripe event `event_id` (`event_type`) was applied to payment
/// `payment_id`: `payment.refunded` when a refund was recorded, else
/// `payment.<new status>`, by `stripe_webhook:<event id>`, with the payment
/// before and after. Nothing when the event changed nothing. Runs last in
/// the webhook's transaction (only the event's own `webhook_events` row is
/// written after it).
pub(crate) async fn record_webhook_change(
    connection: &mut PgConnection,
    core: &Core,
    (event_id, event_type): (&str, &str),
    payment_id: &str,
    before: PaymentBefore,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    let Some(payment) = store::payment(&mut *connection, PaymentKey::Id(payment_id), false).await?
    else {
        return Ok(());
    };
    let after = payment_state(&payment);
    if after == before.state {
        return Ok(());
    }
    let action = if payment.amount_refunded != before.refunded {
        "payment.refunded".to_owned()
    } else if payment.status != before.status {
        format!("payment.{}", payment.status.as_str())
    } else {
        "payment.updated".to_owned()
    };
    let origin = Origin::system(format!("stripe_webhook:{event_id}"));
    let entry = Entry::minted(&*core.ids, now, &action, ("payment", payment_id), &origin)
        .comment(event_type)
        .before(before.state)
        .after(after);
    record(connection, entry).await
}

/// The job that mirrors a finalized invoice to Stripe and collects it (the
/// `invoice-events` consumer).
pub(crate) const COLLECTION: &str = "collection";

/// An invoice Stripe has just finalized as its mirror.
pub(crate) struct SentToStripe<'a> {
    pub(crate) invoice_id: &'a str,
    pub(crate) stripe_invoice_id: &'a str,
    pub(crate) amount_due: Money,
    pub(crate) items: usize,
}

/// `invoice.sent_to_stripe` by `collection`, in the transaction that moves
/// the mirrored invoice from `syncing` to `open` (once: a redelivery finds it
/// open and records nothing): the mirror before and after, the Stripe
/// invoice id as comment.
pub(crate) async fn record_sent_to_stripe(
    connection: &mut PgConnection,
    core: &Core,
    sent: &SentToStripe<'_>,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    let state = |status: &str| {
        json!({
            "invoice_id": sent.invoice_id,
            "status": status,
            "stripe_invoice_id": sent.stripe_invoice_id,
            "currency": sent.amount_due.currency().code(),
            "amount_due": sent.amount_due.amount().to_string(),
            "items": sent.items,
        })
    };
    let origin = Origin::system(COLLECTION);
    let entry = Entry::minted(
        &*core.ids,
        now,
        "invoice.sent_to_stripe",
        ("invoice", sent.invoice_id),
        &origin,
    )
    .comment(format!("Stripe invoice {}", sent.stripe_invoice_id))
    .before(state("syncing"))
    .after(state("open"));
    record(connection, entry).await
}

/// `payment.collection_attempted` by `collection` after the first charge of
/// a finalized invoice (`charge_automatically`), in the transaction that
/// records its outcome: the payment `before` and as it is now, the attempt
/// and the status after as comment.
pub(crate) async fn record_first_attempt(
    connection: &mut PgConnection,
    core: &Core,
    payment: &PaymentRow,
    before: Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    let origin = Origin::system(COLLECTION);
    let entry = Entry::minted(
        &*core.ids,
        now,
        "payment.collection_attempted",
        ("payment", &payment.id),
        &origin,
    )
    .comment(format!(
        "attempt {}: {}",
        payment.attempt_count,
        payment.status.as_str()
    ))
    .before(before)
    .after(payment_state(payment));
    record(connection, entry).await
}

/// After dunning took `action` on `payment` (step `payment.dunning_step`):
/// `payment.dunning_retried` (the outcome is the status after) or
/// `payment.dunning_gave_up`, by `dunning`, with the payment before and after.
pub(crate) async fn record_dunning_step(
    connection: &mut PgConnection,
    core: &Core,
    (action, payment): (crate::core::DunningAction, &PaymentRow),
    before: Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    let name = match action {
        crate::core::DunningAction::Retry => "payment.dunning_retried",
        crate::core::DunningAction::GiveUp => "payment.dunning_gave_up",
    };
    let origin = Origin::system("dunning");
    let comment = format!(
        "step {}, attempt {}: {}",
        payment.dunning_step,
        payment.attempt_count,
        payment.status.as_str()
    );
    let entry = Entry::minted(&*core.ids, now, name, ("payment", &payment.id), &origin)
        .comment(comment)
        .before(before)
        .after(payment_state(payment));
    record(connection, entry).await
}
