//! The staging consumers: `usage-accepted` → `usage_events`, and
//! `invoice-events` → `invoices`, `invoice_lines` and `credit_notes`,
//! `payment-events` → `payment_events` and `refunds`, `subscription-events`
//! → `subscriptions`.
//!
//! Each is a [`BatchHandler`]: a batch of messages (up to
//! [`STAGE_BATCH_MESSAGES`]) is staged in **one transaction** with the
//! batch's inbox records, so a redelivery stages nothing and one durable
//! commit carries many messages. A batch that fails is retried one message
//! at a time by the bus. A message that can never be staged (wrong type,
//! undecodable, missing ids) is dead-lettered at once. The [`MessageHandler`]
//! impls stage one message as a batch of one (tests, in-process callers).

use std::collections::HashSet;

use async_trait::async_trait;
use prost::Message as _;
use sqlx::PgPool;
use tally_bus::Message;
use tally_bus::batch::BatchHandler;
use tally_bus::consumer::{HandlerError, MessageHandler, check_type};
use tally_proto::events::{InvoiceEvent, PaymentEvent, SubscriptionEvent, UsageAccepted};
use tally_runtime::SharedClock;

use super::{Poison, StagedRow, store};

/// The bus message type on `usage-accepted`.
pub const USAGE_ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";
/// The bus message type on `invoice-events`.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";
/// The bus message type on `payment-events`.
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";
/// The bus message type on `subscription-events`.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";

/// Most messages staged in one transaction.
pub const STAGE_BATCH_MESSAGES: usize = 200;
/// Staging batches of one subscription committed at once.
pub const STAGE_BATCHES_IN_FLIGHT: usize = 2;

/// A message turned into its rows, waiting for its batch's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The bus message id (its inbox record).
    pub message_id: String,
    /// The rows it stages.
    pub rows: Vec<StagedRow>,
}

/// What the consumers share: the pool, the clock and their subscription.
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
        let message = Decoded {
            message_id: message_id.to_owned(),
            rows: rows.to_vec(),
        };
        Ok(self.stage_all(std::slice::from_ref(&message)).await? == 1)
    }

    /// Stages the rows of every message of `messages` the inbox does not
    /// have yet (a message twice in the batch counts once), with their inbox
    /// records, in one transaction; returns how many messages were new.
    pub async fn stage_all(&self, messages: &[Decoded]) -> Result<usize, HandlerError> {
        let retry = |error: sqlx::Error| HandlerError::Retry(format!("database: {error}"));
        let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
        let mut transaction = self.pool.begin().await.map_err(retry)?;
        let mut new: HashSet<String> =
            store::record_new(&mut transaction, &self.subscription, &ids)
                .await
                .map_err(retry)?;
        let first = new.len();
        if first == 0 {
            return Ok(0);
        }
        let rows: Vec<&StagedRow> = messages
            .iter()
            .filter(|message| new.remove(&message.message_id))
            .flat_map(|message| message.rows.iter())
            .collect();
        let staged = store::stage(&mut transaction, &rows, self.clock.now())
            .await
            .map_err(retry)?;
        transaction.commit().await.map_err(retry)?;
        crate::metrics::rows_staged(staged);
        Ok(first)
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// `check_type`'s refusal as the batch consumer's poison reason.
fn of_type(message: &Message, expected: &str) -> Result<(), Poison> {
    check_type(message, expected).map_err(|error| match error {
        HandlerError::Poison(reason) | HandlerError::Retry(reason) => reason,
    })
}

/// The four handlers: each turns its message into rows (`rows`), stages
/// batches of them in one transaction, and one message as a batch of one.
macro_rules! staging_handler {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Stager);

        #[async_trait]
        impl BatchHandler for $name {
            type Item = Decoded;

            fn decode(&self, message: &Message) -> Result<Decoded, String> {
                Ok(Decoded {
                    message_id: message.id.clone(),
                    rows: self.rows(message)?,
                })
            }

            async fn handle(&self, items: Vec<Decoded>) -> Result<(), HandlerError> {
                self.0.stage_all(&items).await.map(|_| ())
            }
        }

        #[async_trait]
        impl MessageHandler for $name {
            async fn handle(
                &self,
                message: &Message,
                _delivery_attempt: u32,
            ) -> Result<(), HandlerError> {
                let decoded = BatchHandler::decode(self, message).map_err(HandlerError::Poison)?;
                self.0.stage_all(&[decoded]).await.map(|_| ())
            }
        }
    };
}

staging_handler!(
    /// Stages `usage-accepted`.
    UsageAcceptedHandler
);
staging_handler!(
    /// Stages `invoice-events`.
    InvoiceEventsHandler
);
staging_handler!(
    /// Stages `payment-events`.
    PaymentEventsHandler
);
staging_handler!(
    /// Stages `subscription-events`.
    SubscriptionEventsHandler
);

impl UsageAcceptedHandler {
    fn rows(&self, message: &Message) -> Result<Vec<StagedRow>, Poison> {
        of_type(message, USAGE_ACCEPTED_TYPE)?;
        let accepted = UsageAccepted::decode(message.payload.as_slice())
            .map_err(|error| format!("undecodable UsageAccepted: {error}"))?;
        Ok(vec![super::usage_row(&accepted, self.0.now())?])
    }
}

impl InvoiceEventsHandler {
    fn rows(&self, message: &Message) -> Result<Vec<StagedRow>, Poison> {
        of_type(message, INVOICE_EVENT_TYPE)?;
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| format!("undecodable InvoiceEvent: {error}"))?;
        super::invoice_rows(&event, self.0.now())
    }
}

impl PaymentEventsHandler {
    fn rows(&self, message: &Message) -> Result<Vec<StagedRow>, Poison> {
        of_type(message, PAYMENT_EVENT_TYPE)?;
        let event = PaymentEvent::decode(message.payload.as_slice())
            .map_err(|error| format!("undecodable PaymentEvent: {error}"))?;
        let now = self.0.now();
        let mut rows = vec![super::payments::payment_row(&event, now)?];
        rows.extend(super::credits::refund_row(&event, now));
        Ok(rows)
    }
}

impl SubscriptionEventsHandler {
    fn rows(&self, message: &Message) -> Result<Vec<StagedRow>, Poison> {
        of_type(message, SUBSCRIPTION_EVENT_TYPE)?;
        let event = SubscriptionEvent::decode(message.payload.as_slice())
            .map_err(|error| format!("undecodable SubscriptionEvent: {error}"))?;
        Ok(vec![super::subscriptions::subscription_row(
            &event,
            self.0.now(),
        )?])
    }
}
