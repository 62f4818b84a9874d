//! The two consumers that feed the ledger: `invoice-events` (finalized,
//! voided, credit notes) and `payment-events` (payments and refunds). Each
//! message is applied in one database transaction with its inbox record, so
//! a redelivery changes nothing; every transaction it posts has an id
//! derived from the fact, so a replay of the topic from the start changes
//! nothing either.
//!
//! The booking itself is `crate::books`, shared with the rebuild.

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use sqlx::PgPool;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_bus::inbox::{self, ServiceSchema};
use tally_domain::finance::RecognitionPolicy;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_runtime::SharedClock;

use crate::books::{self, Booked};
use crate::error::FinanceServiceError;
use crate::facts;

/// The bus message type on `invoice-events`.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";
/// The bus message type on `payment-events`.
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";

/// What both consumers need.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The database (schema `finance`).
    pub pool: PgPool,
    /// The service clock (`posted_at`).
    pub clock: SharedClock,
    /// How deferred fees are spread over their service period.
    pub policy: RecognitionPolicy,
}

fn poison(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Poison(error.to_string())
}

pub(crate) fn classify(error: FinanceServiceError) -> HandlerError {
    if error.is_transient() {
        HandlerError::Retry(error.to_string())
    } else {
        poison(error)
    }
}

pub(crate) fn check_type(message: &Message, expected: &str) -> Result<(), HandlerError> {
    if message.message_type != expected || message.type_version != 1 {
        return Err(poison(format!(
            "expected {expected} version 1, got {:?} version {}",
            message.message_type, message.type_version
        )));
    }
    Ok(())
}

/// A transaction holding the inbox record of `message_id` for
/// `subscription`, or `None` when the inbox already had it (a redelivery:
/// skip the effect and ack).
pub(crate) async fn first_delivery(
    pool: &PgPool,
    subscription: &str,
    message_id: &str,
) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, HandlerError> {
    let database = |error: sqlx::Error| classify(error.into());
    let mut transaction = pool.begin().await.map_err(database)?;
    let first = inbox::record_once(
        &mut transaction,
        ServiceSchema::Finance,
        subscription,
        message_id,
    )
    .await
    .map_err(database)?;
    Ok(first.then_some(transaction))
}

/// Applies `invoice-events`.
#[derive(Debug, Clone)]
pub struct InvoiceEventsHandler {
    ledger: Arc<Ledger>,
    subscription: String,
}

impl InvoiceEventsHandler {
    /// A handler recording messages in the inbox under `subscription`.
    pub fn new(ledger: Arc<Ledger>, subscription: impl Into<String>) -> Self {
        Self {
            ledger,
            subscription: subscription.into(),
        }
    }

    /// Applies one decoded event; `Ok(false)` when the inbox had it already.
    pub async fn apply(
        &self,
        message_id: &str,
        event: &InvoiceEvent,
    ) -> Result<bool, HandlerError> {
        let Some(mut transaction) =
            first_delivery(&self.ledger.pool, &self.subscription, message_id).await?
        else {
            return Ok(false);
        };
        let now = self.ledger.clock.now();
        let booked = match &event.kind {
            Some(invoice_event::Kind::Finalized(_)) => {
                Booked::InvoiceFinalized(facts::invoice_finalized(event).map_err(poison)?)
            }
            Some(invoice_event::Kind::Voided(_)) => {
                Booked::InvoiceVoided(facts::invoice_voided(event).map_err(poison)?)
            }
            Some(invoice_event::Kind::CreditNoteIssued(issued)) => {
                Booked::CreditNoteIssued(facts::credit_note_issued(event, issued).map_err(poison)?)
            }
            // Paid and uncollectible change nothing in the books: the payment
            // events carry the cash, and a write-off is a credit note.
            Some(_) => {
                transaction
                    .commit()
                    .await
                    .map_err(|error| classify(error.into()))?;
                return Ok(true);
            }
            None => return Err(poison("InvoiceEvent without a kind")),
        };
        books::record_and_book(&mut transaction, &booked, self.ledger.policy, now)
            .await
            .map_err(classify)?;
        // What analytics keeps of invoices (MRR's fees) is not in the books.
        match &booked {
            Booked::InvoiceFinalized(_) => {
                crate::analytics::fees::record_finalized(&mut transaction, event)
                    .await
                    .map_err(classify)?;
            }
            Booked::InvoiceVoided(fact) => {
                crate::analytics::fees::forget_voided(&mut transaction, fact.invoice.as_str())
                    .await
                    .map_err(classify)?;
            }
            _ => {}
        }
        transaction
            .commit()
            .await
            .map_err(|error| classify(error.into()))?;
        Ok(true)
    }
}

#[async_trait]
impl MessageHandler for InvoiceEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, INVOICE_EVENT_TYPE)?;
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| poison(format!("undecodable InvoiceEvent: {error}")))?;
        self.apply(&message.id, &event).await.map(|_| ())
    }
}

/// Applies `payment-events`.
#[derive(Debug, Clone)]
pub struct PaymentEventsHandler {
    ledger: Arc<Ledger>,
    subscription: String,
}

impl PaymentEventsHandler {
    /// A handler recording messages in the inbox under `subscription`.
    pub fn new(ledger: Arc<Ledger>, subscription: impl Into<String>) -> Self {
        Self {
            ledger,
            subscription: subscription.into(),
        }
    }

    /// Applies one decoded event; `Ok(false)` when the inbox had it already.
    pub async fn apply(
        &self,
        message_id: &str,
        event: &PaymentEvent,
    ) -> Result<bool, HandlerError> {
        let Some(mut transaction) =
            first_delivery(&self.ledger.pool, &self.subscription, message_id).await?
        else {
            return Ok(false);
        };
        let now = self.ledger.clock.now();
        let booked = match &event.kind {
            Some(payment_event::Kind::Succeeded(succeeded)) => Booked::PaymentSucceeded(
                facts::payment_succeeded(event, succeeded).map_err(poison)?,
            ),
            Some(payment_event::Kind::Refunded(refunded)) => {
                Booked::RefundSucceeded(facts::refund_succeeded(event, refunded).map_err(poison)?)
            }
            // Failures, dunning steps and disputes move no money in the books.
            Some(_) => {
                transaction
                    .commit()
                    .await
                    .map_err(|error| classify(error.into()))?;
                return Ok(true);
            }
            None => return Err(poison("PaymentEvent without a kind")),
        };
        books::record_and_book(&mut transaction, &booked, self.ledger.policy, now)
            .await
            .map_err(classify)?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error.into()))?;
        Ok(true)
    }
}

#[async_trait]
impl MessageHandler for PaymentEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, PAYMENT_EVENT_TYPE)?;
        let event = PaymentEvent::decode(message.payload.as_slice())
            .map_err(|error| poison(format!("undecodable PaymentEvent: {error}")))?;
        self.apply(&message.id, &event).await.map(|_| ())
    }
}
