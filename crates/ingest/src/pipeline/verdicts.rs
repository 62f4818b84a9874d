//! What validation and in-batch de-duplication decide before the database:
//! one [`Verdict`] per item, with open backfills applied and repeats marked.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tally_proto::common::FieldViolation;
use tally_proto::events::UsageEvent as WireEvent;

use crate::backfill;
use crate::validation::{ValidEvent, only_too_old, violation};

use super::{Incoming, Ingestor};

/// What validation and in-batch de-duplication decided before the database.
/// Each verdict owns its event: nothing is copied on the way to the log.
#[derive(Debug)]
pub(super) enum Verdict {
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

impl Ingestor {
    pub(super) fn judge(&self, item: Incoming, now: DateTime<Utc>) -> Verdict {
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

    /// Re-validates events older than the window whose customer has a
    /// backfill open over their timestamp.
    pub(super) async fn apply_backfills(
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
}

/// Marks every valid event whose key appeared earlier in the batch.
pub(super) fn mark_repeats(verdicts: &mut [Verdict]) {
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
