//! The one path every event takes, whatever its intake (gRPC, Pub/Sub,
//! replay): validate, lift the backfill-window rule where a backfill is open,
//! de-duplicate within the batch, then one transaction that claims the keys,
//! appends the new events, stores rejections and conflicts, and writes the
//! outboxes. The call returns once that transaction is committed: a result of
//! ACCEPTED means durable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use tally_bus::inbox::ServiceSchema;
use tally_bus::{Message, outbox, topics};
use tally_domain::ids::CustomerId;
use tally_proto::common::FieldViolation;
use tally_proto::events::{Intake, RejectionKind, UsageEvent as WireEvent, UsageRejected};
use tally_proto::ingest::{EventOutcome, EventResult, OutcomeCounts};
use tally_runtime::SharedClock;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::ids::SharedIdGenerator;

use crate::backfill;
use crate::log::{self, MAX_RAW_PAYLOAD_BYTES, Partitions, RejectionRecord, StoredKey};
use crate::metrics::IngestMetrics;
use crate::validation::{ValidEvent, Validator, only_too_old, violation};

/// One item of a batch as received.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A decoded event.
    Event(WireEvent),
    /// A decoded event that already broke intake rules while decoding (for
    /// example a JSON property that is an object); it is rejected with these
    /// and any other violated rules.
    Flawed {
        /// The event as far as it decoded.
        event: WireEvent,
        /// The decoding violations.
        violations: Vec<FieldViolation>,
    },
    /// A bus message that is not a `UsageEvent` (kept as a rejection).
    Undecodable {
        /// The bytes as received.
        payload: Vec<u8>,
        /// Its `content-type`.
        content_type: String,
        /// Why decoding failed.
        reason: String,
    },
}

/// Whether rejections are stored (normal intake) or only reported (replay of
/// rejections already stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionStorage {
    /// Store each rejection and publish it on `usage-rejected`.
    Store,
    /// Report only.
    ReportOnly,
}

/// The results of one batch, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// One per input item.
    pub results: Vec<EventResult>,
    /// Totals.
    pub counts: OutcomeCounts,
}

/// Why a batch could not be ingested (nothing of it was committed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event log could not be written; the caller may retry the batch.
    #[error("the event log is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// More items than one batch may hold.
    #[error("{0} events in one batch, at most 100000")]
    TooLarge(usize),
}

/// Validates and commits batches of usage events.
#[derive(Debug)]
pub struct Ingestor {
    pool: PgPool,
    clock: SharedClock,
    ids: SharedIdGenerator,
    validator: Validator,
    partitions: Partitions,
    metrics: Arc<IngestMetrics>,
}

/// What validation and in-batch de-duplication decided before the database.
/// Each verdict owns its event: nothing is copied on the way to the log.
#[derive(Debug)]
enum Verdict {
    /// Valid and the first of its key in the batch.
    Valid(ValidEvent),
    /// Valid, but its key appeared earlier in the batch (at that index).
    Repeat(ValidEvent, usize),
    /// Broke rules.
    Invalid(WireEvent, Vec<FieldViolation>),
    /// Could not be decoded.
    Undecodable {
        payload: Vec<u8>,
        content_type: String,
        violations: Vec<FieldViolation>,
    },
}

/// Most attempts of a batch transaction that hit a deadlock or serialization failure.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

/// Sequence numbers are handed out in blocks, one per batch (see the migration).
pub const SEQUENCE_BLOCK: i64 = 100_000;

impl Ingestor {
    /// An ingestor writing to `pool`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        ids: SharedIdGenerator,
        validator: Validator,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        Self {
            pool,
            clock,
            ids,
            validator,
            partitions: Partitions::default(),
            metrics,
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    fn judge(&self, item: Incoming, now: DateTime<Utc>) -> Verdict {
        match item {
            Incoming::Event(event) => match self.validator.validate(event, now, false) {
                Ok(valid) => Verdict::Valid(valid),
                Err((event, violations)) => Verdict::Invalid(event, violations),
            },
            Incoming::Flawed {
                event,
                mut violations,
            } => {
                let (event, more) = match self.validator.validate(event, now, false) {
                    Ok(valid) => (valid.event, Vec::new()),
                    Err(rejected) => rejected,
                };
                for found in more {
                    if !violations.iter().any(|known| known.field == found.field) {
                        violations.push(found);
                    }
                }
                Verdict::Invalid(event, violations)
            }
            Incoming::Undecodable {
                payload,
                content_type,
                reason,
            } => Verdict::Undecodable {
                payload,
                content_type,
                violations: vec![violation("payload", "undecodable", reason)],
            },
        }
    }

    /// Ingests `items` (at most [`SEQUENCE_BLOCK`]); returns one result per item
    /// once the batch is durable.
    pub async fn ingest(
        &self,
        items: Vec<Incoming>,
        intake: Intake,
        storage: RejectionStorage,
    ) -> Result<BatchOutcome, IngestError> {
        let started = Instant::now();
        let now = self.clock.now();
        if items.len() as i64 > SEQUENCE_BLOCK {
            return Err(IngestError::TooLarge(items.len()));
        }
        let mut verdicts: Vec<Verdict> = items
            .into_iter()
            .map(|item| self.judge(item, now))
            .collect();
        self.apply_backfills(&mut verdicts, now).await?;
        mark_repeats(&mut verdicts);
        self.partitions
            .ensure(
                &self.pool,
                verdicts.iter().filter_map(|verdict| match verdict {
                    Verdict::Valid(event) => Some(event.timestamp),
                    _ => None,
                }),
            )
            .await?;

        let mut attempt = 1;
        let outcome = loop {
            match self.commit(&verdicts, intake, storage, now).await {
                Err(sqlx::Error::Database(error))
                    if attempt < MAX_TRANSACTION_ATTEMPTS
                        && matches!(error.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    tracing::debug!(attempt, %error, "batch transaction conflicted; retrying");
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let rules: Vec<&str> = outcome
            .results
            .iter()
            .filter(|result| result.outcome == EventOutcome::Rejected as i32)
            .flat_map(|result| result.violations.iter().map(|v| v.rule.as_str()))
            .collect();
        let counts = &outcome.counts;
        self.metrics.record_batch(
            intake,
            [
                u64::from(counts.accepted),
                u64::from(counts.duplicate),
                u64::from(counts.conflict),
                u64::from(counts.rejected),
            ],
            &rules,
            started.elapsed(),
        );
        Ok(outcome)
    }

    /// Re-validates events older than the window whose customer has a
    /// backfill open over their timestamp.
    async fn apply_backfills(
        &self,
        verdicts: &mut [Verdict],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let candidates: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, verdict)| matches!(verdict, Verdict::Invalid(_, v) if only_too_old(v)))
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let customers: BTreeSet<String> = candidates
            .iter()
            .filter_map(|index| match &verdicts[*index] {
                Verdict::Invalid(event, _) => Some(event.customer_id.clone()),
                _ => None,
            })
            .collect();
        let customers: BTreeSet<&str> = customers.iter().map(String::as_str).collect();
        let windows = backfill::open_windows(&self.pool, &customers, now).await?;
        for index in candidates {
            let Verdict::Invalid(event, _) = &verdicts[index] else {
                continue;
            };
            let covered = event
                .timestamp
                .as_ref()
                .and_then(crate::validation::to_instant)
                .is_some_and(|instant| {
                    windows
                        .get(event.customer_id.as_str())
                        .is_some_and(|ranges| {
                            ranges
                                .iter()
                                .any(|(start, end)| *start <= instant && instant < *end)
                        })
                });
            if covered {
                let placeholder = Verdict::Invalid(WireEvent::default(), Vec::new());
                let Verdict::Invalid(event, _) =
                    std::mem::replace(&mut verdicts[index], placeholder)
                else {
                    continue;
                };
                verdicts[index] = match self.validator.validate(event, now, true) {
                    Ok(valid) => Verdict::Valid(valid),
                    Err((event, violations)) => Verdict::Invalid(event, violations),
                };
            }
        }
        Ok(())
    }

    /// The batch transaction.
    // Longer than the 150-line gate; split it when next changed (issue 15).
    #[allow(clippy::too_many_lines)]
    async fn commit(
        &self,
        verdicts: &[Verdict],
        intake: Intake,
        storage: RejectionStorage,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;

        // The batch's block of sequence numbers; event i of the batch gets base + i.
        let block: i64 = sqlx::query_scalar("SELECT nextval('ingest.batch_block')")
            .fetch_one(&mut *transaction)
            .await?;
        let base = block * SEQUENCE_BLOCK;

        // Claim the keys, in key order (a stable lock order across batches).
        let mut firsts: Vec<(usize, &ValidEvent)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(index, verdict)| match verdict {
                Verdict::Valid(event) => Some((index, event)),
                _ => None,
            })
            .collect();
        firsts.sort_by(|(_, a), (_, b)| {
            (a.customer_id(), a.event_id()).cmp(&(b.customer_id(), b.event_id()))
        });
        let candidates: Vec<(i64, &ValidEvent)> = firsts
            .iter()
            .map(|(index, event)| (base + *index as i64, *event))
            .collect();
        let inserted = log::claim_keys(&mut transaction, &candidates).await?;
        let taken: Vec<(&str, &str)> = firsts
            .iter()
            .zip(&inserted)
            .filter(|(_, inserted)| !**inserted)
            .map(|((_, event), _)| (event.customer_id(), event.event_id()))
            .collect();
        let existing = if taken.is_empty() {
            HashMap::new()
        } else {
            log::existing_keys(&mut transaction, &taken).await?
        };
        let mut seq_of: HashMap<usize, i64> = HashMap::new();
        let mut new_events: Vec<(i64, &ValidEvent)> = Vec::new();
        for ((index, event), inserted) in firsts.iter().zip(&inserted) {
            if *inserted {
                let seq = base + *index as i64;
                seq_of.insert(*index, seq);
                new_events.push((seq, event));
            }
        }
        new_events.sort_by_key(|(seq, _)| *seq);
        log::insert_events(&mut transaction, &new_events, intake, now).await?;

        // Classify every item.
        let mut results = Vec::with_capacity(verdicts.len());
        let mut rejections: Vec<RejectionRecord> = Vec::new();
        let mut duplicates: HashMap<(String, String), i64> = HashMap::new();
        for (index, verdict) in verdicts.iter().enumerate() {
            // An event whose key was accepted before (in the log or earlier in
            // this batch) is compared with that original.
            let compared = match verdict {
                Verdict::Valid(event) => match seq_of.get(&index) {
                    Some(seq) => {
                        results.push(result(event, EventOutcome::Accepted, *seq));
                        continue;
                    }
                    None => Some((
                        event,
                        AcceptedOriginal::Stored(stored_key(&existing, event)?),
                    )),
                },
                Verdict::Repeat(event, first) => {
                    let Verdict::Valid(first_event) = &verdicts[*first] else {
                        return Err(sqlx::Error::Protocol(
                            "a repeat points at an event that is not valid".into(),
                        ));
                    };
                    let original = match seq_of.get(first) {
                        Some(seq) => AcceptedOriginal::InBatch(first_event, *seq),
                        None => AcceptedOriginal::Stored(stored_key(&existing, event)?),
                    };
                    Some((event, original))
                }
                Verdict::Invalid(..) | Verdict::Undecodable { .. } => None,
            };
            if let Some((event, original)) = compared {
                let outcome = self
                    .against(
                        &mut transaction,
                        event,
                        original,
                        &mut duplicates,
                        &mut rejections,
                        intake,
                    )
                    .await?;
                results.push(outcome);
                continue;
            }
            let result = match verdict {
                Verdict::Valid(_) | Verdict::Repeat(..) => continue, // handled above
                Verdict::Invalid(event, violations) => {
                    let id = self.ids.new_id("rej");
                    let (kept, summarized) =
                        kept_event(event, self.validator.max_kept_event_bytes());
                    rejections.push(RejectionRecord {
                        id: id.clone(),
                        kind: RejectionKind::Invalid,
                        event: Some(kept),
                        summarized,
                        violations: violations.clone(),
                        raw_payload: None,
                        raw_content_type: None,
                        intake,
                    });
                    rejected(event.id.clone(), violations.clone(), id)
                }
                Verdict::Undecodable {
                    payload,
                    content_type,
                    violations,
                } => {
                    let id = self.ids.new_id("rej");
                    rejections.push(RejectionRecord {
                        id: id.clone(),
                        kind: RejectionKind::Undecodable,
                        event: None,
                        summarized: false,
                        violations: violations.clone(),
                        raw_payload: Some(
                            payload[..payload.len().min(MAX_RAW_PAYLOAD_BYTES)].to_vec(),
                        ),
                        raw_content_type: Some(content_type.clone()),
                        intake,
                    });
                    rejected(String::new(), violations.clone(), id)
                }
            };
            results.push(result);
        }

        log::count_duplicates(&mut transaction, &duplicates).await?;
        if let (Some(first), Some(last)) = (new_events.first(), new_events.last()) {
            log::enqueue_accepted(&mut transaction, first.0, last.0, new_events.len()).await?;
        }
        if storage == RejectionStorage::Store {
            log::insert_rejections(&mut transaction, &rejections, now).await?;
            for rejection in &rejections {
                let message = rejected_message(rejection, now);
                outbox::enqueue(
                    &mut transaction,
                    ServiceSchema::Ingest,
                    topics::USAGE_REJECTED,
                    &message,
                )
                .await?;
            }
        }
        transaction.commit().await?;

        let mut counts = OutcomeCounts::default();
        for result in &results {
            match EventOutcome::try_from(result.outcome) {
                Ok(EventOutcome::Accepted) => counts.accepted += 1,
                Ok(EventOutcome::Duplicate) => counts.duplicate += 1,
                Ok(EventOutcome::Conflict) => counts.conflict += 1,
                _ => counts.rejected += 1,
            }
        }
        Ok(BatchOutcome { results, counts })
    }

    /// Classifies an event whose key was already accepted: a duplicate when
    /// the payload is the same, else a conflict (stored for review, naming the
    /// fields that differ).
    async fn against(
        &self,
        connection: &mut PgConnection,
        event: &ValidEvent,
        original: AcceptedOriginal<'_>,
        duplicates: &mut HashMap<(String, String), i64>,
        rejections: &mut Vec<RejectionRecord>,
        intake: Intake,
    ) -> Result<EventResult, sqlx::Error> {
        let (seq, same_payload) = match &original {
            AcceptedOriginal::InBatch(first, seq) => {
                (*seq, first.payload_hash == event.payload_hash)
            }
            AcceptedOriginal::Stored(stored) => {
                (stored.seq, stored.payload_hash == event.payload_hash)
            }
        };
        if same_payload {
            *duplicates
                .entry((event.customer_id().to_owned(), event.event_id().to_owned()))
                .or_default() += 1;
            return Ok(result(event, EventOutcome::Duplicate, seq));
        }
        let original_event = match original {
            AcceptedOriginal::InBatch(first, _) => Some(first.event.clone()),
            AcceptedOriginal::Stored(stored) => log::fetch_event(
                connection,
                event.customer_id(),
                event.event_id(),
                stored.event_time,
            )
            .await?
            .and_then(|accepted| accepted.event),
        };
        let violations = conflict_violations(original_event.as_ref(), event);
        let id = self.ids.new_id("rej");
        rejections.push(RejectionRecord {
            id: id.clone(),
            kind: RejectionKind::Conflict,
            // A valid event is within the size limit: kept as received.
            event: Some(event.event.clone()),
            summarized: false,
            violations: violations.clone(),
            raw_payload: None,
            raw_content_type: None,
            intake,
        });
        Ok(EventResult {
            event_id: event.event_id().to_owned(),
            outcome: EventOutcome::Conflict as i32,
            sequence_number: to_u64(seq),
            violations,
            rejection_id: id,
        })
    }
}

/// Longest text field (id, customer, event type, source) of a summarized event, in characters.
const SUMMARY_TEXT_CHARS: usize = 256;

/// What a rejection keeps of `event`: the event as received when its encoding
/// is at most `max_bytes`; otherwise a summary — id, customer, event type and
/// source cut to 256 characters, the timestamp, no properties — flagged as such
/// (`true`), so the rejection stays small enough to store and to publish on
/// `usage-rejected` (Pub/Sub takes at most 10 MB) and is never replayed as if
/// it were the event.
pub fn kept_event(event: &WireEvent, max_bytes: usize) -> (WireEvent, bool) {
    if event.encoded_len() <= max_bytes {
        return (event.clone(), false);
    }
    let cut = |text: &str| text.chars().take(SUMMARY_TEXT_CHARS).collect::<String>();
    let summary = WireEvent {
        id: cut(&event.id),
        customer_id: cut(&event.customer_id),
        event_type: cut(&event.event_type),
        timestamp: event.timestamp,
        properties: HashMap::new(),
        source: cut(&event.source),
    };
    (summary, true)
}

/// The accepted event a later one with the same key is compared with.
enum AcceptedOriginal<'a> {
    /// Accepted earlier in this batch, with this sequence number.
    InBatch(&'a ValidEvent, i64),
    /// Accepted by an earlier batch.
    Stored(StoredKey),
}

fn stored_key(
    existing: &HashMap<(String, String), StoredKey>,
    event: &ValidEvent,
) -> Result<StoredKey, sqlx::Error> {
    // The key was not inserted, so it exists: a miss would be a bug; fail the batch, never drop.
    existing
        .get(&(event.customer_id().to_owned(), event.event_id().to_owned()))
        .cloned()
        .ok_or_else(|| {
            sqlx::Error::Protocol(format!(
                "event key ({}, {}) neither inserted nor found",
                event.customer_id(),
                event.event_id()
            ))
        })
}

fn rejected(
    event_id: String,
    violations: Vec<FieldViolation>,
    rejection_id: String,
) -> EventResult {
    EventResult {
        event_id,
        outcome: EventOutcome::Rejected as i32,
        sequence_number: 0,
        violations,
        rejection_id,
    }
}

/// Marks every valid event whose key appeared earlier in the batch.
fn mark_repeats(verdicts: &mut [Verdict]) {
    let mut first_of: HashMap<(String, String), usize> = HashMap::new();
    for (index, verdict) in verdicts.iter_mut().enumerate() {
        let Verdict::Valid(event) = verdict else {
            continue;
        };
        let key = (event.customer_id().to_owned(), event.event_id().to_owned());
        if let Some(first) = first_of.get(&key) {
            let first = *first;
            let Verdict::Valid(event) =
                std::mem::replace(verdict, Verdict::Invalid(WireEvent::default(), Vec::new()))
            else {
                continue;
            };
            *verdict = Verdict::Repeat(event, first);
        } else {
            first_of.insert(key, index);
        }
    }
}

fn result(event: &ValidEvent, outcome: EventOutcome, seq: i64) -> EventResult {
    EventResult {
        event_id: event.event_id().to_owned(),
        outcome: outcome as i32,
        sequence_number: to_u64(seq),
        violations: Vec::new(),
        rejection_id: String::new(),
    }
}

fn to_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// The fields in which `event` differs from the accepted `original` (rule `conflict`).
pub fn conflict_violations(
    original: Option<&WireEvent>,
    event: &ValidEvent,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let Some(original) = original else {
        return vec![violation(
            "event",
            "conflict",
            "an event with this id was accepted with a different payload (its partition is archived)"
                .to_owned(),
        )];
    };
    if original.event_type != event.event_type() {
        violations.push(violation(
            "event_type",
            "conflict",
            format!(
                "accepted as {:?}, now {:?}",
                original.event_type,
                event.event_type()
            ),
        ));
    }
    let original_time = original
        .timestamp
        .as_ref()
        .and_then(crate::validation::to_instant);
    if original_time != Some(event.timestamp) {
        violations.push(violation(
            "timestamp",
            "conflict",
            format!(
                "accepted with {}, now {}",
                original_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
                event.timestamp.to_rfc3339()
            ),
        ));
    }
    let keys: BTreeSet<&String> = original
        .properties
        .keys()
        .chain(event.event.properties.keys())
        .collect();
    for key in keys {
        let before = original.properties.get(key);
        let after = event.event.properties.get(key);
        if before != after {
            violations.push(violation(
                &format!("properties.{key}"),
                "conflict",
                format!("accepted as {before:?}, now {after:?}"),
            ));
        }
    }
    if violations.is_empty() {
        violations.push(violation(
            "event",
            "conflict",
            "an event with this id was accepted with a different payload".to_owned(),
        ));
    }
    violations
}

/// The `usage-rejected` message of a rejection.
pub fn rejected_message(rejection: &RejectionRecord, rejected_at: DateTime<Utc>) -> Message {
    let payload = UsageRejected {
        rejection_id: rejection.id.clone(),
        event: rejection.event.clone(),
        kind: rejection.kind as i32,
        violations: rejection.violations.clone(),
        raw_payload: rejection.raw_payload.clone().unwrap_or_default(),
        raw_content_type: rejection.raw_content_type.clone().unwrap_or_default(),
        rejected_at: Some(chrono_to_timestamp(rejected_at)),
        intake: rejection.intake as i32,
    }
    .encode_to_vec();
    let message = Message::new("tally.events.v1.UsageRejected", 1, payload).with_id(&rejection.id);
    // Only a valid customer id orders the message: a rejected event's customer
    // may be anything, and Pub/Sub refuses ordering keys over 1 KB (the outbox
    // would retry that message forever).
    match rejection.event.as_ref() {
        Some(event) if CustomerId::check(&event.customer_id).is_ok() => {
            message.with_ordering_key(event.customer_id.clone())
        }
        _ => message,
    }
}
