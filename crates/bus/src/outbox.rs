//! The transactional outbox: publish exactly what was committed.
//!
//! A service writes its state change and the message describing it in one
//! transaction ([`enqueue`]). The [`OutboxRelay`] then publishes unpublished
//! rows in `seq` order and marks them published. A crash between publishing
//! and marking means the message is published again with the same id — the
//! consumers' [`crate::inbox`] makes that harmless. A rolled-back transaction
//! publishes nothing.
//!
//! Order: rows of one ordering key are published one after another, in `seq`
//! order; a failure stops that key's batch so nothing overtakes it. Several
//! relay replicas are safe: the batch is read `FOR UPDATE`, so a second relay
//! waits instead of publishing the same rows concurrently.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use opentelemetry::KeyValue;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tally_runtime::Shutdown;

use crate::inbox::ServiceSchema;
use crate::{Message, SharedBus};

/// Adds `message` for `topic` to the outbox of `schema`, inside the caller's transaction.
pub async fn enqueue(
    connection: &mut PgConnection,
    schema: ServiceSchema,
    topic: &str,
    message: &Message,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {}.outbox (message_id, topic, message_type, type_version, ordering_key, attributes, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        schema.as_str()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&message.id)
        .bind(topic)
        .bind(&message.message_type)
        .bind(i32::try_from(message.type_version).unwrap_or(i32::MAX))
        .bind(&message.ordering_key)
        .bind(sqlx::types::Json(&message.attributes))
        .bind(&message.payload)
        .execute(connection)
        .await?;
    Ok(())
}

/// [`enqueue`] for many messages of one topic in one statement (a bill run
/// writes an event per invoice), in the order given.
pub async fn enqueue_many(
    connection: &mut PgConnection,
    schema: ServiceSchema,
    topic: &str,
    messages: &[Message],
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {}.outbox (message_id, topic, message_type, type_version, ordering_key, attributes, payload) \
         SELECT message_id, $2, message_type, type_version, ordering_key, attributes, payload \
         FROM unnest($1::text[], $3::text[], $4::int[], $5::text[], $6::jsonb[], $7::bytea[]) WITH ORDINALITY \
           AS m(message_id, message_type, type_version, ordering_key, attributes, payload, position) \
         ORDER BY position",
        schema.as_str()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
        .bind(topic)
        .bind(
            messages
                .iter()
                .map(|m| m.message_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            messages
                .iter()
                .map(|m| i32::try_from(m.type_version).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(
            messages
                .iter()
                .map(|m| m.ordering_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            messages
                .iter()
                .map(|m| sqlx::types::Json(&m.attributes))
                .collect::<Vec<_>>(),
        )
        .bind(
            messages
                .iter()
                .map(|m| m.payload.as_slice())
                .collect::<Vec<_>>(),
        )
        .execute(connection)
        .await?;
    Ok(())
}

/// Publishes a service's outbox to the bus.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    schema: ServiceSchema,
    bus: SharedBus,
    batch_size: i64,
    idle_poll: Duration,
}

type OutboxRow = (
    i64,
    String,
    String,
    String,
    i32,
    Option<String>,
    sqlx::types::Json<HashMap<String, String>>,
    Vec<u8>,
);

impl OutboxRelay {
    /// A relay for the outbox of `schema`.
    pub fn new(pool: PgPool, schema: ServiceSchema, bus: SharedBus) -> Self {
        Self {
            pool,
            schema,
            bus,
            batch_size: 500,
            idle_poll: Duration::from_millis(50),
        }
    }

    /// Publishes up to one batch; returns how many rows were published.
    pub async fn relay_once(&self) -> Result<usize, sqlx::Error> {
        let schema = self.schema.as_str();
        let mut transaction = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT seq, message_id, topic, message_type, type_version, ordering_key, attributes, payload \
             FROM {schema}.outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE"
        )))
        .bind(self.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Group by ordering key (keeping seq order); keys are published concurrently.
        let mut groups: Vec<Vec<(i64, String, Message)>> = Vec::new();
        let mut group_of_key: HashMap<String, usize> = HashMap::new();
        for (seq, id, topic, message_type, version, ordering_key, attributes, payload) in rows {
            let message = Message {
                id,
                message_type,
                type_version: u32::try_from(version).unwrap_or(0),
                ordering_key: ordering_key.clone(),
                attributes: attributes.0,
                payload,
            };
            let index = match ordering_key {
                Some(key) => *group_of_key.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                }),
                None => {
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            groups[index].push((seq, topic, message));
        }
        let published_per_group =
            join_all(groups.into_iter().map(|group| self.publish_in_order(group))).await;
        let published: Vec<i64> = published_per_group.into_iter().flatten().collect();

        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {schema}.outbox SET published_at = now() WHERE seq = ANY($1)"
        )))
        .bind(&published)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(published.len())
    }

    /// Publishes one key's rows in order, stopping at the first failure.
    async fn publish_in_order(&self, group: Vec<(i64, String, Message)>) -> Vec<i64> {
        let mut published = Vec::with_capacity(group.len());
        for (seq, topic, message) in group {
            if let Err(error) = self.bus.publish(&topic, message).await {
                tracing::warn!(seq, %topic, %error, "outbox publish failed; will retry");
                break;
            }
            published.push(seq);
        }
        published
    }

    /// Seconds the oldest unpublished row has waited (0 when caught up).
    pub async fn lag_seconds(&self) -> Result<f64, sqlx::Error> {
        let lag: Option<f64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM {}.outbox WHERE published_at IS NULL",
            self.schema.as_str()
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(lag.unwrap_or(0.0).max(0.0))
    }

    /// Relays until `shutdown`, reporting `tally.outbox.lag_seconds`.
    pub async fn run(self, shutdown: Shutdown) {
        let lag_gauge = tally_runtime::telemetry::meter()
            .f64_gauge("tally.outbox.lag_seconds")
            .with_description("Age of the oldest outbox message not yet on the bus")
            .build();
        let labels = [KeyValue::new("service", self.schema.as_str())];
        while !shutdown.is_triggered() {
            let relayed = self.relay_once().await;
            let wait = match &relayed {
                Ok(count) if *count as i64 >= self.batch_size => Duration::ZERO,
                Ok(_) => self.idle_poll,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; retrying");
                    Duration::from_secs(1)
                }
            };
            // An empty batch means nothing is waiting: no need to ask the database
            // (this keeps an idle relay at one query per poll).
            let lag = match relayed {
                Ok(0) => Ok(0.0),
                _ => self.lag_seconds().await,
            };
            if let Ok(lag) = lag {
                lag_gauge.record(lag, &labels);
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
