//! A voided invoice: voided in Stripe, its payment canceled and the
//! receivable reversed.

use tally_domain::ledger::{Fact, Posted};
use tally_proto::events::InvoiceEvent;

use crate::error::PaymentsError;
use crate::ledger;
use crate::store::{self, PaymentKey, PaymentState, record_inbox};

use super::InvoiceEventsHandler;
use super::store::{self as collect_store, InvoiceState};

impl InvoiceEventsHandler {
    /// Voids the Stripe invoice and cancels the payment.
    pub(super) async fn voided(
        &self,
        message_id: &str,
        event: &InvoiceEvent,
    ) -> Result<(), PaymentsError> {
        let version = event.invoice.as_ref().map_or(0, |invoice| {
            i64::try_from(invoice.version).unwrap_or(i64::MAX)
        });
        let row = collect_store::invoice_state(&self.core.pool, &event.invoice_id).await?;
        let Some(InvoiceState {
            version: held_version,
            status,
            stripe_invoice_id,
        }) = row
        else {
            // Never finalized here: nothing was sent to Stripe.
            return self.record_only(message_id).await;
        };
        if held_version > version {
            return self.record_only(message_id).await;
        }
        if let Some(stripe_invoice_id) = &stripe_invoice_id
            && matches!(status.as_str(), "open" | "syncing")
        {
            match self
                .core
                .stripe
                .void_invoice(&event.invoice_id, stripe_invoice_id)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_transient() => return Err(error.into()),
                Err(error) => {
                    tracing::error!(invoice_id = %event.invoice_id, %error, "Stripe refused to void the invoice");
                }
            }
        }
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        let Some(mut payment) = store::payment(
            &mut transaction,
            PaymentKey::Invoice(&event.invoice_id),
            true,
        )
        .await?
        else {
            transaction.commit().await?;
            return Ok(());
        };
        if !payment.status.is_collectible() {
            tracing::warn!(invoice_id = %event.invoice_id, status = payment.status.as_str(), "voided invoice was already settled; left as is");
            transaction.commit().await?;
            return Ok(());
        }
        payment.status = PaymentState::Canceled;
        payment.next_retry_at = None;
        payment.updated_at = now;
        store::update_payment(&mut transaction, &payment).await?;
        collect_store::mark_void(&mut transaction, &event.invoice_id, version, now).await?;
        let finalized_id =
            ledger::transaction_id(&Fact::InvoiceFinalized(event.invoice_id.clone()));
        if let Some(finalized) = ledger::find(&mut transaction, &finalized_id).await? {
            let reversal = finalized.reversal(
                ledger::transaction_id(&Fact::InvoiceVoided(event.invoice_id.clone())),
                now,
            );
            let posted = ledger::post(&mut transaction, &reversal, now).await?;
            debug_assert!(matches!(posted, Posted::Recorded | Posted::AlreadyRecorded));
        }
        transaction.commit().await?;
        Ok(())
    }
}
