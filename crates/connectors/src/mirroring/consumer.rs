//! The bus handlers of mirroring, run on the bus's `Consumer` loop:
//! `connectors-invoice-events` reads the customer snapshot of every
//! `InvoiceEvent`, `connectors-subscription-events` every
//! `SubscriptionEvent`. An unexpected type or version, or an undecodable
//! payload, is poison.

use async_trait::async_trait;
use prost::Message as _;
use tally_bus::Message;
use tally_bus::consumer::{HandlerError, MessageHandler, check_type};
use tally_proto::events::{InvoiceEvent, SubscriptionEvent};

use super::Mirroring;
use super::model::{CustomerFact, SubscriptionFact};

/// The protobuf type name on `invoice-events`.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";
/// The protobuf type name on `subscription-events`.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";

/// The customer an invoice event carries, if it carries one.
pub fn customer_fact(event: &InvoiceEvent) -> Option<CustomerFact> {
    let customer = event.customer.as_ref()?;
    Some(CustomerFact {
        customer_id: customer.id.clone(),
        external_id: customer.external_id.clone(),
        name: customer.name.clone(),
        email: customer.billing_email.clone(),
        currency: customer.currency.clone(),
    })
}

/// The subscription a subscription event carries; `Err` says why it never will.
pub fn subscription_fact(event: &SubscriptionEvent) -> Result<SubscriptionFact, String> {
    let subscription = event
        .subscription
        .as_ref()
        .ok_or("SubscriptionEvent without a subscription")?;
    let start_at =
        tally_proto::convert::required_instant(subscription.start_at.as_ref(), "start_at")
            .map_err(|violation| format!("{}: {}", violation.field, violation.description))?;
    if subscription.id.is_empty() || subscription.customer_id.is_empty() {
        return Err("SubscriptionEvent without subscription.id or customer_id".to_owned());
    }
    Ok(SubscriptionFact {
        subscription_id: subscription.id.clone(),
        customer_id: subscription.customer_id.clone(),
        plan_id: subscription.plan_id.clone(),
        currency: subscription.currency.clone(),
        start_at,
    })
}

/// Mirrors the customers of `invoice-events`.
#[derive(Debug, Clone)]
pub struct CustomerFacts {
    mirroring: Mirroring,
    subscription: String,
}

impl CustomerFacts {
    /// A handler recording messages in the inbox under `subscription`.
    pub fn new(mirroring: Mirroring, subscription: impl Into<String>) -> Self {
        Self {
            mirroring,
            subscription: subscription.into(),
        }
    }
}

#[async_trait]
impl MessageHandler for CustomerFacts {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, INVOICE_EVENT_TYPE)?;
        let event = InvoiceEvent::decode(message.payload.as_slice())
            .map_err(|error| HandlerError::Poison(format!("undecodable InvoiceEvent: {error}")))?;
        // An invoice event without a customer snapshot tells mirroring nothing.
        let Some(fact) = customer_fact(&event) else {
            return Ok(());
        };
        self.mirroring
            .customer(&self.subscription, &message.id, &fact)
            .await
    }
}

/// Mirrors the subscriptions of `subscription-events`.
#[derive(Debug, Clone)]
pub struct SubscriptionFacts {
    mirroring: Mirroring,
    subscription: String,
}

impl SubscriptionFacts {
    /// A handler recording messages in the inbox under `subscription`.
    pub fn new(mirroring: Mirroring, subscription: impl Into<String>) -> Self {
        Self {
            mirroring,
            subscription: subscription.into(),
        }
    }
}

#[async_trait]
impl MessageHandler for SubscriptionFacts {
    async fn handle(&self, message: &Message, _delivery_attempt: u32) -> Result<(), HandlerError> {
        check_type(message, SUBSCRIPTION_EVENT_TYPE)?;
        let event = SubscriptionEvent::decode(message.payload.as_slice()).map_err(|error| {
            HandlerError::Poison(format!("undecodable SubscriptionEvent: {error}"))
        })?;
        let fact = subscription_fact(&event).map_err(HandlerError::Poison)?;
        self.mirroring
            .subscription_fact(&self.subscription, &message.id, &fact)
            .await
    }
}
