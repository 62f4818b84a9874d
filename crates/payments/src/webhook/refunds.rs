//! Charges' refunds: refunds made by Tally or in the Stripe dashboard are
//! recorded from the charge's current state.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_domain::ids::RefundId;

use crate::store::webhooks::{self, NewStripeRefund};
use crate::store::{self, PaymentKey, PaymentRow, refunds};
use crate::stripe::{RemoteCharge, RemoteRefundStatus};

use super::{WebhookError, WebhookState};

impl WebhookState {
    pub(super) async fn payment_of_charge(
        &self,
        charge: &RemoteCharge,
    ) -> Result<Option<PaymentRow>, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        if let Some(payment) =
            store::payment(&mut connection, PaymentKey::StripeCharge(&charge.id), false).await?
        {
            return Ok(Some(payment));
        }
        if let Some(intent) = &charge.payment_intent
            && let Some(payment) = store::payment(
                &mut connection,
                PaymentKey::StripePaymentIntent(intent),
                false,
            )
            .await?
        {
            return Ok(Some(payment));
        }
        match &charge.invoice {
            Some(invoice) => {
                Ok(
                    store::payment(&mut connection, PaymentKey::StripeInvoice(invoice), false)
                        .await?,
                )
            }
            None => Ok(None),
        }
    }

    pub(super) async fn record_refunds(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        charge: &RemoteCharge,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let mut recorded = 0;
        for remote in &charge.refunds {
            let known = webhooks::known_refund(
                &mut *connection,
                &payment.id,
                &remote.id,
                remote.tally_refund_id.as_deref().unwrap_or(""),
            )
            .await?;
            let refund_id = match known {
                Some((_, status)) if status != "pending" => continue,
                Some((id, _)) => id,
                None => {
                    // Refunded in the Stripe dashboard: Tally learns it here.
                    let reserved = store::refunds_total(&mut *connection, &payment.id).await?
                        + remote.amount.amount();
                    if remote.amount.currency() != payment.amount.currency()
                        || reserved > payment.amount.amount()
                    {
                        // Stripe and Tally disagree about the payment itself:
                        // left for reconciliation, not forced into the books.
                        tracing::error!(payment_id = %payment.id, stripe_refund_id = %remote.id, "a Stripe refund does not fit the payment; not recorded");
                        continue;
                    }
                    let id = String::from(self.core.ids.mint::<RefundId>());
                    let new = NewStripeRefund {
                        id: &id,
                        payment_id: &payment.id,
                        invoice_id: &payment.invoice_id,
                        amount: remote.amount.amount(),
                        currency: remote.amount.currency().code(),
                        stripe_refund_id: &remote.id,
                    };
                    webhooks::insert_stripe_refund(&mut *connection, new, now).await?;
                    id
                }
            };
            match remote.status {
                RemoteRefundStatus::Succeeded => {
                    if self
                        .core
                        .record_refund_succeeded(connection, payment, &refund_id, &remote.id, now)
                        .await?
                    {
                        recorded += 1;
                    }
                }
                RemoteRefundStatus::Failed => {
                    // Through the core, so invoicing hears `RefundFailed` and
                    // releases what it reserved for the refund (a bare status
                    // update kept that amount reserved forever).
                    if self
                        .core
                        .record_refund_failed(
                            connection,
                            payment,
                            &refund_id,
                            crate::core::RefundFailure {
                                reason: &remote.failure_reason,
                                code: "",
                                stripe_refund_id: Some(&remote.id),
                            },
                            now,
                        )
                        .await?
                    {
                        recorded += 1;
                    }
                }
                RemoteRefundStatus::Pending => {
                    refunds::set_stripe_refund_id(&mut *connection, &refund_id, &remote.id, now)
                        .await?;
                }
            }
        }
        Ok(if recorded > 0 {
            "refunds recorded"
        } else {
            "no change"
        })
    }
}
