//! What travels on the bus.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use tally_domain::ids::{IdBody, MessageId, PrefixedId};

/// Attribute: the producer's message id, stable across republishing (the inbox key).
pub const ATTRIBUTE_MESSAGE_ID: &str = "tally-message-id";
/// Attribute: full protobuf message name, e.g. `tally.events.v1.UsageAccepted`.
pub const ATTRIBUTE_TYPE: &str = "tally-type";
/// Attribute: version of that message type's schema.
pub const ATTRIBUTE_VERSION: &str = "tally-version";
/// Attribute: `application/x-protobuf` (default) or `application/json`.
pub const ATTRIBUTE_CONTENT_TYPE: &str = "content-type";
/// Attribute on dead letters: why the last attempt failed.
pub const ATTRIBUTE_DEAD_LETTER_REASON: &str = "tally-dead-letter-reason";
/// Attribute on dead letters: the subscription that gave up.
pub const ATTRIBUTE_DEAD_LETTER_SUBSCRIPTION: &str = "tally-dead-letter-subscription";
/// Attribute on dead letters: how many deliveries were tried.
pub const ATTRIBUTE_DEAD_LETTER_ATTEMPTS: &str = "tally-dead-letter-attempts";

/// A bus message: a typed, versioned payload with attributes and an ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id chosen by the producer; consumers de-duplicate by it.
    pub id: String,
    /// Full protobuf message name (empty for foreign messages without the attribute).
    pub message_type: String,
    /// Schema version of `message_type`.
    pub type_version: u32,
    /// Messages with the same key are delivered in order (Tally uses the customer id).
    pub ordering_key: Option<String>,
    /// Free-form attributes, including `content-type` and W3C trace context.
    pub attributes: HashMap<String, String>,
    /// The encoded message.
    pub payload: Vec<u8>,
}

impl Message {
    /// A new message with a fresh id that carries the current span's trace context.
    pub fn new(message_type: impl Into<String>, type_version: u32, payload: Vec<u8>) -> Self {
        let mut attributes = HashMap::new();
        tally_runtime::telemetry::inject_current_context(&mut attributes);
        Self {
            // Wall time, not the injected clock: a message id only has to be unique.
            id: MessageId::with_body(&IdBody::hex(uuid::Uuid::now_v7().as_u128())).into(),
            message_type: message_type.into(),
            type_version,
            ordering_key: None,
            attributes,
            payload,
        }
    }

    /// Replaces the id (producers that derive ids from their own records).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the ordering key.
    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The attributes as sent on the wire: the free-form ones plus id, type and version.
    pub fn wire_attributes(&self) -> HashMap<String, String> {
        let mut attributes = self.attributes.clone();
        attributes.insert(ATTRIBUTE_MESSAGE_ID.to_owned(), self.id.clone());
        attributes.insert(ATTRIBUTE_TYPE.to_owned(), self.message_type.clone());
        attributes.insert(ATTRIBUTE_VERSION.to_owned(), self.type_version.to_string());
        attributes
    }

    /// Rebuilds a message from wire attributes. Messages from foreign producers
    /// (no `tally-*` attributes) get `fallback_id` (the backend's id), an empty
    /// type and version 1. An unreadable version becomes 0 and the attribute is
    /// kept, so the consumer refuses it and it is dead-lettered, not lost.
    pub fn from_wire(
        mut attributes: HashMap<String, String>,
        ordering_key: Option<String>,
        payload: Vec<u8>,
        fallback_id: &str,
    ) -> Self {
        let id = attributes
            .remove(ATTRIBUTE_MESSAGE_ID)
            .unwrap_or_else(|| fallback_id.to_owned());
        let message_type = attributes.remove(ATTRIBUTE_TYPE).unwrap_or_default();
        let type_version = match attributes
            .get(ATTRIBUTE_VERSION)
            .map(|version| version.parse::<u32>())
        {
            Some(Ok(version)) => {
                attributes.remove(ATTRIBUTE_VERSION);
                version
            }
            Some(Err(_)) => 0,
            None => 1,
        };
        Self {
            id,
            message_type,
            type_version,
            ordering_key: ordering_key.filter(|key| !key.is_empty()),
            attributes,
            payload,
        }
    }
}

/// How a backend settles one delivery.
pub trait Acknowledger: Send + fmt::Debug {
    /// The message is done: never deliver it again.
    fn ack(self: Box<Self>);
    /// The message failed: deliver it again (possibly to another consumer).
    fn nack(self: Box<Self>);
}

/// One delivery of a message. Ack or nack it; dropping it counts as a nack.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// 1 for the first delivery, 2 for the first redelivery, …
    pub delivery_attempt: u32,
    /// When the message was first published (the same on every redelivery),
    /// if the backend says.
    pub published_at: Option<DateTime<Utc>>,
    acknowledger: Box<dyn Acknowledger>,
    /// Counts the delivery as held by this process until it is settled or dropped.
    in_flight: Option<crate::age::InFlight>,
}

impl Delivery {
    /// Wraps a message with the backend's acknowledger.
    pub fn new(
        message: Message,
        delivery_attempt: u32,
        acknowledger: Box<dyn Acknowledger>,
    ) -> Self {
        Self {
            message,
            delivery_attempt,
            published_at: None,
            acknowledger,
            in_flight: None,
        }
    }

    /// Sets the publish time.
    pub fn with_published_at(mut self, published_at: DateTime<Utc>) -> Self {
        self.published_at = Some(published_at);
        self
    }

    /// Marks the delivery as held until settled (see [`crate::age`]).
    pub(crate) fn hold(&mut self, in_flight: crate::age::InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// Settles the delivery as done.
    pub fn ack(self) {
        self.acknowledger.ack();
        drop(self.in_flight);
    }

    /// Asks for redelivery.
    pub fn nack(self) {
        self.acknowledger.nack();
        drop(self.in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_attributes_round_trip() {
        let message = Message::new("tally.events.v1.UsageAccepted", 2, b"payload".to_vec())
            .with_ordering_key("cus_1")
            .with_attribute("content-type", "application/x-protobuf");
        let rebuilt = Message::from_wire(
            message.wire_attributes(),
            message.ordering_key.clone(),
            message.payload.clone(),
            "ignored",
        );
        assert_eq!(rebuilt, message);
    }

    #[test]
    fn foreign_messages_get_the_backend_id() {
        let message =
            Message::from_wire(HashMap::new(), Some(String::new()), b"{}".to_vec(), "12345");
        assert_eq!(message.id, "12345");
        assert_eq!(message.message_type, "");
        assert_eq!(message.ordering_key, None);
        let bad = HashMap::from([(ATTRIBUTE_VERSION.to_owned(), "x".to_owned())]);
        let unreadable = Message::from_wire(bad, None, vec![], "1");
        assert_eq!(unreadable.type_version, 0);
        assert_eq!(unreadable.attributes[ATTRIBUTE_VERSION], "x");
    }
}
