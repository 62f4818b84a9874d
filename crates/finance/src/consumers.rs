//! The two consumers that feed the ledger: `invoice-events` (finalized,
//! voided, credit notes) and `payment-events` (payments and refunds). Each
//! message is applied in one database transaction with its inbox record, so
//! a redelivery changes nothing; every transaction it posts has an id
//! derived from the fact, so a replay of the topic from the start changes
//! nothing either.
//!
//! Usage is recognised when invoiced for now: no daily rated-usage facts
//! reach finance yet, so each usage line's true-up (invoiced − recognised
//! daily, with nothing recognised daily) moves the whole line from unbilled
//! receivables to usage revenue at finalization.

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_bus::inbox::{self, ServiceSchema};
use tally_domain::finance::RecognitionPolicy;
use tally_domain::finance::facts::{FinalizedLineKind, InvoiceFinalized};
use tally_domain::finance::posting;
use tally_domain::money::Money;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_runtime::SharedClock;

use crate::error::FinanceServiceError;
use crate::journal::store::{self, Source};
use crate::{facts, recognition};

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
        let mut transaction = self
            .ledger
            .pool
            .begin()
            .await
            .map_err(|error| classify(error.into()))?;
        let first = inbox::record_once(
            &mut transaction,
            ServiceSchema::Finance,
            &self.subscription,
            message_id,
        )
        .await
        .map_err(|error| classify(error.into()))?;
        if !first {
            return Ok(false);
        }
        let now = self.ledger.clock.now();
        match &event.kind {
            Some(invoice_event::Kind::Finalized(_)) => {
                let fact = facts::invoice_finalized(event).map_err(poison)?;
                finalized(&mut transaction, &fact, self.ledger.policy, now)
                    .await
                    .map_err(classify)?;
                crate::analytics::fees::record_finalized(&mut transaction, event)
                    .await
                    .map_err(classify)?;
            }
            Some(invoice_event::Kind::Voided(_)) => {
                let fact = facts::invoice_voided(event).map_err(poison)?;
                let posted = store::posted_for(&mut transaction, fact.invoice.as_str())
                    .await
                    .map_err(classify)?;
                let reversals = posting::post_invoice_voided(&fact, &posted).map_err(poison)?;
                store::post(
                    &mut transaction,
                    &reversals,
                    Source {
                        kind: "invoice",
                        id: fact.invoice.as_str(),
                    },
                    now,
                )
                .await
                .map_err(classify)?;
                sqlx::query("UPDATE finance.invoices SET voided_at = $2 WHERE invoice_id = $1")
                    .bind(fact.invoice.as_str())
                    .bind(fact.voided_at)
                    .execute(&mut *transaction)
                    .await
                    .map_err(|error| classify(error.into()))?;
                crate::analytics::fees::forget_voided(&mut transaction, fact.invoice.as_str())
                    .await
                    .map_err(classify)?;
            }
            Some(invoice_event::Kind::CreditNoteIssued(issued)) => {
                let fact = facts::credit_note_issued(event, issued).map_err(poison)?;
                let accounts = store::chart(fact.currency, []).map_err(classify)?;
                store::open_accounts(&mut transaction, &accounts)
                    .await
                    .map_err(classify)?;
                let posted = posting::post_credit_note(&fact).map_err(poison)?;
                store::post(
                    &mut transaction,
                    &posted,
                    Source {
                        kind: "credit_note",
                        id: fact.credit_note.as_str(),
                    },
                    now,
                )
                .await
                .map_err(classify)?;
            }
            // Paid and uncollectible change nothing in the books: the payment
            // events carry the cash, and a write-off is a credit note.
            Some(_) => {}
            None => return Err(poison("InvoiceEvent without a kind")),
        }
        transaction
            .commit()
            .await
            .map_err(|error| classify(error.into()))?;
        Ok(true)
    }
}

/// Books a finalized invoice: its lines, its usage true-ups and the
/// schedules of its deferred lines.
async fn finalized(
    connection: &mut PgConnection,
    fact: &InvoiceFinalized,
    policy: RecognitionPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), FinanceServiceError> {
    let meters = fact.lines.iter().filter_map(|line| match &line.kind {
        FinalizedLineKind::Usage { meter, .. } => Some(meter),
        _ => None,
    });
    let accounts = store::chart(fact.currency, meters)?;
    store::open_accounts(connection, &accounts).await?;
    let body = serde_json::to_value(fact).map_err(|error| {
        FinanceServiceError::Internal(format!("serialising {}: {error}", fact.invoice))
    })?;
    sqlx::query(
        "INSERT INTO finance.invoices (invoice_id, customer_id, currency, finalized_at, fact) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (invoice_id) DO NOTHING",
    )
    .bind(fact.invoice.as_str())
    .bind(fact.customer.as_str())
    .bind(fact.currency.code())
    .bind(fact.finalized_at)
    .bind(&body)
    .execute(&mut *connection)
    .await?;
    let mut posted = posting::post_invoice_finalized(fact)?;
    for line in &fact.lines {
        if matches!(line.kind, FinalizedLineKind::Usage { .. }) {
            posted.extend(posting::post_usage_true_up(
                fact,
                &line.line_id,
                Money::zero(fact.currency),
            )?);
        }
    }
    let source = Source {
        kind: "invoice",
        id: fact.invoice.as_str(),
    };
    store::post(connection, &posted, source, now).await?;
    recognition::store_schedules(connection, fact, policy).await
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
        let mut transaction = self
            .ledger
            .pool
            .begin()
            .await
            .map_err(|error| classify(error.into()))?;
        let first = inbox::record_once(
            &mut transaction,
            ServiceSchema::Finance,
            &self.subscription,
            message_id,
        )
        .await
        .map_err(|error| classify(error.into()))?;
        if !first {
            return Ok(false);
        }
        let now = self.ledger.clock.now();
        let (posted, source_kind, source_id, currency) = match &event.kind {
            Some(payment_event::Kind::Succeeded(succeeded)) => {
                let fact = facts::payment_succeeded(event, succeeded).map_err(poison)?;
                let posted = posting::post_payment(&fact).map_err(poison)?;
                (
                    posted,
                    "payment",
                    fact.payment_id.as_str().to_owned(),
                    fact.amount.currency(),
                )
            }
            Some(payment_event::Kind::Refunded(refunded)) => {
                let fact = facts::refund_succeeded(event, refunded).map_err(poison)?;
                let posted = posting::post_refund(&fact).map_err(poison)?;
                (
                    posted,
                    "refund",
                    fact.refund_id.as_str().to_owned(),
                    fact.amount.currency(),
                )
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
        let accounts = store::chart(currency, []).map_err(classify)?;
        store::open_accounts(&mut transaction, &accounts)
            .await
            .map_err(classify)?;
        store::post(
            &mut transaction,
            &posted,
            Source {
                kind: source_kind,
                id: &source_id,
            },
            now,
        )
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
