//! The `invoice-events` consumer (`payments-invoice-events`): a finalized
//! invoice is mirrored to Stripe and collected; a voided one is voided there;
//! a credit note is mirrored by [`crate::credit_notes`].
//!
//! Stripe calls cannot join a database transaction, so a finalization goes
//! through checkpoints that make every step safe to repeat after a crash or a
//! redelivery: the invoice and payment rows (with the receivable entry) are
//! written first; the Stripe customer mapping, the Stripe invoice id and each
//! created invoice item are stored as soon as Stripe returns them; the
//! invoice status moves to `open` once finalized; and the first attempt's
//! outcome is committed together with the inbox record. Every Stripe call
//! carries a key derived from Tally ids, so a repeated step is answered from
//! Stripe's idempotency cache instead of acting twice.
//!
//! `collectible` validates a finalized snapshot; `finalize` checkpoints,
//! collects the first time or records a refused mirror; `mirror` creates the
//! Stripe customer, invoice and items; `void` voids.

mod collectible;
mod finalize;
mod mirror;
mod store;
mod void;

use async_trait::async_trait;
use prost::Message as _;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_proto::events::InvoiceEvent;
use tally_proto::events::invoice_event::Kind;

use crate::INVOICE_EVENTS_SUBSCRIPTION;
use crate::core::Core;
use crate::credit_notes;
use crate::error::PaymentsError;
use crate::store::record_inbox;
use tally_proto::convert::money as parse_money;

/// The full protobuf name of invoice events.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";

/// Handles `invoice-events`.
#[derive(Debug, Clone)]
pub struct InvoiceEventsHandler {
    core: Core,
}

impl InvoiceEventsHandler {
    /// A handler over `core`.
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    async fn already_applied(&self, message_id: &str) -> Result<bool, PaymentsError> {
        store::inbox_has(&self.core.pool, INVOICE_EVENTS_SUBSCRIPTION, message_id).await
    }

    async fn record_only(&self, message_id: &str) -> Result<(), PaymentsError> {
        let mut transaction = self.core.pool.begin().await?;
        record_inbox(&mut transaction, message_id).await?;
        transaction.commit().await?;
        Ok(())
    }
}

fn retry(error: PaymentsError) -> HandlerError {
    HandlerError::Retry(error.to_string())
}

#[async_trait]
impl MessageHandler for InvoiceEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        if message.message_type != INVOICE_EVENT_TYPE {
            return Err(HandlerError::Poison(format!(
                "expected {INVOICE_EVENT_TYPE}, got `{}`",
                message.message_type
            )));
        }
        if message.type_version != 1 {
            return Err(HandlerError::Poison(format!(
                "unknown version {} of {INVOICE_EVENT_TYPE}",
                message.type_version
            )));
        }
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable InvoiceEvent: {error}")))?;
        if self.already_applied(&message.id).await.map_err(retry)? {
            return Ok(());
        }
        match &event.kind {
            Some(Kind::Finalized(finalized)) => {
                let amount_due = parse_money(finalized.amount_due.as_ref(), "finalized.amount_due")
                    .map_err(|error| HandlerError::Poison(error.to_string()))?;
                self.finalized(&message.id, &event, amount_due).await
            }
            Some(Kind::Voided(_)) => self.voided(&message.id, &event).await.map_err(retry),
            Some(Kind::CreditNoteIssued(issued)) => {
                credit_notes::issued(&self.core, &message.id, &event, issued).await
            }
            // Paid and uncollectible are invoicing's own bookkeeping (caused
            // by payments' own events).
            Some(_) => self.record_only(&message.id).await.map_err(retry),
            None => Err(HandlerError::Poison("InvoiceEvent without a kind".into())),
        }
    }
}
