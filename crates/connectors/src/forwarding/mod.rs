//! Forwarding accepted usage to Orb: the rule this module keeps is that
//! every message read from `usage-accepted` ends **once** in one state per
//! event — forwarded, rejected (with Orb's reason) or not mapped — recorded
//! in the transaction that records the message in the inbox, or is left to
//! the bus to redeliver. Never lost, never ingested twice:
//!
//! * a message already in the inbox, or an event that already has a state,
//!   is acked without a request;
//! * an idempotency key is in at most one event of a request (a second
//!   message with the same key waits for redelivery, which finds the first
//!   settled), so Orb never refuses a batch for a repeated key;
//! * a batch Orb refuses with a 4xx is split and every event sent alone:
//!   the events Orb accepts are forwarded, the others rejected with Orb's
//!   reason for them;
//! * a 429 or 5xx is retried with the same body ([`crate::orb`]); when the
//!   retries run out the messages are nacked and redelivered. A resend after
//!   Orb ingested a key (the commit failed, the process died) is a no-op in
//!   Orb: keys are ingested at most once.
//!
//! * [`consumer`] — the batching `usage-accepted` consumer;
//! * [`store`] — the SQL;
//! * [`api`] — `ConnectorService`.

pub mod api;
pub mod consumer;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgPool;
use tally_bus::inbox::{self, ServiceSchema};
use tally_proto::events::UsageAccepted;
use tally_runtime::SharedClock;

use crate::metrics;
use crate::orb::{IngestAnswer, OrbClient, OrbEvent};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForwardingState {
    /// Orb ingested it.
    Forwarded,
    /// Orb refused it.
    Rejected,
    /// Its customer has no Orb mapping.
    NotMapped,
}

impl ForwardingState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardingState::Forwarded => "forwarded",
            ForwardingState::Rejected => "rejected",
            ForwardingState::NotMapped => "not_mapped",
        }
    }

    /// The stored name parsed.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "forwarded" => Some(ForwardingState::Forwarded),
            "rejected" => Some(ForwardingState::Rejected),
            "not_mapped" => Some(ForwardingState::NotMapped),
            _ => None,
        }
    }
}

/// An accepted event as connectors reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedUsage {
    /// `cus_…`.
    pub customer_id: String,
    /// Unique per customer.
    pub event_id: String,
    /// The event type (Orb's event name).
    pub event_type: String,
    /// Usage time.
    pub timestamp: DateTime<Utc>,
    /// Properties, as accepted.
    pub properties: BTreeMap<String, String>,
}

impl AcceptedUsage {
    /// Decodes a `UsageAccepted` payload; `Err` says why it never will be.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let accepted = UsageAccepted::decode(payload)
            .map_err(|error| format!("undecodable UsageAccepted: {error}"))?;
        let event = accepted.event.ok_or("UsageAccepted without an event")?;
        if event.customer_id.is_empty() || event.id.is_empty() {
            return Err("UsageAccepted without event.customer_id or event.id".to_owned());
        }
        let timestamp =
            tally_proto::convert::required_instant(event.timestamp.as_ref(), "event.timestamp")
                .map_err(|violation| format!("{}: {}", violation.field, violation.description))?;
        Ok(Self {
            customer_id: event.customer_id,
            event_id: event.id,
            event_type: event.event_type,
            timestamp,
            properties: event.properties.into_iter().collect(),
        })
    }

    /// The idempotency key Orb de-duplicates by: the customer and the event
    /// id, because an event id is unique only per customer while Orb's keys
    /// are unique per account (`cus_…` has no `:`, so the pair is unambiguous).
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.customer_id, self.event_id)
    }
}

/// One message in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The bus message id (the inbox key).
    pub message_id: String,
    /// Its event.
    pub usage: AcceptedUsage,
}

/// An event's final state, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// `cus_…`.
    pub customer_id: String,
    /// The event id.
    pub event_id: String,
    /// The message that carried it.
    pub message_id: String,
    /// Sent to Orb (empty when not mapped).
    pub idempotency_key: String,
    /// Sent to Orb (empty when not mapped).
    pub external_customer_id: String,
    /// What became of it.
    pub state: ForwardingState,
    /// Orb's reason for a rejection.
    pub reason: String,
    /// Requests that carried it.
    pub attempts: u32,
    /// Usage time.
    pub event_time: DateTime<Utc>,
}

/// What to do with a message after [`Forwarder::forward`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Settled (now or before): ack.
    Done,
    /// Not settled: nack, so the bus delivers it again.
    Redeliver(String),
}

/// Forwards batches of accepted usage to Orb.
#[derive(Debug, Clone)]
pub struct Forwarder {
    pool: PgPool,
    clock: SharedClock,
    orb: OrbClient,
    subscription: String,
}

impl Forwarder {
    /// A forwarder recording messages in the inbox under `subscription`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        orb: OrbClient,
        subscription: impl Into<String>,
    ) -> Self {
        Self {
            pool,
            clock,
            orb,
            subscription: subscription.into(),
        }
    }

    /// Forwards `batch` (one request when all goes well) and records every
    /// event it settles; returns one disposition per message, in order.
    pub async fn forward(&self, batch: &[Incoming]) -> Vec<Disposition> {
        match self.try_forward(batch).await {
            Ok(dispositions) => dispositions,
            Err(error) => {
                tracing::warn!(%error, count = batch.len(), "forwarding to orb not recorded; the batch will be redelivered");
                let reason = format!("database: {error}");
                vec![Disposition::Redeliver(reason); batch.len()]
            }
        }
    }

    async fn try_forward(&self, batch: &[Incoming]) -> Result<Vec<Disposition>, sqlx::Error> {
        let mut dispositions: Vec<Option<Disposition>> = vec![None; batch.len()];
        let message_ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
        let applied = store::already_applied(&self.pool, &self.subscription, &message_ids).await?;
        let pairs: Vec<(String, String)> = batch
            .iter()
            .map(|m| (m.usage.customer_id.clone(), m.usage.event_id.clone()))
            .collect();
        let settled_before = store::already_settled(&self.pool, &pairs).await?;
        let customers: Vec<String> = pairs
            .iter()
            .map(|(customer, _)| customer.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mapped = store::mappings(&self.pool, &customers).await?;

        // Each message: done before, held back, settled now, or sent.
        let mut settled: Vec<(usize, Option<Settled>)> = Vec::new();
        let mut to_send: Vec<(usize, OrbEvent)> = Vec::new();
        let mut keys_in_batch = BTreeSet::new();
        for (index, message) in batch.iter().enumerate() {
            let usage = &message.usage;
            if applied.contains(&message.message_id) {
                dispositions[index] = Some(Disposition::Done);
                continue;
            }
            let key = usage.idempotency_key();
            if !keys_in_batch.insert(key.clone()) {
                dispositions[index] = Some(Disposition::Redeliver(format!(
                    "idempotency key {key} is already in this batch"
                )));
                continue;
            }
            if settled_before.contains(&(usage.customer_id.clone(), usage.event_id.clone())) {
                // An inbox record for this message, nothing sent, no new state.
                settled.push((index, None));
                continue;
            }
            match mapped.get(&usage.customer_id) {
                None => settled.push((
                    index,
                    Some(self.settled(message, None, ForwardingState::NotMapped, String::new(), 0)),
                )),
                Some(external) => to_send.push((
                    index,
                    OrbEvent {
                        idempotency_key: key,
                        external_customer_id: external.clone(),
                        event_name: usage.event_type.clone(),
                        timestamp: usage.timestamp,
                        properties: usage.properties.clone(),
                    },
                )),
            }
        }

        let mut outcomes = Vec::with_capacity(to_send.len());
        for chunk in to_send.chunks(self.orb.batch_events()) {
            outcomes.extend(self.send(chunk).await);
        }
        let sent_events: BTreeMap<usize, &OrbEvent> = to_send
            .iter()
            .map(|(index, event)| (*index, event))
            .collect();
        for (index, outcome) in outcomes {
            let message = &batch[index];
            let event = sent_events.get(&index).copied();
            match outcome {
                Outcome::Settled {
                    state,
                    reason,
                    attempts,
                } => {
                    settled.push((
                        index,
                        Some(self.settled(message, event, state, reason, attempts)),
                    ));
                }
                Outcome::Unsent(reason) => {
                    dispositions[index] = Some(Disposition::Redeliver(reason))
                }
            }
        }

        self.record(batch, &settled).await?;
        for (index, _) in &settled {
            dispositions[*index] = Some(Disposition::Done);
        }
        Ok(dispositions
            .into_iter()
            .map(|disposition| disposition.unwrap_or(Disposition::Redeliver("not handled".into())))
            .collect())
    }

    fn settled(
        &self,
        message: &Incoming,
        event: Option<&OrbEvent>,
        state: ForwardingState,
        reason: String,
        attempts: u32,
    ) -> Settled {
        Settled {
            customer_id: message.usage.customer_id.clone(),
            event_id: message.usage.event_id.clone(),
            message_id: message.message_id.clone(),
            idempotency_key: event.map(|e| e.idempotency_key.clone()).unwrap_or_default(),
            external_customer_id: event
                .map(|e| e.external_customer_id.clone())
                .unwrap_or_default(),
            state,
            reason,
            attempts,
            event_time: message.usage.timestamp,
        }
    }

    /// Records the inbox entries and states of `settled` in one transaction.
    async fn record(
        &self,
        batch: &[Incoming],
        settled: &[(usize, Option<Settled>)],
    ) -> Result<(), sqlx::Error> {
        if settled.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut counts: BTreeMap<ForwardingState, u64> = BTreeMap::new();
        for (index, state) in settled {
            let first = inbox::record_once(
                &mut transaction,
                ServiceSchema::Connectors,
                &self.subscription,
                &batch[*index].message_id,
            )
            .await?;
            if let (true, Some(state)) = (first, state) {
                store::record(&mut transaction, state, now).await?;
                *counts.entry(state.state).or_default() += 1;
            }
        }
        transaction.commit().await?;
        for (state, count) in counts {
            metrics::orb_events_settled(state.as_str(), count);
        }
        Ok(())
    }

    /// Sends `events` in one request; a request Orb refuses is split into
    /// one request per event.
    async fn send(&self, events: &[(usize, OrbEvent)]) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::with_capacity(events.len());
        if events.is_empty() {
            return outcomes;
        }
        let batch: Vec<OrbEvent> = events.iter().map(|(_, event)| event.clone()).collect();
        let sent = match self.orb.ingest(&batch).await {
            Ok(sent) => sent,
            Err(not_sent) => {
                let reason = not_sent.to_string();
                tracing::warn!(%reason, count = events.len(), "orb did not take the batch; it will be redelivered");
                return events
                    .iter()
                    .map(|(index, _)| (*index, Outcome::Unsent(reason.clone())))
                    .collect();
            }
        };
        match sent.answer {
            IngestAnswer::Accepted { failed } => {
                for (index, event) in events {
                    let outcome = match failed.get(&event.idempotency_key) {
                        Some(reason) => Outcome::rejected(reason.clone(), sent.attempts),
                        None => Outcome::forwarded(sent.attempts),
                    };
                    outcomes.push((*index, outcome));
                }
            }
            IngestAnswer::Refused {
                reason, per_key, ..
            } if events.len() == 1 => {
                let (index, event) = &events[0];
                let reason = per_key
                    .get(&event.idempotency_key)
                    .map_or(reason.clone(), |own| format!("{reason}: {own}"));
                outcomes.push((*index, Outcome::rejected(reason, sent.attempts)));
            }
            IngestAnswer::Refused { status, reason, .. } => {
                tracing::info!(status, %reason, count = events.len(), "orb refused a batch; sending its events one by one");
                for single in events {
                    for (index, outcome) in Box::pin(self.send(std::slice::from_ref(single))).await
                    {
                        outcomes.push((index, outcome.after(sent.attempts)));
                    }
                }
            }
        }
        outcomes
    }
}

/// What sending did to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A final state, after `attempts` requests.
    Settled {
        state: ForwardingState,
        reason: String,
        attempts: u32,
    },
    /// Not settled: redeliver.
    Unsent(String),
}

impl Outcome {
    fn forwarded(attempts: u32) -> Self {
        Outcome::Settled {
            state: ForwardingState::Forwarded,
            reason: String::new(),
            attempts,
        }
    }

    fn rejected(reason: String, attempts: u32) -> Self {
        Outcome::Settled {
            state: ForwardingState::Rejected,
            reason,
            attempts,
        }
    }

    /// The same outcome counting `earlier` requests before it.
    fn after(self, earlier: u32) -> Self {
        match self {
            Outcome::Settled {
                state,
                reason,
                attempts,
            } => Outcome::Settled {
                state,
                reason,
                attempts: attempts + earlier,
            },
            unsent => unsent,
        }
    }
}
