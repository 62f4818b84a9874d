//! Invoice events (and PaymentIntents, through their invoice): the payment
//! moves toward the Stripe invoice's current state.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::core::AttemptOutcome;
use crate::store::{self, PaymentKey, PaymentRow, PaymentState};
use crate::stripe::{RemoteInvoice, RemoteInvoiceStatus};

use super::dispatch::Plan;
use super::{WebhookError, WebhookState};

impl WebhookState {
    pub(super) async fn plan_invoice(
        &self,
        stripe_invoice_id: &str,
        tally_invoice: Option<String>,
    ) -> Result<Plan, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        let mut payment = store::payment(
            &mut connection,
            PaymentKey::StripeInvoice(stripe_invoice_id),
            false,
        )
        .await?;
        if payment.is_none()
            && let Some(tally_invoice) = &tally_invoice
        {
            payment =
                store::payment(&mut connection, PaymentKey::Invoice(tally_invoice), false).await?;
            if payment.is_none() {
                return Err(WebhookError::NotYetKnown(tally_invoice.clone()));
            }
        }
        drop(connection);
        let Some(payment) = payment else {
            return Ok(Plan::Ignore("ignored: not a Tally invoice"));
        };
        let invoice = self.core.stripe.get_invoice(stripe_invoice_id).await?;
        let mut failure = (String::new(), String::new());
        if invoice.status == RemoteInvoiceStatus::Open
            && invoice.attempt_count > payment.attempt_count
            && let Some(intent) = &invoice.payment_intent
        {
            let intent = self.core.stripe.get_payment_intent(intent).await?;
            failure = if intent.failure_code.is_empty() && intent.status == "requires_action" {
                // 3-D Secure or another step only the customer can take.
                (
                    "authentication_required".into(),
                    "The customer must authenticate the payment.".into(),
                )
            } else {
                (intent.failure_code, intent.failure_message)
            };
        }
        Ok(Plan::Invoice {
            payment_id: payment.id,
            invoice,
            failure,
        })
    }

    pub(super) async fn move_toward_invoice(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        invoice: RemoteInvoice,
        (failure_code, failure_message): (String, String),
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        match invoice.status {
            RemoteInvoiceStatus::Paid => {
                if invoice.payment_intent.is_some() {
                    payment.stripe_payment_intent_id = invoice.payment_intent.clone();
                }
                if payment.attempt_count < invoice.attempt_count.max(1)
                    && payment.status.is_collectible()
                {
                    let number = invoice.attempt_count.max(payment.attempt_count + 1);
                    store::insert_attempt(
                        connection,
                        &payment.id,
                        &store::Attempt {
                            number,
                            attempted_at: now,
                            succeeded: true,
                            failure_code: String::new(),
                            failure_message: String::new(),
                            stripe_payment_intent_id: invoice
                                .payment_intent
                                .clone()
                                .unwrap_or_default(),
                            stripe_charge_id: invoice.charge.clone().unwrap_or_default(),
                        },
                    )
                    .await?;
                    payment.attempt_count = number;
                }
                let moved = self
                    .core
                    .mark_succeeded(connection, payment, invoice.charge, event_id, now)
                    .await?;
                Ok(if moved {
                    "payment succeeded"
                } else {
                    "already settled"
                })
            }
            RemoteInvoiceStatus::Open => {
                if invoice.attempt_count <= payment.attempt_count
                    || !payment.status.is_collectible()
                {
                    return Ok("no change");
                }
                let outcome = AttemptOutcome::Failed {
                    code: if failure_code.is_empty() {
                        "payment_failed".into()
                    } else {
                        failure_code
                    },
                    message: failure_message,
                    payment_intent: invoice.payment_intent,
                    charge: invoice.charge,
                };
                self.core
                    .apply_attempt(connection, payment, invoice.attempt_count, &outcome, now)
                    .await?;
                Ok("payment failed")
            }
            RemoteInvoiceStatus::Uncollectible => {
                let moved = self
                    .core
                    .mark_uncollectible(connection, payment, event_id, now)
                    .await?;
                Ok(if moved {
                    "marked uncollectible"
                } else {
                    "already settled"
                })
            }
            RemoteInvoiceStatus::Void => {
                if !payment.status.is_collectible() {
                    return Ok("already settled");
                }
                payment.status = PaymentState::Canceled;
                payment.next_retry_at = None;
                payment.updated_at = now;
                store::update_payment(connection, payment).await?;
                crate::core::set_invoice_status(connection, &payment.invoice_id, "void", now)
                    .await?;
                Ok("payment canceled")
            }
            RemoteInvoiceStatus::Draft => Ok("no change"),
        }
    }
}
