//! Payments' audit entries (chain `payments`): a refund requested and a
//! payment refunded, with the payment before and after. Written by
//! `tally_audit::record` as the last statement of the change's transaction
//! (the chain-head lock is then taken after every other lock and held only
//! until the commit).

use serde_json::{Value, json};
use sqlx::PgConnection;
use tally_audit::{Entry, Schema};

use crate::error::PaymentsError;
use crate::store::PaymentRow;

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
