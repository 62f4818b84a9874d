//! Whether an event's object is Tally's, decided from the event and
//! payments' own rows before any Stripe read, so another integration's
//! events cost no Stripe call.

use serde_json::Value;

use crate::store::{self, PaymentKey, webhooks};

use super::envelope::{metadata, reference};
use super::{WebhookError, WebhookState};

impl WebhookState {
    /// Why a PaymentIntent or charge is not Tally's, when the event and
    /// payments' own rows prove it (no Stripe read): Tally collects only
    /// through Stripe invoices of the Stripe customers it created and mapped
    /// first, so a payment that payments does not know by any of `known`, and
    /// whose `customer` is absent or unmapped, belongs to another integration.
    pub(super) async fn foreign_payment(
        &self,
        object: &Value,
        known: &[PaymentKey<'_>],
    ) -> Result<Option<&'static str>, WebhookError> {
        if self.any_payment(known).await? {
            return Ok(None);
        }
        let Some(customer) = reference(object, "customer") else {
            return Ok(Some("ignored: no customer, not a Tally payment"));
        };
        if self.is_tally_customer(&customer).await? {
            // Tally's customer: possibly an invoice payment payments has not
            // linked yet; Stripe's current state decides.
            return Ok(None);
        }
        Ok(Some("ignored: not a Tally customer's payment"))
    }

    /// Why a refund (`charge.refund.updated`) is not Tally's, without a
    /// Stripe read: Tally's own refunds carry `metadata.tally_refund_id`; a
    /// refund made in the dashboard matters only once `charge.refunded`
    /// recorded it (by its id) or the charge is a known payment's.
    pub(super) async fn foreign_refund(
        &self,
        stripe_refund_id: &str,
        refund: &Value,
    ) -> Result<Option<&'static str>, WebhookError> {
        if metadata(refund, "tally_refund_id").is_some() {
            return Ok(None);
        }
        if webhooks::refund_recorded(&self.core.pool, stripe_refund_id).await? {
            return Ok(None);
        }
        let charge = reference(refund, "charge").unwrap_or_default();
        let intent = reference(refund, "payment_intent").unwrap_or_default();
        let known = [
            PaymentKey::StripeCharge(&charge),
            PaymentKey::StripePaymentIntent(&intent),
        ];
        if self.any_payment(&known).await? {
            return Ok(None);
        }
        Ok(Some("ignored: not a Tally refund"))
    }

    /// Whether payments has a payment under any of `keys` (empty ids skipped).
    async fn any_payment(&self, keys: &[PaymentKey<'_>]) -> Result<bool, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        for key in keys {
            let id = match *key {
                PaymentKey::Id(id)
                | PaymentKey::Invoice(id)
                | PaymentKey::StripeInvoice(id)
                | PaymentKey::StripeCharge(id)
                | PaymentKey::StripePaymentIntent(id) => id,
            };
            if !id.is_empty()
                && store::payment(&mut connection, *key, false)
                    .await?
                    .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether payments created (and mapped) this Stripe customer.
    pub(super) async fn is_tally_customer(
        &self,
        stripe_customer_id: &str,
    ) -> Result<bool, WebhookError> {
        Ok(webhooks::stripe_customer_known(&self.core.pool, stripe_customer_id).await?)
    }
}
