//! The `payment-events` consumer (subscription `invoicing-payment-events`).
//!
//! Each message is applied exactly once: the inbox records its id in the
//! transaction that applies it. Succeeded adds to `amount_paid` and marks the
//! invoice paid when nothing is due (a past_due subscription becomes active
//! again); Failed moves the subscription to past_due (when
//! `invoicing.past_due_on_payment_failure`); Uncollectible marks the invoice
//! uncollectible (and cancels the subscription when the event says so);
//! Refunded turns the refund's reservation into a REFUND credit note keyed by
//! the refund id (or links a credit note's own refund to it); RefundFailed
//! releases the reservation (see [`crate::refunds`]). Disputes and dunning
//! steps are acknowledged without effect.

mod store;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_bus::inbox::{ServiceSchema, record_once};
use tally_domain::invoice::InvoiceStatus as DomainStatus;
use tally_proto::events::{PaymentEvent, invoice_event, payment_event};
use tally_proto::invoicing::InvoiceStatus;

use crate::billing::store as billing_store;
use crate::error::{InvoicingError, Result};
use crate::invoices::allow;
use crate::wire::money;
use crate::{PAYMENT_EVENTS_SUBSCRIPTION, Shared};

/// The protobuf type name payments puts in `tally-type`.
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";

/// Applies payment events.
#[derive(Debug, Clone)]
pub struct PaymentEvents {
    pub(crate) ctx: Arc<Shared>,
}

fn amount_of(value: Option<&tally_proto::common::Money>) -> Decimal {
    value
        .and_then(|value| value.amount.parse().ok())
        .unwrap_or(Decimal::ZERO)
}

impl std::ops::Deref for PaymentEvents {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.ctx
    }
}

impl PaymentEvents {
    /// Applies one payment event (inside the caller's transaction); returns
    /// the invoice as it was before, for the audit entry.
    pub(crate) async fn apply_payment_event(
        &self,
        connection: &mut PgConnection,
        event: &PaymentEvent,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value> {
        let Some(kind) = &event.kind else {
            return Err(InvoicingError::invalid(
                "kind",
                "a payment event needs a kind",
            ));
        };
        let subscription_id = store::invoice_subscription(&mut *connection, &event.invoice_id)
            .await?
            .ok_or_else(|| {
                InvoicingError::invalid(
                    "invoice_id",
                    format!("unknown invoice {:?}", event.invoice_id),
                )
            })?;
        // Lock order everywhere: the subscription, then its invoices.
        crate::subscriptions::store::lock(&mut *connection, &subscription_id).await?;
        let row = billing_store::load(&mut *connection, &event.invoice_id, true).await?;
        let before = crate::audit::invoice_state(&row);
        let currency = row.currency()?;
        match kind {
            payment_event::Kind::Succeeded(succeeded) => {
                let amount = amount_of(succeeded.amount.as_ref());
                let paid_total = row.amount_paid + amount;
                let fully_paid = row.total - paid_total - row.amount_credited <= Decimal::ZERO;
                let becomes_paid = fully_paid
                    && matches!(
                        row.wire_status(),
                        InvoiceStatus::Finalized | InvoiceStatus::Uncollectible
                    );
                store::record_payment(&mut *connection, &row.id, paid_total, becomes_paid, now)
                    .await?;
                if becomes_paid {
                    self.publish_invoice(
                        &mut *connection,
                        &row.id,
                        now,
                        invoice_event::Kind::Paid(invoice_event::Paid {
                            payment_id: event
                                .payment
                                .as_ref()
                                .map(|payment| payment.id.clone())
                                .unwrap_or_default(),
                            amount: Some(money(amount, currency)),
                        }),
                    )
                    .await?;
                    let unpaid =
                        store::overdue_unpaid_count(&mut *connection, &subscription_id, now)
                            .await?;
                    if unpaid == 0 {
                        self.subscriptions()
                            .set_past_due(
                                &mut *connection,
                                &subscription_id,
                                false,
                                format!("invoice {} paid", row.id),
                                now,
                            )
                            .await?;
                    }
                }
            }
            payment_event::Kind::Failed(failed) => {
                if self.config.past_due_on_payment_failure {
                    let reason = format!("payment failed on {} ({})", row.id, failed.failure_code);
                    self.subscriptions()
                        .set_past_due(&mut *connection, &subscription_id, true, reason, now)
                        .await?;
                }
            }
            payment_event::Kind::Uncollectible(uncollectible) => {
                if row.wire_status() == InvoiceStatus::Finalized {
                    allow(&row, DomainStatus::Uncollectible)?;
                    store::mark_uncollectible(&mut *connection, &row.id, now).await?;
                    self.publish_invoice(
                        &mut *connection,
                        &row.id,
                        now,
                        invoice_event::Kind::MarkedUncollectible(
                            invoice_event::MarkedUncollectible {
                                amount: Some(money(row.amount_due(), currency)),
                            },
                        ),
                    )
                    .await?;
                }
                if uncollectible.cancel_subscription {
                    self.subscriptions()
                        .cancel_now(
                            &mut *connection,
                            &subscription_id,
                            format!("invoice {} uncollectible", row.id),
                            now,
                        )
                        .await?;
                }
            }
            payment_event::Kind::Refunded(refunded) => {
                self.refunds()
                    .apply_refunded(&mut *connection, &row, refunded, now)
                    .await?;
            }
            payment_event::Kind::RefundFailed(failed) => {
                self.refunds()
                    .apply_refund_failed(&mut *connection, &row, failed, now)
                    .await?;
            }
            payment_event::Kind::DisputeCreated(_) | payment_event::Kind::DunningStep(_) => {}
        }
        Ok(before)
    }
}

#[async_trait]
impl MessageHandler for PaymentEvents {
    async fn handle(
        &self,
        message: &Message,
        _delivery_attempt: u32,
    ) -> std::result::Result<(), HandlerError> {
        if message.message_type != PAYMENT_EVENT_TYPE || message.type_version != 1 {
            return Err(HandlerError::Poison(format!(
                "unexpected message {:?} version {} on payment-events (expected {PAYMENT_EVENT_TYPE} version 1)",
                message.message_type, message.type_version
            )));
        }
        let event = PaymentEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable PaymentEvent: {error}")))?;
        let now = self.ctx.clock.now();
        let result: Result<()> = async {
            let mut transaction = self.ctx.pool.begin().await?;
            let key = if event.event_id.is_empty() {
                message.id.as_str()
            } else {
                event.event_id.as_str()
            };
            if record_once(
                &mut transaction,
                ServiceSchema::Invoicing,
                PAYMENT_EVENTS_SUBSCRIPTION,
                key,
            )
            .await?
            {
                let before = self
                    .apply_payment_event(&mut transaction, &event, now)
                    .await?;
                self.ctx
                    .audit_payment_event(&mut transaction, &event, key, before, now)
                    .await?;
            }
            transaction.commit().await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(
                InvoicingError::Invalid(_)
                | InvoicingError::FailedPrecondition(_)
                | InvoicingError::NotFound(_),
            ) => Err(HandlerError::Poison(
                result
                    .err()
                    .map(|error| error.to_string())
                    .unwrap_or_default(),
            )),
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}
