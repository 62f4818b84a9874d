//! The batch transaction: the batch's block of sequence numbers, the keys
//! claimed, the new events appended, every item classified (accepted,
//! duplicate, conflict, rejected), rejections stored and published, and the
//! accepted range queued for the relay.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_bus::inbox::ServiceSchema;
use tally_bus::{outbox, topics};
use tally_domain::ids::RejectionId;
use tally_proto::common::FieldViolation;
use tally_proto::events::{Intake, RejectionKind};
use tally_proto::ingest::{EventOutcome, EventResult, OutcomeCounts};

use crate::log::{self, MAX_RAW_PAYLOAD_BYTES, RejectionRecord, StoredKey};
use crate::validation::ValidEvent;

use super::rejections::{conflict_violations, kept_event, rejected_message};
use super::verdicts::Verdict;
use super::{BatchOutcome, Ingestor, RejectionStorage, SEQUENCE_BLOCK};

impl Ingestor {
    /// The batch transaction.
    // Longer than the 150-line gate; split it when next changed (issue 15).
    #[allow(clippy::too_many_lines)]
    pub(super) async fn commit(
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
                    let id = self.ids.mint::<RejectionId>();
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
                    rejected(event.id.clone(), violations.clone(), id.into())
                }
                Verdict::Undecodable {
                    payload,
                    content_type,
                    violations,
                } => {
                    let id = self.ids.mint::<RejectionId>();
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
                    rejected(String::new(), violations.clone(), id.into())
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
        let id = self.ids.mint::<RejectionId>();
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
            rejection_id: id.into(),
        })
    }
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
