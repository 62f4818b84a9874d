//! The staging consumers: `usage-accepted` → `usage_events`, and
//! `invoice-events` → `invoices`, `invoice_lines` and `credit_notes`,
//! `payment-events` → `payment_events` and `refunds`, `subscription-events`
//! → `subscriptions`. Each message is staged
//! in one transaction with its inbox record: a redelivery stages nothing.
//! A message that can never be staged (wrong type, undecodable, missing ids)
//! is dead-lettered at once.

use async_trait::async_trait;
use prost::Message as _;
use sqlx::PgPool;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler, check_type};
use tally_bus::inbox::{self, ServiceSchema};
use tally_proto::events::{InvoiceEvent, PaymentEvent, SubscriptionEvent, UsageAccepted};
use tally_runtime::SharedClock;

use super::{StagedRow, store};

/// The bus message type on `usage-accepted`.
pub const USAGE_ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";
/// The bus message type on `invoice-events`.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";
/// The bus message type on `payment-events`.
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";
/// The bus message type on `subscription-events`.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";

/// What both consumers share: the pool, the clock and their subscription.
#[derive(Debug, Clone)]
pub struct Stager {
    pool: PgPool,
    clock: SharedClock,
    subscription: String,
}

impl Stager {
    /// A stager recording messages in the inbox under `subscription`.
    pub fn new(pool: PgPool, clock: SharedClock, subscription: impl Into<String>) -> Self {
        Self {
            pool,
            clock,
            subscription: subscription.into(),
        }
    }

    /// Stages `rows` for `message_id` once; `Ok(false)` when the inbox had it.
    pub async fn stage_once(
        &self,
        message_id: &str,
        rows: &[StagedRow],
    ) -> Result<bool, HandlerError> {
        let retry = |error: sqlx::Error| HandlerError::Retry(format!("database: {error}"));
        let mut transaction = self.pool.begin().await.map_err(retry)?;
        let first = inbox::record_once(
            &mut transaction,
            ServiceSchema::Export,
            &self.subscription,
            message_id,
        )
        .await
        .map_err(retry)?;
        if !first {
            return Ok(false);
        }
        let staged = store::stage(&mut transaction, rows, self.clock.now())
            .await
            .map_err(retry)?;
        transaction.commit().await.map_err(retry)?;
        crate::metrics::rows_staged(staged);
        Ok(true)
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// Stages `usage-accepted`.
#[derive(Debug, Clone)]
pub struct UsageAcceptedHandler(pub Stager);

#[async_trait]
impl MessageHandler for UsageAcceptedHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, USAGE_ACCEPTED_TYPE)?;
        let accepted = UsageAccepted::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable UsageAccepted: {error}")))?;
        let row = super::usage_row(&accepted, self.0.now()).map_err(HandlerError::Poison)?;
        self.0.stage_once(&message.id, &[row]).await.map(|_| ())
    }
}

/// Stages `invoice-events`.
#[derive(Debug, Clone)]
pub struct InvoiceEventsHandler(pub Stager);

#[async_trait]
impl MessageHandler for InvoiceEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, INVOICE_EVENT_TYPE)?;
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable InvoiceEvent: {error}")))?;
        let rows = super::invoice_rows(&event, self.0.now()).map_err(HandlerError::Poison)?;
        self.0.stage_once(&message.id, &rows).await.map(|_| ())
    }
}

/// Stages `payment-events`.
#[derive(Debug, Clone)]
pub struct PaymentEventsHandler(pub Stager);

#[async_trait]
impl MessageHandler for PaymentEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, PAYMENT_EVENT_TYPE)?;
        let event = PaymentEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable PaymentEvent: {error}")))?;
        let now = self.0.now();
        let row = super::payments::payment_row(&event, now).map_err(HandlerError::Poison)?;
        let mut rows = vec![row];
        rows.extend(super::credits::refund_row(&event, now));
        self.0.stage_once(&message.id, &rows).await.map(|_| ())
    }
}

/// Stages `subscription-events`.
#[derive(Debug, Clone)]
pub struct SubscriptionEventsHandler(pub Stager);

#[async_trait]
impl MessageHandler for SubscriptionEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, SUBSCRIPTION_EVENT_TYPE)?;
        let event = SubscriptionEvent::decode(message.payload.as_slice()).map_err(|error| {
            HandlerError::Poison(format!("undecodable SubscriptionEvent: {error}"))
        })?;
        let row = super::subscriptions::subscription_row(&event, self.0.now())
            .map_err(HandlerError::Poison)?;
        self.0.stage_once(&message.id, &[row]).await.map(|_| ())
    }
}
