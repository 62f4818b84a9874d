//! The relay from the event log to `usage-accepted`.
//!
//! Each committed batch left one `accepted_batches` row holding its events
//! exactly as committed. The relay takes the oldest rows (`FOR UPDATE`, so a
//! second replica waits instead of publishing the same rows), publishes every
//! event with its customer as ordering key — customers in parallel, each
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
use prost::Message as _;
use sqlx::PgPool;
use tally_bus::{Message, SharedBus, topics};
use tally_proto::events::UsageAccepted;
use tally_runtime::Shutdown;

use crate::log::decode_accepted;
use crate::metrics::IngestMetrics;

/// The protobuf type name on `usage-accepted`.
pub const ACCEPTED_TYPE: &str = "tally.events.v1.UsageAccepted";

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
    /// A stored batch does not decode (a bug; the row is kept for inspection).
    #[error("accepted batch {0} does not decode: {1}")]
    Corrupt(i64, prost::DecodeError),
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
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, payload FROM ingest.accepted_batches ORDER BY id LIMIT $1 FOR UPDATE",
        )
        .bind(self.batches_per_round)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut by_customer: HashMap<String, Vec<UsageAccepted>> = HashMap::new();
        let mut ids = Vec::with_capacity(rows.len());
        let mut high_water = 0u64;
        for (id, payload) in rows {
            let events =
                decode_accepted(&payload).map_err(|error| RelayError::Corrupt(id, error))?;
            for accepted in events {
                high_water = high_water.max(accepted.sequence_number);
                let customer = accepted
                    .event
                    .as_ref()
                    .map(|event| event.customer_id.clone())
                    .unwrap_or_default();
                by_customer.entry(customer).or_default().push(accepted);
            }
            ids.push(id);
        }
        let outcomes = join_all(
            by_customer
                .into_values()
                .map(|events| self.publish_in_order(events)),
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
        sqlx::query("DELETE FROM ingest.accepted_batches WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE ingest.relay_state SET published_high_water = GREATEST(published_high_water, $1)",
        )
        .bind(i64::try_from(high_water).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(published)
    }

    /// Publishes one customer's events in order; stops at the first failure.
    /// Returns (published, not published).
    async fn publish_in_order(&self, mut events: Vec<UsageAccepted>) -> (usize, usize) {
        events.sort_by_key(|accepted| accepted.sequence_number);
        let total = events.len();
        for (index, accepted) in events.into_iter().enumerate() {
            let message = accepted_message(&accepted);
            if let Err(error) = self.bus.publish(topics::USAGE_ACCEPTED, message).await {
                tracing::warn!(%error, seq = accepted.sequence_number, "publishing an accepted event failed; will retry");
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

    /// Relays until `shutdown`, recording `tally.ingest.relay_lag_seconds`.
    pub async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            let wait = match self.relay_once().await {
                Ok(0) => Duration::from_millis(20),
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "usage-accepted relay round failed; retrying");
                    Duration::from_secs(1)
                }
            };
            if let Ok(lag) = self.lag_seconds().await {
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

/// The bus message for one accepted event: id `uacc_<seq>`, ordering key the customer.
pub fn accepted_message(accepted: &UsageAccepted) -> Message {
    let customer = accepted
        .event
        .as_ref()
        .map(|event| event.customer_id.clone())
        .unwrap_or_default();
    Message::new(ACCEPTED_TYPE, 1, accepted.encode_to_vec())
        .with_id(format!("uacc_{}", accepted.sequence_number))
        .with_ordering_key(customer)
}
