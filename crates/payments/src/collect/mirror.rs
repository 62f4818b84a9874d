//! The Stripe side of a finalization: the customer (created or updated),
//! the draft invoice, its items and the finalization, each stored as soon as
//! Stripe returns it.

use sha2::{Digest, Sha256};

use crate::error::PaymentsError;
use crate::stripe::{CustomerDetails, StripeError};

use super::InvoiceEventsHandler;
use super::collectible::Collectible;

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
                sqlx::query(
                    "UPDATE payments.invoices SET stripe_invoice_id = $2 WHERE invoice_id = $1",
                )
                .bind(&collectible.invoice_id)
                .bind(&created.id)
                .execute(&mut *transaction)
                .await?;
                sqlx::query(
                    "UPDATE payments.payments SET stripe_invoice_id = $2 WHERE invoice_id = $1",
                )
                .bind(&collectible.invoice_id)
                .bind(&created.id)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                created.id
            }
        };
        let created_lines: Vec<String> =
            sqlx::query_scalar("SELECT line_id FROM payments.invoice_items WHERE invoice_id = $1")
                .bind(&collectible.invoice_id)
                .fetch_all(&self.core.pool)
                .await?;
        for item in &collectible.items {
            if created_lines.contains(&item.tally_line_id) {
                continue;
            }
            let item_id = self
                .core
                .stripe
                .create_invoice_item(&stripe_customer_id, &stripe_invoice_id, item)
                .await?;
            sqlx::query(
                "INSERT INTO payments.invoice_items (line_id, invoice_id, stripe_invoice_item_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&item.tally_line_id)
            .bind(&collectible.invoice_id)
            .bind(&item_id)
            .execute(&self.core.pool)
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
        sqlx::query("UPDATE payments.invoices SET status = $2, updated_at = $3 WHERE invoice_id = $1 AND status = 'syncing'")
            .bind(&collectible.invoice_id)
            .bind("open")
            .bind(now)
            .execute(&self.core.pool)
            .await?;
        Ok(stripe_invoice_id)
    }

    /// The Stripe customer of a Tally customer, created or updated as needed.
    async fn ensure_customer(&self, details: &CustomerDetails) -> Result<String, PaymentsError> {
        let hash = customer_hash(details);
        let now = self.core.clock.now();
        let mapped: Option<(String, String)> = sqlx::query_as(
            "SELECT stripe_customer_id, synced_hash FROM payments.stripe_customers WHERE customer_id = $1",
        )
        .bind(&details.tally_customer_id)
        .fetch_optional(&self.core.pool)
        .await?;
        if let Some((stripe_customer_id, synced_hash)) = mapped {
            if synced_hash != hash {
                let updated = self
                    .core
                    .stripe
                    .update_customer(&stripe_customer_id, details, &hash[..16])
                    .await?;
                sqlx::query(
                    "UPDATE payments.stripe_customers SET synced_hash = $2, synced_at = $3, \
                     has_default_payment_method = $4 WHERE customer_id = $1",
                )
                .bind(&details.tally_customer_id)
                .bind(&hash)
                .bind(now)
                .bind(updated.has_default_payment_method)
                .execute(&self.core.pool)
                .await?;
            }
            return Ok(stripe_customer_id);
        }
        let created = self.core.stripe.create_customer(details).await?;
        sqlx::query(
            "INSERT INTO payments.stripe_customers (customer_id, stripe_customer_id, livemode, \
             has_default_payment_method, synced_hash, created_at, synced_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&details.tally_customer_id)
        .bind(&created.id)
        .bind(created.livemode)
        .bind(created.has_default_payment_method)
        .bind(&hash)
        .bind(now)
        .execute(&self.core.pool)
        .await?;
        let stripe_customer_id: String = sqlx::query_scalar(
            "SELECT stripe_customer_id FROM payments.stripe_customers WHERE customer_id = $1",
        )
        .bind(&details.tally_customer_id)
        .fetch_one(&self.core.pool)
        .await?;
        Ok(stripe_customer_id)
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
