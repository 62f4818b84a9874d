//! The third consumer: `subscription-events` (subscription
//! `finance-subscription-events`, unordered). Each message is a full
//! snapshot with a version; it is stored only when its version is higher
//! than the stored one (one upsert with a `WHERE version <` guard, as
//! rating's replica does), so late, reordered and redelivered snapshots
//! leave the newest in place. The inbox records each message in the same
//! transaction, like the ledger's consumers.
//!
//! Finance keeps only the instants that decide when a subscription counts
//! towards MRR (start, trial end, pauses, end); the snapshot's phases and
//! plan versions are not needed, since the fees come from invoices
//! ([`super::fees`]).

use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler, check_type};
use tally_domain::money::Currency;
use tally_proto::convert;
use tally_proto::events::SubscriptionEvent;
use tally_proto::invoicing::SubscriptionStatus;

pub use super::model::{Pause, SubscriptionFacts};
use super::store;
use crate::consumers::{Ledger, classify, first_delivery};
use crate::error::FinanceServiceError;

/// The bus message type on `subscription-events`.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";

fn invalid(description: String) -> FinanceServiceError {
    tally_runtime::error::FieldViolation::new("subscription", "invalid_value", description).into()
}

fn status_name(status: i32) -> Result<&'static str, FinanceServiceError> {
    match SubscriptionStatus::try_from(status) {
        Ok(SubscriptionStatus::Pending) => Ok("pending"),
        Ok(SubscriptionStatus::Trialing) => Ok("trialing"),
        Ok(SubscriptionStatus::Active) => Ok("active"),
        Ok(SubscriptionStatus::PastDue) => Ok("past_due"),
        Ok(SubscriptionStatus::Paused) => Ok("paused"),
        Ok(SubscriptionStatus::Canceled) => Ok("canceled"),
        Ok(SubscriptionStatus::Unspecified) | Err(_) => {
            Err(invalid(format!("unknown subscription status {status}")))
        }
    }
}

/// Reads a snapshot. A canceled snapshot without `ended_at` or `cancel_at`
/// ends at the event's `effective_at`; a paused one without any window is
/// paused from it, indefinitely.
pub fn subscription_facts(
    event: &SubscriptionEvent,
) -> Result<SubscriptionFacts, FinanceServiceError> {
    let subscription = event
        .subscription
        .as_ref()
        .ok_or_else(|| invalid("is required".to_owned()))?;
    if !subscription.id.starts_with("sub_")
        || (!event.subscription_id.is_empty() && event.subscription_id != subscription.id)
    {
        return Err(invalid(format!(
            "id {:?} is not the event's subscription {:?}",
            subscription.id, event.subscription_id
        )));
    }
    if !subscription.customer_id.starts_with("cus_") {
        return Err(invalid(format!(
            "{}: customer_id {:?} is not a customer",
            subscription.id, subscription.customer_id
        )));
    }
    let currency = Currency::from_code(&subscription.currency).map_err(|_| {
        invalid(format!(
            "{}: {:?} is not a currency",
            subscription.id, subscription.currency
        ))
    })?;
    let version = if event.version == 0 {
        subscription.version
    } else {
        event.version
    };
    let version = i64::try_from(version)
        .ok()
        .filter(|version| *version > 0)
        .ok_or_else(|| invalid(format!("{}: version {version}", subscription.id)))?;
    let status = status_name(subscription.status)?;
    let effective_at = convert::instant(event.effective_at.as_ref())
        .or_else(|| convert::instant(event.occurred_at.as_ref()));
    let mut ends_at = convert::instant(subscription.ended_at.as_ref())
        .or_else(|| convert::instant(subscription.cancel_at.as_ref()));
    if status == "canceled" && ends_at.is_none() {
        ends_at = effective_at;
    }
    let windows = if subscription.pauses.is_empty() {
        subscription.pause.iter().collect::<Vec<_>>()
    } else {
        subscription.pauses.iter().collect()
    };
    let mut pauses: Vec<Pause> = windows
        .into_iter()
        .filter_map(|window| {
            Some(Pause {
                pause_at: convert::instant(window.pause_at.as_ref())?,
                resume_at: convert::instant(window.resume_at.as_ref()),
            })
        })
        .collect();
    if status == "paused"
        && pauses.is_empty()
        && let Some(pause_at) = effective_at
    {
        pauses.push(Pause {
            pause_at,
            resume_at: None,
        });
    }
    Ok(SubscriptionFacts {
        subscription_id: subscription.id.clone(),
        customer_id: subscription.customer_id.clone(),
        currency: currency.code().to_owned(),
        status,
        version,
        start_at: convert::instant(subscription.start_at.as_ref()),
        trial_end_at: convert::instant(subscription.trial_end_at.as_ref()),
        ends_at,
        pauses,
    })
}

/// Applies `subscription-events`.
#[derive(Debug, Clone)]
pub struct SubscriptionEventsHandler {
    ledger: Arc<Ledger>,
    subscription: String,
}

impl SubscriptionEventsHandler {
    /// A handler recording messages in the inbox under `subscription`.
    pub fn new(ledger: Arc<Ledger>, subscription: impl Into<String>) -> Self {
        Self {
            ledger,
            subscription: subscription.into(),
        }
    }

    /// Applies one decoded event; `Ok(false)` when the inbox had it already.
    /// A snapshot older than the stored one is recorded and changes nothing.
    pub async fn apply(
        &self,
        message_id: &str,
        event: &SubscriptionEvent,
    ) -> Result<bool, HandlerError> {
        let facts = subscription_facts(event).map_err(classify)?;
        let pauses = serde_json::to_value(&facts.pauses)
            .map_err(|error| HandlerError::Poison(format!("serialising pauses: {error}")))?;
        let database = |error: sqlx::Error| classify(error.into());
        let Some(mut transaction) =
            first_delivery(&self.ledger.pool, &self.subscription, message_id).await?
        else {
            return Ok(false);
        };
        store::upsert_subscription_if_newer(&mut transaction, &facts, &pauses)
            .await
            .map_err(database)?;
        transaction.commit().await.map_err(database)?;
        Ok(true)
    }
}

#[async_trait]
impl MessageHandler for SubscriptionEventsHandler {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, SUBSCRIPTION_EVENT_TYPE)?;
        let event = SubscriptionEvent::decode(message.payload.as_slice()).map_err(|error| {
            HandlerError::Poison(format!("undecodable SubscriptionEvent: {error}"))
        })?;
        self.apply(&message.id, &event).await.map(|_| ())
    }
}
