//! The relay from the event log to `usage-accepted`.
//!
//! Each committed batch left one `accepted_batches` row naming its contiguous
//! range of sequence numbers. A relay **round** locks the oldest rows no other
//! round holds (`FOR UPDATE SKIP LOCKED`, one at a time until
//! [`EVENTS_PER_ROUND`] events or [`BATCHES_PER_ROUND`] rows), reads those
//! events back from the log (an index range scan on `seq`), publishes each
//! exactly as committed — the stored bytes, not a re-encoding — with its
//! customer as ordering key, all at once in sequence order (the bus sends them
//! in batches and keeps each key's order), then deletes the rows and raises
//! the published high-water mark in the same transaction.
//!
//! Up to [`ROUNDS_IN_FLIGHT`] rounds run at once, each in its own short
//! transaction over its own rows: one customer's 10,000-event batch is one
//! round of its own, and the batches committed after it are published by
//! the other rounds meanwhile instead of waiting for it. Replicas share the
//! work the same way.
//!
//! A crash after publishing but before the delete publishes those events again
//! with the same message id (`uacc_<seq>`): consumers de-duplicate by event key,
//! so downstream each event counts once. Nothing committed is ever skipped:
//! a row is deleted only after all its events were published.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tally_bus::{Message, SharedBus, topics};
use tally_runtime::Shutdown;
use tokio::task::JoinSet;

use crate::log::EventRow;
use crate::metrics::IngestMetrics;

/// The protobuf type name on `usage-accepted`.
pub const ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

/// How often the relay counts the events published so far
/// (`tally.ingest.published_events`): two index-only counts, so not every round.
const COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// A round stops taking batches once it holds this many events (it always
/// takes at least one batch, however big).
pub const EVENTS_PER_ROUND: i64 = 5_000;

/// Most batches in one round.
pub const BATCHES_PER_ROUND: usize = 20;

/// Rounds publishing at once.
pub const ROUNDS_IN_FLIGHT: usize = 4;

/// Publishes accepted batches.
#[derive(Debug, Clone)]
pub struct AcceptedRelay {
    pool: PgPool,
    bus: SharedBus,
    metrics: Arc<IngestMetrics>,
}

/// Why a relay round did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A committed batch's events are not all in the log (for example its
    /// partition was detached before the relay caught up); the row is kept.
    #[error("accepted batch {0}: found {1} of its {2} events in the log")]
    Missing(i64, usize, i32),
    /// Some events could not be published; the batch stays for the next round.
    #[error("{0} events could not be published")]
    Publish(usize),
}

/// One `accepted_batches` row.
#[derive(Debug, sqlx::FromRow)]
struct AcceptedBatch {
    id: i64,
    first_seq: i64,
    last_seq: i64,
    event_count: i32,
}

impl AcceptedRelay {
    /// A relay for the ingest outbox.
    pub fn new(pool: PgPool, bus: SharedBus, metrics: Arc<IngestMetrics>) -> Self {
        Self { pool, bus, metrics }
    }

    /// Publishes one round of batches; returns how many events were published
    /// (0: nothing was waiting that another round does not already hold).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let mut batches: Vec<AcceptedBatch> = Vec::new();
        let mut events = 0i64;
        // Row by row, so a round locks only what it publishes: rows another
        // round holds are skipped, not waited for.
        while batches.len() < BATCHES_PER_ROUND && events < EVENTS_PER_ROUND {
            let after = batches.last().map_or(0, |batch| batch.id);
            let next: Option<AcceptedBatch> = sqlx::query_as(
                "SELECT id, first_seq, last_seq, event_count FROM ingest.accepted_batches \
                 WHERE id > $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(after)
            .fetch_optional(&mut *transaction)
            .await?;
            let Some(next) = next else { break };
            events += i64::from(next.event_count);
            batches.push(next);
        }
        if batches.is_empty() {
            return Ok(0);
        }
        let mut messages = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
        let mut high_water = 0;
        for batch in &batches {
            let rows: Vec<RelayRow> = sqlx::query_as(
                "SELECT customer_id, seq, payload, intake, ingested_at FROM ingest.events \
                 WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
            )
            .bind(batch.first_seq)
            .bind(batch.last_seq)
            .fetch_all(&mut *transaction)
            .await?;
            if rows.len() != usize::try_from(batch.event_count).unwrap_or(0) {
                // The events of a committed batch are missing (a detached partition?):
                // stop rather than skip them silently.
                return Err(RelayError::Missing(batch.id, rows.len(), batch.event_count));
            }
            high_water = high_water.max(batch.last_seq);
            messages.extend(rows.into_iter().map(|row| {
                Message::new(ACCEPTED_TYPE, 1, row.event.encode_accepted())
                    .with_id(format!("uacc_{}", row.event.seq))
                    .with_ordering_key(row.customer_id)
            }));
        }
        // Batches are in id order and each batch's events in sequence order,
        // so each customer's events go out in sequence order.
        let outcomes = self.bus.publish_all(topics::USAGE_ACCEPTED, messages).await;
        let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count();
        if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
            // Keep the rows: the published ones go out again next round, with the
            // same message ids, and consumers de-duplicate them.
            tracing::warn!(%error, failed, "publishing accepted events failed; will retry");
            transaction.rollback().await?;
            return Err(RelayError::Publish(failed));
        }
        let ids: Vec<i64> = batches.iter().map(|batch| batch.id).collect();
        sqlx::query("DELETE FROM ingest.accepted_batches WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE ingest.relay_state SET published_high_water = GREATEST(published_high_water, $1)",
        )
        .bind(high_water)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(outcomes.len())
    }

    /// Seconds the oldest unpublished batch has waited (0 when caught up).
    pub async fn lag_seconds(&self) -> Result<f64, sqlx::Error> {
        let lag: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8 FROM ingest.accepted_batches",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(lag.unwrap_or(0.0).max(0.0))
    }

    /// Accepted events published on `usage-accepted` so far: every event of
    /// the log except those of batches still waiting for the relay. Rating
    /// reports the events it applied the same way (`tally.rating.applied_events`),
    /// so the two, compared, say how many accepted events rating has not seen.
    pub async fn published_events(&self) -> Result<u64, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ingest.event_keys) \
                  - (SELECT coalesce(sum(event_count), 0) FROM ingest.accepted_batches)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Relays until `shutdown` with up to [`ROUNDS_IN_FLIGHT`] rounds at
    /// once, recording `tally.ingest.relay_lag_seconds` and, every minute,
    /// `tally.ingest.published_events`. An idle relay runs one round per poll.
    pub async fn run(self, shutdown: Shutdown) {
        let mut next_count = tokio::time::Instant::now();
        let mut rounds = JoinSet::new();
        // Whether the last round found work: then more rounds are started at once.
        let mut busy = true;
        while !shutdown.is_triggered() {
            if tokio::time::Instant::now() >= next_count {
                match self.published_events().await {
                    Ok(count) => self.metrics.record_published_events(count),
                    Err(error) => tracing::warn!(%error, "counting published events failed"),
                }
                next_count = tokio::time::Instant::now() + COUNT_INTERVAL;
            }
            while rounds.len() < ROUNDS_IN_FLIGHT {
                let relay = self.clone();
                rounds.spawn(async move { relay.relay_once().await });
                if !busy {
                    break;
                }
            }
            let finished = tokio::select! {
                () = shutdown.wait() => break,
                finished = rounds.join_next() => finished,
            };
            let relayed = match finished {
                Some(Ok(Ok(published))) => Ok(published),
                Some(Ok(Err(error))) => Err(error.to_string()),
                Some(Err(error)) => Err(format!("the round stopped: {error}")),
                None => Ok(0),
            };
            busy = matches!(relayed, Ok(published) if published > 0);
            let wait = match &relayed {
                Ok(0) => Duration::from_millis(20),
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "usage-accepted relay round failed; retrying");
                    Duration::from_secs(1)
                }
            };
            // An empty round with none other in flight means nothing waits: no
            // need to ask the database (an idle relay stays at one query per poll).
            let lag = match relayed {
                Ok(0) if rounds.is_empty() => Some(Ok(0.0)),
                Ok(0) => None,
                _ => Some(self.lag_seconds().await),
            };
            if let Some(Ok(lag)) = lag {
                self.metrics.record_relay_lag(lag);
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Let rounds in flight finish (an aborted one would only publish again).
        while rounds.join_next().await.is_some() {}
    }
}

/// A row the relay reads: the customer (ordering key) and the event.
#[derive(Debug, sqlx::FromRow)]
struct RelayRow {
    customer_id: String,
    #[sqlx(flatten)]
    event: EventRow,
}
