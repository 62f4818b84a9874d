//! A finalized invoice: the invoice and payment rows are checkpointed, the
//! invoice mirrored (see `mirror`), and the first attempt (or the email)
//! recorded with the inbox entry; a mirror Stripe refuses for good fails the
//! payment.

use tally_bus::consumer::HandlerError;
use tally_domain::ids::PaymentId;
use tally_domain::ledger::Fact;
use tally_domain::money::Money;
use tally_proto::events::InvoiceEvent;

use crate::core::{AttemptOutcome, failed_attempt};
use crate::error::PaymentsError;
use crate::ledger::{self, Book};
use crate::metrics;
use crate::store::{self, PaymentKey, PaymentRow, PaymentState, record_inbox};
use crate::stripe::{Collection, StripeError};

use super::collectible::{Collectible, collectible};
use super::store::{self as collect_store, NewInvoice};
use super::{InvoiceEventsHandler, retry};

#[derive(Debug, Clone)]
struct InvoiceRow {
    status: String,
    stripe_invoice_id: Option<String>,
}

impl InvoiceEventsHandler {
    /// Mirrors and collects a finalized invoice.
    pub(super) async fn finalized(
        &self,
        message_id: &str,
        event: &InvoiceEvent,
        amount_due: Money,
    ) -> Result<(), HandlerError> {
        let collectible = collectible(event, amount_due).map_err(HandlerError::Poison)?;
        let Some(row) = self
            .checkpoint_invoice(&collectible, event)
            .await
            .map_err(retry)?
        else {
            // An older snapshot, or nothing to collect: recorded, done.
            return self.record_only(message_id).await.map_err(retry);
        };
        let mut stripe_invoice_id = row.stripe_invoice_id.clone();
        if row.status == "syncing" {
            match self.mirror(&collectible, stripe_invoice_id.clone()).await {
                Ok(id) => stripe_invoice_id = Some(id),
                Err(PaymentsError::Stripe(error)) if !error.is_transient() => {
                    self.sync_failed(message_id, &collectible, &error)
                        .await
                        .map_err(retry)?;
                    return Ok(());
                }
                Err(error) => return Err(retry(error)),
            }
        } else if row.status != "open" {
            // Paid, void, uncollectible or failed already: nothing to collect.
            return self.record_only(message_id).await.map_err(retry);
        }
        let Some(stripe_invoice_id) = stripe_invoice_id else {
            return Err(HandlerError::Retry(
                "the Stripe invoice id is missing".into(),
            ));
        };
        self.collect_first_time(message_id, &collectible, &stripe_invoice_id)
            .await
            .map_err(retry)
    }

    /// Writes the invoice and payment rows (once) and returns the invoice
    /// row, or `None` when the snapshot is older than the one held or there is
    /// nothing to collect.
    async fn checkpoint_invoice(
        &self,
        collectible: &Collectible,
        event: &InvoiceEvent,
    ) -> Result<Option<InvoiceRow>, PaymentsError> {
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        let existing =
            collect_store::lock_invoice_state(&mut transaction, &collectible.invoice_id).await?;
        if let Some(existing) = existing {
            if existing.version > collectible.version {
                return Ok(None);
            }
            return Ok(Some(InvoiceRow {
                status: existing.status,
                stripe_invoice_id: existing.stripe_invoice_id,
            }));
        }
        let nothing_due = collectible.amount_due.is_zero();
        let snapshot = event.invoice.as_ref().map(prost::Message::encode_to_vec);
        let snapshot = snapshot.unwrap_or_default();
        let invoice = NewInvoice {
            invoice_id: &collectible.invoice_id,
            customer_id: &collectible.customer.tally_customer_id,
            currency: collectible.currency.code(),
            amount_due: collectible.amount_due.amount(),
            collection_mode: match collectible.collection {
                Collection::ChargeAutomatically => "charge_automatically",
                Collection::SendInvoice { .. } => "send_invoice",
            },
            net_terms_days: i32::try_from(collectible.net_terms_days).unwrap_or(i32::MAX),
            version: collectible.version,
            status: if nothing_due {
                "nothing_due"
            } else {
                "syncing"
            },
            snapshot: &snapshot,
        };
        collect_store::insert_invoice(&mut transaction, invoice, now).await?;
        if nothing_due {
            transaction.commit().await?;
            return Ok(None);
        }
        let payment = PaymentRow {
            id: self.core.ids.mint::<PaymentId>().into(),
            invoice_id: collectible.invoice_id.clone(),
            customer_id: collectible.customer.tally_customer_id.clone(),
            amount: collectible.amount_due,
            amount_refunded: Money::zero(collectible.currency),
            status: PaymentState::Pending,
            stripe_invoice_id: None,
            stripe_payment_intent_id: None,
            stripe_charge_id: None,
            attempt_count: 0,
            first_failed_at: None,
            next_retry_at: None,
            dunning_step: 0,
            created_at: now,
            updated_at: now,
        };
        store::insert_payment(&mut transaction, &payment).await?;
        let receivable = ledger::transfer(
            &Fact::InvoiceFinalized(collectible.invoice_id.clone()),
            now,
            Book::Receivable,
            Book::Invoiced,
            collectible.amount_due,
        )?;
        ledger::post(&mut transaction, &receivable, now).await?;
        transaction.commit().await?;
        Ok(Some(InvoiceRow {
            status: "syncing".into(),
            stripe_invoice_id: None,
        }))
    }

    /// Charges (or sends) the invoice the first time and records the
    /// outcome with the inbox entry.
    async fn collect_first_time(
        &self,
        message_id: &str,
        collectible: &Collectible,
        stripe_invoice_id: &str,
    ) -> Result<(), PaymentsError> {
        let current = {
            let mut connection = self.core.pool.acquire().await?;
            store::payment(
                &mut connection,
                PaymentKey::Invoice(&collectible.invoice_id),
                false,
            )
            .await?
        };
        let Some(current) = current else {
            return Err(PaymentsError::NotFound(format!(
                "payment of {}",
                collectible.invoice_id
            )));
        };
        let outcome = if current.attempt_count > 0 || !current.status.is_collectible() {
            None
        } else {
            match collectible.collection {
                Collection::ChargeAutomatically => Some(
                    self.core
                        .attempt_payment(&collectible.invoice_id, stripe_invoice_id, 1)
                        .await?,
                ),
                Collection::SendInvoice { .. } => {
                    let sent = self
                        .core
                        .stripe
                        .send_invoice(&collectible.invoice_id, stripe_invoice_id)
                        .await;
                    match sent {
                        Ok(_) => None,
                        Err(error) if error.is_transient() => return Err(error.into()),
                        // E.g. no email address: recorded, not retried.
                        Err(error) => {
                            return self.sync_failed(message_id, collectible, &error).await;
                        }
                    }
                }
            }
        };
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        if let Some(outcome) = outcome {
            let Some(mut payment) = store::payment(
                &mut transaction,
                PaymentKey::Invoice(&collectible.invoice_id),
                true,
            )
            .await?
            else {
                return Err(PaymentsError::NotFound(collectible.invoice_id.clone()));
            };
            if payment.attempt_count == 0 {
                let before = crate::audit::payment_state(&payment);
                self.core
                    .apply_attempt(&mut transaction, &mut payment, 1, &outcome, now)
                    .await?;
                crate::audit::record_first_attempt(
                    &mut transaction,
                    &self.core,
                    &payment,
                    before,
                    now,
                )
                .await?;
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Stripe refused the mirror for good: the payment fails (no dunning:
    /// retrying the same request cannot help) and the reason is kept.
    async fn sync_failed(
        &self,
        message_id: &str,
        collectible: &Collectible,
        error: &StripeError,
    ) -> Result<(), PaymentsError> {
        metrics::sync_failed();
        tracing::error!(invoice_id = %collectible.invoice_id, %error, "Stripe refused to mirror the invoice");
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if !record_inbox(&mut transaction, message_id).await? {
            return Ok(());
        }
        collect_store::mark_sync_failed(
            &mut transaction,
            &collectible.invoice_id,
            &error.to_string(),
            now,
        )
        .await?;
        if let Some(mut payment) = store::payment(
            &mut transaction,
            PaymentKey::Invoice(&collectible.invoice_id),
            true,
        )
        .await?
        {
            let number = payment.attempt_count + 1;
            let mut outcome = failed_attempt(error);
            if let AttemptOutcome::Failed { code, .. } = &mut outcome {
                *code = format!("sync_failed:{code}");
            }
            self.core
                .apply_attempt(&mut transaction, &mut payment, number, &outcome, now)
                .await?;
            // No dunning for a refused mirror: the same request would be refused again.
            payment.next_retry_at = None;
            store::update_payment(&mut transaction, &payment).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
