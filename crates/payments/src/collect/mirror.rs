//! The Stripe side of a finalization: the customer (created or updated),
//! the draft invoice, its items and the finalization, each stored as soon as
//! Stripe returns it.

use sha2::{Digest, Sha256};

use crate::error::PaymentsError;
use crate::stripe::{CustomerDetails, StripeError};

use super::InvoiceEventsHandler;
use super::collectible::Collectible;
use super::store::{self, NewStripeCustomer, StripeCustomer};

impl InvoiceEventsHandler {
    /// Customer, invoice, items, finalization; returns the Stripe invoice id.
    pub(super) async fn mirror(
        &self,
        collectible: &Collectible,
        stripe_invoice_id: Option<String>,
    ) -> Result<String, PaymentsError> {
        let stripe_customer_id = self.ensure_customer(&collectible.customer).await?;
        let stripe_invoice_id = match stripe_invoice_id {
            Some(id) => id,
            None => {
                let created = self
                    .core
                    .stripe
                    .create_invoice(
                        &collectible.invoice_id,
                        &collectible.number,
                        &stripe_customer_id,
                        collectible.currency,
                        collectible.collection,
                    )
                    .await?;
                let mut transaction = self.core.pool.begin().await?;
                store::set_stripe_invoice(&mut transaction, &collectible.invoice_id, &created.id)
                    .await?;
                transaction.commit().await?;
                created.id
            }
        };
        let created_lines =
            store::created_item_lines(&self.core.pool, &collectible.invoice_id).await?;
        for item in &collectible.items {
            if created_lines.contains(&item.tally_line_id) {
                continue;
            }
            let item_id = self
                .core
                .stripe
                .create_invoice_item(&stripe_customer_id, &stripe_invoice_id, item)
                .await?;
            store::insert_item(
                &self.core.pool,
                &item.tally_line_id,
                &collectible.invoice_id,
                &item_id,
            )
            .await?;
        }
        let finalized = self
            .core
            .stripe
            .finalize_invoice(&collectible.invoice_id, &stripe_invoice_id)
            .await?;
        if finalized.amount_due != collectible.amount_due {
            // Never leave a wrong invoice collectible in Stripe: void it
            // first (best effort; reconciliation shows it if this fails).
            if let Err(error) = self
                .core
                .stripe
                .void_invoice(&collectible.invoice_id, &stripe_invoice_id)
                .await
            {
                tracing::error!(invoice_id = %collectible.invoice_id, %error, "could not void the mismatched Stripe invoice");
            }
            return Err(StripeError::Malformed(format!(
                "Stripe invoice {} is due {}, Tally invoice {} is due {}",
                finalized.id, finalized.amount_due, collectible.invoice_id, collectible.amount_due
            ))
            .into());
        }
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        if store::finish_sync(&mut transaction, &collectible.invoice_id, "open", now).await? {
            let sent = crate::audit::SentToStripe {
                invoice_id: &collectible.invoice_id,
                stripe_invoice_id: &stripe_invoice_id,
                amount_due: collectible.amount_due,
                items: collectible.items.len(),
            };
            crate::audit::record_sent_to_stripe(&mut transaction, &self.core, &sent, now).await?;
        }
        transaction.commit().await?;
        Ok(stripe_invoice_id)
    }

    /// The Stripe customer of a Tally customer, created or updated as needed.
    async fn ensure_customer(&self, details: &CustomerDetails) -> Result<String, PaymentsError> {
        let hash = customer_hash(details);
        let now = self.core.clock.now();
        let mapped = store::stripe_customer(&self.core.pool, &details.tally_customer_id).await?;
        if let Some(StripeCustomer {
            stripe_customer_id,
            synced_hash,
        }) = mapped
        {
            if synced_hash != hash {
                let updated = self
                    .core
                    .stripe
                    .update_customer(&stripe_customer_id, details, &hash[..16])
                    .await?;
                store::record_customer_sync(
                    &self.core.pool,
                    &details.tally_customer_id,
                    &hash,
                    now,
                    updated.has_default_payment_method,
                )
                .await?;
            }
            return Ok(stripe_customer_id);
        }
        let created = self.core.stripe.create_customer(details).await?;
        let new = NewStripeCustomer {
            customer_id: &details.tally_customer_id,
            stripe_customer_id: &created.id,
            livemode: created.livemode,
            has_default_payment_method: created.has_default_payment_method,
            synced_hash: &hash,
        };
        store::insert_stripe_customer(&self.core.pool, new, now).await
    }
}

fn customer_hash(details: &CustomerDetails) -> String {
    let mut hasher = Sha256::new();
    for part in [&details.name, &details.email] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for part in details.address.iter().flatten() {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}
