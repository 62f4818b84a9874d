//! The relay from the event log to `usage-accepted`.
//!
//! Each committed batch left one `accepted_batches` row naming its contiguous
//! range of sequence numbers. The relay takes the oldest rows (`FOR UPDATE`, so
//! a second replica waits instead of publishing the same rows), reads those
//! events back from the log (an index range scan on `seq`), publishes each exactly as
//! committed — the stored bytes, not a re-encoding — with its customer as
//! ordering key — customers in parallel, each
//! customer's events one after another in sequence order — then deletes the
//! rows and raises the published high-water mark in the same transaction.
//!
//! A crash after publishing but before the delete publishes those events again
//! with the same message id (`uacc_<seq>`): consumers de-duplicate by event key,
//! so downstream each event counts once. Nothing committed is ever skipped:
//! a row is deleted only after all its events were published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use sqlx::PgPool;
use tally_bus::{Message, SharedBus, topics};
use tally_runtime::Shutdown;

use crate::log::EventRow;
use crate::metrics::IngestMetrics;

/// The protobuf type name on `usage-accepted`.
pub const ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

/// How often the relay counts the events published so far
/// (`tally.ingest.published_events`): two index-only counts, so not every round.
const COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// Publishes accepted batches.
#[derive(Debug, Clone)]
pub struct AcceptedRelay {
    pool: PgPool,
    bus: SharedBus,
    metrics: Arc<IngestMetrics>,
    batches_per_round: i64,
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

impl AcceptedRelay {
    /// A relay for the ingest outbox.
    pub fn new(pool: PgPool, bus: SharedBus, metrics: Arc<IngestMetrics>) -> Self {
        Self {
            pool,
            bus,
            metrics,
            batches_per_round: 20,
        }
    }

    /// Publishes up to one round of batches; returns how many events were published.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let batches: Vec<(i64, i64, i64, i32)> = sqlx::query_as(
            "SELECT id, first_seq, last_seq, event_count FROM ingest.accepted_batches \
             ORDER BY id LIMIT $1 FOR UPDATE",
        )
        .bind(self.batches_per_round)
        .fetch_all(&mut *transaction)
        .await?;
        if batches.is_empty() {
            return Ok(0);
        }
        let mut by_customer: HashMap<String, Vec<(i64, Vec<u8>)>> = HashMap::new();
        let mut high_water = 0;
        for (id, first_seq, last_seq, count) in &batches {
            let rows: Vec<(String, EventRow)> = sqlx::query_as::<_, RelayRow>(
                "SELECT customer_id, seq, payload, intake, ingested_at FROM ingest.events \
                 WHERE seq BETWEEN $1 AND $2",
            )
            .bind(first_seq)
            .bind(last_seq)
            .fetch_all(&mut *transaction)
            .await?
            .into_iter()
            .map(|row| (row.customer_id, row.event))
            .collect();
            if rows.len() != usize::try_from(*count).unwrap_or(0) {
                // The events of a committed batch are missing (a detached partition?):
                // stop rather than skip them silently.
                return Err(RelayError::Missing(*id, rows.len(), *count));
            }
            high_water = high_water.max(*last_seq);
            for (customer, row) in rows {
                by_customer
                    .entry(customer)
                    .or_default()
                    .push((row.seq, row.encode_accepted()));
            }
        }
        let outcomes = join_all(
            by_customer
                .into_iter()
                .map(|(customer, events)| self.publish_in_order(customer, events)),
        )
        .await;
        let published: usize = outcomes.iter().map(|(ok, _)| ok).sum();
        let failed: usize = outcomes.iter().map(|(_, failed)| failed).sum();
        if failed > 0 {
            // Keep the rows: the published ones go out again next round, with the
            // same message ids, and consumers de-duplicate them.
            transaction.rollback().await?;
            return Err(RelayError::Publish(failed));
        }
        let ids: Vec<i64> = batches.iter().map(|(id, ..)| *id).collect();
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
        Ok(published)
    }

    /// Publishes one customer's events in sequence order; stops at the first
    /// failure. Returns (published, not published).
    async fn publish_in_order(
        &self,
        customer: String,
        mut events: Vec<(i64, Vec<u8>)>,
    ) -> (usize, usize) {
        events.sort_by_key(|(seq, _)| *seq);
        let total = events.len();
        for (index, (seq, payload)) in events.into_iter().enumerate() {
            let message = Message::new(ACCEPTED_TYPE, 1, payload)
                .with_id(format!("uacc_{seq}"))
                .with_ordering_key(customer.clone());
            if let Err(error) = self.bus.publish(topics::USAGE_ACCEPTED, message).await {
                tracing::warn!(%error, seq, "publishing an accepted event failed; will retry");
                return (index, total - index);
            }
        }
        (total, 0)
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

    /// Relays until `shutdown`, recording `tally.ingest.relay_lag_seconds`
    /// and, every minute, `tally.ingest.published_events`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut next_count = tokio::time::Instant::now();
        while !shutdown.is_triggered() {
            if tokio::time::Instant::now() >= next_count {
                match self.published_events().await {
                    Ok(count) => self.metrics.record_published_events(count),
                    Err(error) => tracing::warn!(%error, "counting published events failed"),
                }
                next_count = tokio::time::Instant::now() + COUNT_INTERVAL;
            }
            let relayed = self.relay_once().await;
            let wait = match &relayed {
                Ok(0) => Duration::from_millis(20),
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "usage-accepted relay round failed; retrying");
                    Duration::from_secs(1)
                }
            };
            // An empty round means nothing waits: no need to ask the database
            // (an idle relay stays at one query per poll, like the outbox relay).
            let lag = match relayed {
                Ok(0) => Ok(0.0),
                _ => self.lag_seconds().await,
            };
            if let Ok(lag) = lag {
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
    }
}

/// A row the relay reads: the customer (ordering key) and the event.
#[derive(Debug, sqlx::FromRow)]
struct RelayRow {
    customer_id: String,
    #[sqlx(flatten)]
    event: EventRow,
}
