//! `UsageAccepted` bytes → an event rating can classify.
//!
//! Properties travel as strings; they become domain `PropertyValue`s through
//! the very conversion the catalog applies to filter values
//! (`catalog::mapping::property_value`: a numeric string becomes a number,
//! anything else stays text), so a meter's filters and the events they test
//! always agree.

use std::collections::BTreeMap;

use prost::Message as _;
use tally_domain::event::{RawUsageEvent, UsageEvent};
use tally_proto::events::UsageAccepted;

use crate::catalog::mapping::property_value;

/// An accepted event as rating reads it.
#[derive(Clone, Debug)]
pub struct AcceptedEvent {
    /// `cus_…` as delivered (the de-duplication key's first half).
    pub customer_id: String,
    /// The producer's event id (the key's second half).
    pub event_id: String,
    /// Ingest's sequence number.
    pub sequence_number: i64,
    /// The event, or why the domain refused it (kept as INVALID_PROPERTY).
    pub event: Result<UsageEvent, String>,
    /// The `UsageAccepted` bytes, stored as-is if the event stays unrated.
    pub accepted: Vec<u8>,
}

/// A message that can never be an accepted event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf `UsageAccepted`.
    #[error("not a tally.events.v1.UsageAccepted: {0}")]
    Undecodable(String),
    /// Without a customer and an id there is no key to rate it once under.
    #[error("UsageAccepted without {0}")]
    MissingKey(&'static str),
}

/// Decodes one `UsageAccepted`.
pub fn decode_accepted(bytes: &[u8]) -> Result<AcceptedEvent, DecodeError> {
    let accepted = UsageAccepted::decode(bytes)
        .map_err(|error| DecodeError::Undecodable(error.to_string()))?;
    accepted_event(accepted, bytes.to_vec())
}

/// An already decoded `UsageAccepted` (e.g. from ingest's `ReadEvents`);
/// `bytes` is what is stored if the event stays unrated (empty when the
/// caller never stores it).
pub fn accepted_event(
    accepted: UsageAccepted,
    bytes: Vec<u8>,
) -> Result<AcceptedEvent, DecodeError> {
    let event = accepted.event.ok_or(DecodeError::MissingKey("event"))?;
    if event.customer_id.is_empty() {
        return Err(DecodeError::MissingKey("event.customer_id"));
    }
    if event.id.is_empty() {
        return Err(DecodeError::MissingKey("event.id"));
    }
    let sequence_number = i64::try_from(accepted.sequence_number)
        .map_err(|_| DecodeError::Undecodable("sequence_number out of range".into()))?;
    let timestamp = crate::wire::instant(event.timestamp.as_ref());
    let raw = RawUsageEvent {
        id: event.id.clone(),
        customer: event.customer_id.clone(),
        event_type: event.event_type,
        timestamp,
        properties: event
            .properties
            .iter()
            .map(|(name, value)| (name.clone(), property_value(value)))
            .collect::<BTreeMap<_, _>>(),
    };
    Ok(AcceptedEvent {
        customer_id: event.customer_id,
        event_id: event.id,
        sequence_number,
        event: UsageEvent::from_raw(raw).map_err(|error| error.to_string()),
        accepted: bytes,
    })
}
