//! The two consumers that feed the ledger: `invoice-events` (finalized,
//! voided, credit notes) and `payment-events` (payments and refunds), each a
//! `tally_bus::batch::BatchConsumer`. A delivered batch is applied in **one
//! database transaction**, set-based: one statement records every message
//! in the inbox and says which are new, then the new messages' facts are
//! booked together (`books::record_and_book_all`: one statement per table —
//! facts, accounts, invoices, transactions, entries, schedule days, MRR's
//! fees — whatever the batch's size; a void splits the batch, since it reads
//! what was posted for its invoice). It is acked after the commit; when the
//! batch fails the bus applies its messages one by one, so one bad fact
//! cannot hold back the others. A message alone is a batch of one: both
//! ways store the same rows (`tests/it/batch_equivalence.rs`). A redelivery
//! changes nothing (the inbox), and every transaction posted has an id
//! derived from the fact, so a replay of the topic from the start changes
//! nothing either.
//!
//! `invoice-events` is ordered and consumed in lanes by ordering key
//! (`Lanes::ByOrderingKey`: a key's messages stay in one lane, in order), so
//! a void comes after its finalization; a void whose finalization is not
//! booked (it failed and waits for redelivery) is retried, never applied
//! without it. `payment-events` is unordered (`Lanes::Shared`).
//!
//! The booking itself is `crate::books`, shared with the rebuild.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tally_bus::Message;
use tally_bus::batch::BatchHandler;
use tally_bus::consumer::HandlerError;
use tally_bus::inbox::{self, ServiceSchema};
use tally_domain::finance::RecognitionPolicy;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_runtime::SharedClock;

use crate::books::{self, Booked};
use crate::error::FinanceServiceError;
use crate::facts;
use crate::journal::store::facts as stored_facts;

/// The bus message type on `invoice-events`.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";
/// The bus message type on `payment-events`.
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";

/// Most messages the ledger consumers apply in one transaction.
pub const LEDGER_BATCH_MESSAGES: usize = 100;

/// Batches each ledger consumer applies at once (each its own transaction
/// and database connection).
pub const LEDGER_BATCHES_IN_FLIGHT: usize = 3;

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

/// Records the batch's message ids in the inbox of `subscription` in the
/// caller's transaction, and returns the events to apply: those the inbox
/// did not have, each message once (a redelivery, inside the batch or of an
/// earlier one, is skipped), in the order given.
async fn first_deliveries<'e, E>(
    connection: &mut sqlx::PgConnection,
    subscription: &str,
    events: &[(&'e str, &'e E)],
) -> Result<Vec<&'e E>, HandlerError> {
    let ids: Vec<&str> = events.iter().map(|(id, _)| *id).collect();
    let mut recorded = inbox::record_all(connection, ServiceSchema::Finance, subscription, &ids)
        .await
        .map_err(|error| classify(error.into()))?;
    // `remove`: a message given twice is applied at its first place.
    Ok(events
        .iter()
        .filter(|(id, _)| recorded.remove(*id))
        .map(|(_, event)| *event)
        .collect())
}

async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError> {
    pool.begin().await.map_err(|error| classify(error.into()))
}

async fn commit(
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<(), HandlerError> {
    transaction
        .commit()
        .await
        .map_err(|error| classify(error.into()))
}

/// The decoded event of a message of `expected` type, or why it is poison.
fn decode_event<T: prost::Message + Default>(
    message: &Message,
    expected: &str,
) -> Result<T, String> {
    if message.message_type != expected || message.type_version != 1 {
        return Err(format!(
            "expected {expected} version 1, got {:?} version {}",
            message.message_type, message.type_version
        ));
    }
    T::decode(message.payload.as_slice()).map_err(|error| {
        let name = expected.rsplit('.').next().unwrap_or(expected);
        format!("undecodable {name}: {error}")
    })
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

/// One of the ledger's two consumers: where it records its inbox, and how
/// it books a batch's new events in the batch's transaction.
#[async_trait]
trait Booking: Sync {
    type Event: Sync;

    /// The ledger and the subscription whose inbox records the messages.
    fn target(&self) -> (&Ledger, &str);

    /// Books the events (the inbox did not have them), in the order given,
    /// in the batch's transaction.
    async fn book_all(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[&Self::Event],
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError>;
}

/// Applies decoded events (message id, event), in the order given, in one
/// transaction: the inbox records of all, then the booking of those the
/// inbox did not have, set-based (`books::record_and_book_all`: one
/// statement per table for the batch). Returns how many were new; any
/// failure rolls the whole batch back.
async fn apply_in_one_transaction<H: Booking>(
    handler: &H,
    events: &[(&str, &H::Event)],
) -> Result<usize, HandlerError> {
    let (ledger, subscription) = handler.target();
    let mut transaction = begin(&ledger.pool).await?;
    let now = ledger.clock.now();
    let fresh = first_deliveries(&mut transaction, subscription, events).await?;
    handler.book_all(&mut transaction, &fresh, now).await?;
    commit(transaction).await?;
    Ok(fresh.len())
}

/// A delivered batch as `apply_all` takes it.
fn borrowed<E>(items: &[(String, E)]) -> Vec<(&str, &E)> {
    items
        .iter()
        .map(|(id, event)| (id.as_str(), event))
        .collect()
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
        Ok(self.apply_all(&[(message_id, event)]).await? == 1)
    }

    /// Applies decoded events (message id, event), in the order given, in
    /// one transaction; returns how many were new (not in the inbox yet).
    /// Any failure rolls the whole batch back.
    pub async fn apply_all(&self, events: &[(&str, &InvoiceEvent)]) -> Result<usize, HandlerError> {
        apply_in_one_transaction(self, events).await
    }
}

#[async_trait]
impl Booking for InvoiceEventsHandler {
    type Event = InvoiceEvent;

    fn target(&self) -> (&Ledger, &str) {
        (&self.ledger, &self.subscription)
    }

    /// Books the events, the facts between two voids together; a void
    /// needs its finalization booked (by an earlier batch or earlier in
    /// this one).
    async fn book_all(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[&InvoiceEvent],
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let mut run = InvoiceRun::default();
        for event in events {
            match &event.kind {
                Some(invoice_event::Kind::Finalized(_)) => {
                    let fact = facts::invoice_finalized(event).map_err(poison)?;
                    run.facts.push(Booked::InvoiceFinalized(fact));
                    run.finalized.push(event);
                }
                Some(invoice_event::Kind::Voided(_)) => {
                    let fact = facts::invoice_voided(event).map_err(poison)?;
                    std::mem::take(&mut run)
                        .book(&mut *connection, self.ledger.policy, now)
                        .await?;
                    self.book_void(&mut *connection, fact, now).await?;
                }
                Some(invoice_event::Kind::CreditNoteIssued(issued)) => {
                    let fact = facts::credit_note_issued(event, issued).map_err(poison)?;
                    run.facts.push(Booked::CreditNoteIssued(fact));
                }
                // Paid and uncollectible change nothing in the books: the payment
                // events carry the cash, and a write-off is a credit note.
                Some(_) => {}
                None => return Err(poison("InvoiceEvent without a kind")),
            }
        }
        run.book(connection, self.ledger.policy, now).await
    }
}

/// Invoice facts between two voids, booked together.
#[derive(Default)]
struct InvoiceRun<'e> {
    facts: Vec<Booked>,
    /// The finalized invoices' events (what analytics keeps: MRR's fees).
    finalized: Vec<&'e InvoiceEvent>,
}

impl InvoiceRun<'_> {
    async fn book(
        self,
        connection: &mut sqlx::PgConnection,
        policy: RecognitionPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        if self.facts.is_empty() {
            return Ok(());
        }
        books::record_and_book_all(&mut *connection, &self.facts, policy, now)
            .await
            .map_err(classify)?;
        // What analytics keeps of invoices is not in the books.
        crate::analytics::fees::record_finalized(connection, &self.finalized)
            .await
            .map_err(classify)
    }
}

impl InvoiceEventsHandler {
    /// Books a void, after its finalization.
    async fn book_void(
        &self,
        connection: &mut sqlx::PgConnection,
        fact: tally_domain::finance::facts::InvoiceVoided,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let kept = stored_facts::invoice_kept(&mut *connection, fact.invoice.as_str())
            .await
            .map_err(classify)?;
        if !kept {
            // Its finalization failed and waits for redelivery: the
            // void would reverse nothing and be lost.
            return Err(HandlerError::Retry(format!(
                "the void of {} came before its finalization was booked",
                fact.invoice
            )));
        }
        let invoice = fact.invoice.clone();
        books::record_and_book(
            &mut *connection,
            &Booked::InvoiceVoided(fact),
            self.ledger.policy,
            now,
        )
        .await
        .map_err(classify)?;
        crate::analytics::fees::forget_voided(connection, invoice.as_str())
            .await
            .map_err(classify)
    }
}

#[async_trait]
impl BatchHandler for InvoiceEventsHandler {
    type Item = (String, InvoiceEvent);

    fn decode(&self, message: &Message) -> Result<Self::Item, String> {
        Ok((
            message.id.clone(),
            decode_event(message, INVOICE_EVENT_TYPE)?,
        ))
    }

    async fn handle(&self, items: Vec<Self::Item>) -> Result<(), HandlerError> {
        self.apply_all(&borrowed(&items)).await.map(|_| ())
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
        Ok(self.apply_all(&[(message_id, event)]).await? == 1)
    }

    /// Applies decoded events (message id, event), in the order given, in
    /// one transaction; returns how many were new (not in the inbox yet).
    /// Any failure rolls the whole batch back.
    pub async fn apply_all(&self, events: &[(&str, &PaymentEvent)]) -> Result<usize, HandlerError> {
        apply_in_one_transaction(self, events).await
    }
}

#[async_trait]
impl Booking for PaymentEventsHandler {
    type Event = PaymentEvent;

    fn target(&self) -> (&Ledger, &str) {
        (&self.ledger, &self.subscription)
    }

    /// Books the payments and refunds together.
    async fn book_all(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[&PaymentEvent],
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let mut booked = Vec::with_capacity(events.len());
        for event in events {
            booked.push(match &event.kind {
                Some(payment_event::Kind::Succeeded(succeeded)) => Booked::PaymentSucceeded(
                    facts::payment_succeeded(event, succeeded).map_err(poison)?,
                ),
                Some(payment_event::Kind::Refunded(refunded)) => Booked::RefundSucceeded(
                    facts::refund_succeeded(event, refunded).map_err(poison)?,
                ),
                // Failures, dunning steps and disputes move no money in the books.
                Some(_) => continue,
                None => return Err(poison("PaymentEvent without a kind")),
            });
        }
        books::record_and_book_all(connection, &booked, self.ledger.policy, now)
            .await
            .map_err(classify)
    }
}

#[async_trait]
impl BatchHandler for PaymentEventsHandler {
    type Item = (String, PaymentEvent);

    fn decode(&self, message: &Message) -> Result<Self::Item, String> {
        Ok((
            message.id.clone(),
            decode_event(message, PAYMENT_EVENT_TYPE)?,
        ))
    }

    async fn handle(&self, items: Vec<Self::Item>) -> Result<(), HandlerError> {
        self.apply_all(&borrowed(&items)).await.map(|_| ())
    }
}
