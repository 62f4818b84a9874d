//! Reading the log back: replay pages, an event's status, rejected events.
//! The SQL is in [`store`].

mod store;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgPool;
use tally_proto::events::{RejectionKind, UsageEvent as WireEvent, UsageRejected};
use tally_proto::ingest::RejectedEvent;
use tally_runtime::clock_service::chrono_to_timestamp;

use crate::log::{self, violations_from_json};

pub use store::{
    accepted_key, committed_high_water, events_page, is_pending, list_rejections,
    published_high_water, record_replays, rejections_by_id, rejections_of, snapshot_bound,
};

/// Where `ReadEvents` is in its range: after this (event time, sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    /// Event time of the last event returned.
    pub event_time: DateTime<Utc>,
    /// Its sequence number.
    pub seq: i64,
}

impl ReadPosition {
    /// The opaque resume token.
    pub fn token(&self) -> String {
        format!("{}:{}", self.event_time.timestamp_micros(), self.seq)
    }

    /// Parses a resume token.
    pub fn parse(token: &str) -> Option<ReadPosition> {
        let (micros, seq) = token.split_once(':')?;
        Some(ReadPosition {
            event_time: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            seq: seq.parse().ok()?,
        })
    }
}

/// The accepted event itself.
pub async fn accepted_event(
    pool: &PgPool,
    customer_id: &str,
    event_id: &str,
    event_time: DateTime<Utc>,
) -> Result<Option<tally_proto::events::UsageAccepted>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    log::fetch_event(&mut connection, customer_id, event_id, event_time).await
}

/// A stored rejection as read back.
#[derive(Debug, sqlx::FromRow)]
pub struct RejectionRow {
    id: String,
    kind: i16,
    event: Option<Vec<u8>>,
    violations: sqlx::types::Json<serde_json::Value>,
    raw_payload: Option<Vec<u8>>,
    raw_content_type: Option<String>,
    intake: i16,
    rejected_at: DateTime<Utc>,
    state: i16,
    replay_count: i32,
    resolved_at: Option<DateTime<Utc>>,
    event_summarized: bool,
}

impl RejectionRow {
    /// The rejection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the kept event is only a summary of one too large to keep
    /// (it must be resent, never replayed).
    pub fn is_summarized(&self) -> bool {
        self.event_summarized
    }

    /// The event as received, if it decoded (a summary when [`Self::is_summarized`]).
    pub fn event(&self) -> Option<WireEvent> {
        self.event
            .as_deref()
            .and_then(|bytes| WireEvent::decode(bytes).ok())
    }

    /// The original payload and content type of an undecodable message.
    pub fn raw(&self) -> Option<(&[u8], &str)> {
        match (self.kind, &self.raw_payload) {
            (kind, Some(payload)) if kind == RejectionKind::Undecodable as i16 => Some((
                payload.as_slice(),
                self.raw_content_type.as_deref().unwrap_or_default(),
            )),
            _ => None,
        }
    }

    /// The API form.
    pub fn into_proto(self) -> RejectedEvent {
        RejectedEvent {
            rejection: Some(UsageRejected {
                rejection_id: self.id.clone(),
                event: self.event(),
                kind: i32::from(self.kind),
                violations: violations_from_json(&self.violations.0),
                raw_payload: self.raw_payload.unwrap_or_default(),
                raw_content_type: self.raw_content_type.unwrap_or_default(),
                rejected_at: Some(chrono_to_timestamp(self.rejected_at)),
                intake: i32::from(self.intake),
            }),
            state: i32::from(self.state),
            replay_count: u32::try_from(self.replay_count).unwrap_or(0),
            resolved_at: self.resolved_at.map(chrono_to_timestamp),
        }
    }
}

/// Filters of `ListRejectedEvents`.
#[derive(Debug, Clone, Default)]
pub struct RejectionFilter {
    /// Only this customer.
    pub customer_id: Option<String>,
    /// Only this kind.
    pub kind: Option<i16>,
    /// Only this state.
    pub state: Option<i16>,
    /// Rejected at or after.
    pub from: Option<DateTime<Utc>>,
    /// Rejected before.
    pub to: Option<DateTime<Utc>>,
    /// With a violation of this rule.
    pub rule: Option<String>,
}
