//! What an event asks for ([`Plan`], worked out from Stripe's current state
//! before any transaction) and the transaction that applies it with the
//! event id.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::store::{self, PaymentKey, webhooks};
use crate::stripe::{RemoteCharge, RemoteDispute, RemoteInvoice};

use super::envelope::{Envelope, metadata, reference};
use super::{WebhookError, WebhookState};

/// What an event asks for, worked out from Stripe's current state.
#[derive(Debug)]
pub(super) enum Plan {
    /// Nothing to do (not Tally's, or a type payments does not act on).
    Ignore(&'static str),
    /// Move the payment toward the Stripe invoice's current state.
    Invoice {
        payment_id: String,
        invoice: RemoteInvoice,
        failure: (String, String),
    },
    /// Record the charge's refunds.
    Refunds {
        payment_id: String,
        charge: RemoteCharge,
    },
    /// Refresh what payments knows of a Stripe customer.
    Customer {
        stripe_customer_id: String,
        has_default_payment_method: bool,
    },
    /// Record a dispute.
    Dispute {
        payment_id: String,
        dispute: RemoteDispute,
    },
}

impl WebhookState {
    pub(super) async fn apply(&self, event: &Envelope) -> Result<&'static str, WebhookError> {
        if webhooks::event_seen(&self.core.pool, &event.id).await? {
            return Ok("duplicate");
        }
        let plan = self.plan(event).await?;
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        let inserted =
            webhooks::insert_event(&mut transaction, &event.id, &event.kind, event.created, now)
                .await?;
        if !inserted {
            return Ok("duplicate");
        }
        let outcome = self.execute(&mut transaction, event, plan, now).await?;
        webhooks::set_event_outcome(&mut transaction, &event.id, outcome).await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn plan(&self, event: &Envelope) -> Result<Plan, WebhookError> {
        let object_id = event
            .object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match event.kind.as_str() {
            "invoice.paid"
            | "invoice.payment_succeeded"
            | "invoice.payment_failed"
            | "invoice.payment_action_required"
            | "invoice.finalized"
            | "invoice.voided"
            | "invoice.marked_uncollectible" => {
                let tally_invoice = metadata(&event.object, "tally_invoice_id").map(str::to_owned);
                self.plan_invoice(&object_id, tally_invoice).await
            }
            "payment_intent.succeeded" | "payment_intent.payment_failed" => {
                let known = [PaymentKey::StripePaymentIntent(&object_id)];
                if let Some(reason) = self.foreign_payment(&event.object, &known).await? {
                    return Ok(Plan::Ignore(reason));
                }
                let intent = self.core.stripe.get_payment_intent(&object_id).await?;
                let Some(stripe_invoice) = intent.invoice.clone() else {
                    return Ok(Plan::Ignore("ignored: not an invoice payment"));
                };
                self.plan_invoice(&stripe_invoice, None).await
            }
            "charge.refunded" | "charge.refund.updated" => {
                let charge_id = if event.kind == "charge.refund.updated" {
                    let refund = &event.object;
                    if let Some(reason) = self.foreign_refund(&object_id, refund).await? {
                        return Ok(Plan::Ignore(reason));
                    }
                    reference(refund, "charge").unwrap_or_default()
                } else {
                    let intent = reference(&event.object, "payment_intent").unwrap_or_default();
                    let known = [
                        PaymentKey::StripeCharge(&object_id),
                        PaymentKey::StripePaymentIntent(&intent),
                    ];
                    if let Some(reason) = self.foreign_payment(&event.object, &known).await? {
                        return Ok(Plan::Ignore(reason));
                    }
                    object_id
                };
                let charge = self.core.stripe.get_charge(&charge_id).await?;
                let Some(payment) = self.payment_of_charge(&charge).await? else {
                    return Ok(Plan::Ignore("ignored: not a Tally charge"));
                };
                Ok(Plan::Refunds {
                    payment_id: payment.id,
                    charge,
                })
            }
            "customer.updated" => {
                // Payments maps every Stripe customer it creates before
                // anything can happen to it, so an unmapped one is another
                // integration's (or another Tally's): no Stripe read for it.
                if !self.is_tally_customer(&object_id).await? {
                    return Ok(Plan::Ignore(
                        if metadata(&event.object, "tally_customer_id").is_some() {
                            "ignored: a Tally customer this installation does not map"
                        } else {
                            "ignored: not a Tally customer"
                        },
                    ));
                }
                // The current state, not the event's snapshot.
                let customer = self.core.stripe.get_customer(&object_id).await?;
                Ok(Plan::Customer {
                    stripe_customer_id: customer.id,
                    has_default_payment_method: customer.has_default_payment_method,
                })
            }
            "charge.dispute.created" => {
                let dispute = RemoteDispute::from_json(&event.object)?;
                let mut connection = self.core.pool.acquire().await?;
                let payment = store::payment(
                    &mut connection,
                    PaymentKey::StripeCharge(&dispute.charge),
                    false,
                )
                .await?;
                Ok(match payment {
                    Some(payment) => Plan::Dispute {
                        payment_id: payment.id,
                        dispute,
                    },
                    None => Plan::Ignore("ignored: not a Tally charge"),
                })
            }
            _ => Ok(Plan::Ignore("ignored: event type not handled")),
        }
    }

    async fn execute(
        &self,
        connection: &mut PgConnection,
        event: &Envelope,
        plan: Plan,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let payment_id = match &plan {
            Plan::Ignore(outcome) => return Ok(outcome),
            Plan::Customer {
                stripe_customer_id,
                has_default_payment_method,
            } => {
                webhooks::refresh_default_payment_method(
                    &mut *connection,
                    stripe_customer_id,
                    *has_default_payment_method,
                    now,
                )
                .await?;
                return Ok("customer refreshed");
            }
            Plan::Invoice { payment_id, .. }
            | Plan::Refunds { payment_id, .. }
            | Plan::Dispute { payment_id, .. } => payment_id.clone(),
        };
        let Some(mut payment) =
            store::payment(connection, PaymentKey::Id(&payment_id), true).await?
        else {
            return Ok("ignored: payment gone");
        };
        let event_id = format!("pevt_{}", event.id);
        let before = crate::audit::PaymentBefore::of(&payment);
        let outcome = match plan {
            Plan::Ignore(outcome) => outcome,
            Plan::Customer { .. } => "customer refreshed",
            Plan::Invoice {
                invoice, failure, ..
            } => {
                self.move_toward_invoice(connection, &mut payment, invoice, failure, &event_id, now)
                    .await?
            }
            Plan::Refunds { charge, .. } => {
                self.record_refunds(connection, &mut payment, &charge, now)
                    .await?
            }
            Plan::Dispute { dispute, .. } => {
                self.record_dispute(connection, &mut payment, &dispute, &event_id, now)
                    .await?
            }
        };
        let event_ids = (event.id.as_str(), event.kind.as_str());
        crate::audit::record_webhook_change(
            connection,
            &self.core,
            event_ids,
            &payment_id,
            before,
            now,
        )
        .await?;
        Ok(outcome)
    }
}
