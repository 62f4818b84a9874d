//! `PaymentEvent`s on `payment-events`, always through the outbox (written in
//! the transaction that changed the payment, published after the commit).

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_bus::inbox::ServiceSchema;
use tally_bus::{Message, outbox, topics};
use tally_proto::events::PaymentEvent;
use tally_proto::events::payment_event::Kind;
use tally_proto::payments as proto;

use crate::store::{self, PaymentRow};
use crate::wire::timestamp;

/// The full protobuf name (the `tally-type` attribute).
pub const PAYMENT_EVENT_TYPE: &str = "tally.events.v1.PaymentEvent";

/// Writes a `PaymentEvent` about `payment` to the outbox. `event_id` must be
/// derived from what happened (`pevt_…`), so a replayed cause yields the same
/// id and consumers de-duplicate it.
pub async fn enqueue(
    connection: &mut PgConnection,
    event_id: String,
    payment: &proto::Payment,
    occurred_at: DateTime<Utc>,
    kind: Kind,
) -> Result<(), sqlx::Error> {
    let event = PaymentEvent {
        event_id: event_id.clone(),
        invoice_id: payment.invoice_id.clone(),
        customer_id: payment.customer_id.clone(),
        occurred_at: Some(timestamp(occurred_at)),
        payment: Some(payment.clone()),
        kind: Some(kind),
    };
    let message = Message::new(PAYMENT_EVENT_TYPE, 1, event.encode_to_vec())
        .with_id(event_id)
        .with_ordering_key(payment.customer_id.clone());
    outbox::enqueue(
        connection,
        ServiceSchema::Payments,
        topics::PAYMENT_EVENTS,
        &message,
    )
    .await
}

/// Writes a `PaymentEvent` carrying `payment` as it is now (with its attempts
/// and refunds) to the outbox.
pub async fn publish(
    connection: &mut PgConnection,
    event_id: String,
    payment: &PaymentRow,
    occurred_at: DateTime<Utc>,
    kind: Kind,
) -> Result<(), sqlx::Error> {
    let wire = store::payment_to_proto(connection, payment).await?;
    enqueue(connection, event_id, &wire, occurred_at, kind).await
}
