//! Messages invoicing publishes through its outbox (written in the same
//! transaction as the change they describe): `subscription-events` and
//! `invoice-events`, ordered by customer.

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_bus::inbox::ServiceSchema;
use tally_bus::{Message, outbox, topics};
use tally_domain::ids::InvoiceEventId;
use tally_proto::events::{InvoiceEvent, SubscriptionEvent, invoice_event, subscription_event};
use tally_proto::invoicing as proto;

use crate::billing::store as billing_store;
use crate::error::Result;
use crate::wire::timestamp;
use crate::{Shared, customers};

/// `tally-type` of subscription events.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "tally.events.v1.SubscriptionEvent";
/// `tally-type` of invoice events.
pub const INVOICE_EVENT_TYPE: &str = "tally.events.v1.InvoiceEvent";

/// Enqueues a snapshot of `subscription` (already at its new version) on
/// `subscription-events`. The message id is `<subscription>.v<version>`, the
/// event's de-duplication key.
pub async fn subscription_changed(
    connection: &mut PgConnection,
    subscription: proto::Subscription,
    effective_at: DateTime<Utc>,
    now: DateTime<Utc>,
    kind: subscription_event::Kind,
) -> Result<()> {
    let message_id = format!("{}.v{}", subscription.id, subscription.version);
    let customer_id = subscription.customer_id.clone();
    let event = SubscriptionEvent {
        subscription_id: subscription.id.clone(),
        customer_id: customer_id.clone(),
        version: subscription.version,
        effective_at: Some(timestamp(effective_at)),
        occurred_at: Some(timestamp(now)),
        subscription: Some(subscription),
        kind: Some(kind),
    };
    let message = Message::new(SUBSCRIPTION_EVENT_TYPE, 1, event.encode_to_vec())
        .with_id(message_id)
        .with_ordering_key(customer_id);
    outbox::enqueue(
        connection,
        ServiceSchema::Invoicing,
        topics::SUBSCRIPTION_EVENTS,
        &message,
    )
    .await?;
    Ok(())
}

/// Enqueues an invoice snapshot with the customer on `invoice-events`.
pub async fn invoice_changed(
    connection: &mut PgConnection,
    event_id: String,
    invoice: proto::Invoice,
    customer: proto::Customer,
    now: DateTime<Utc>,
    kind: invoice_event::Kind,
) -> Result<()> {
    let message = invoice_message(event_id, invoice, customer, now, kind);
    outbox::enqueue(
        connection,
        ServiceSchema::Invoicing,
        topics::INVOICE_EVENTS,
        &message,
    )
    .await?;
    Ok(())
}

/// The `invoice-events` message of an invoice snapshot with the customer
/// (ordered by customer; the event id is the message id).
pub fn invoice_message(
    event_id: String,
    invoice: proto::Invoice,
    customer: proto::Customer,
    now: DateTime<Utc>,
    kind: invoice_event::Kind,
) -> Message {
    let customer_id = invoice.customer_id.clone();
    let event = InvoiceEvent {
        event_id: event_id.clone(),
        invoice_id: invoice.id.clone(),
        customer_id: customer_id.clone(),
        occurred_at: Some(timestamp(now)),
        invoice: Some(invoice),
        customer: Some(customer),
        kind: Some(kind),
    };
    Message::new(INVOICE_EVENT_TYPE, 1, event.encode_to_vec())
        .with_id(event_id)
        .with_ordering_key(customer_id)
}

impl Shared {
    /// Enqueues the invoice as it is now on `invoice-events`.
    pub(crate) async fn publish_invoice(
        &self,
        connection: &mut PgConnection,
        invoice_id: &str,
        now: DateTime<Utc>,
        kind: invoice_event::Kind,
    ) -> Result<()> {
        let row = billing_store::load(&mut *connection, invoice_id, false).await?;
        let invoice = billing_store::to_proto(&mut *connection, &row, true).await?;
        let customer = customers::load(&mut *connection, &row.customer_id, false).await?;
        invoice_changed(
            connection,
            self.ids.mint::<InvoiceEventId>().into(),
            invoice,
            customer,
            now,
            kind,
        )
        .await
    }
}
