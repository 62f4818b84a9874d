//! Consumer-side idempotency: record a message id in the same transaction as
//! the effect it caused, so a redelivered message changes nothing.

use sqlx::{AssertSqlSafe, PgConnection};

/// The schema of the service that consumes (or produces) — each service keeps
/// its own `inbox` and `outbox` tables in its own schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceSchema {
    /// `ingest`
    Ingest,
    /// `rating`
    Rating,
    /// `invoicing`
    Invoicing,
    /// `payments`
    Payments,
    /// `finance` (an inbox, no outbox)
    Finance,
    /// `connectors` (an inbox, no outbox)
    Connectors,
    /// `export` (an inbox, no outbox)
    Export,
}

impl ServiceSchema {
    /// The PostgreSQL schema name (a fixed identifier, safe to put in SQL text).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceSchema::Ingest => "ingest",
            ServiceSchema::Rating => "rating",
            ServiceSchema::Invoicing => "invoicing",
            ServiceSchema::Payments => "payments",
            ServiceSchema::Finance => "finance",
            ServiceSchema::Connectors => "connectors",
            ServiceSchema::Export => "export",
        }
    }
}

/// Records that `subscription` applied `message_id`. Returns `false` when it
/// was already recorded: the caller must then skip the effect (and still ack).
///
/// Call it inside the transaction that applies the effect.
pub async fn record_once(
    connection: &mut PgConnection,
    schema: ServiceSchema,
    subscription: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO {}.inbox (subscription, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        schema.as_str()
    );
    let result = sqlx::query(AssertSqlSafe(sql))
        .bind(subscription)
        .bind(message_id)
        .execute(connection)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// [`record_once`] for a batch of messages, in one statement: records every
/// id of `message_ids` not recorded yet and returns those (the messages whose
/// effect the caller applies; the others are redeliveries). An id given
/// twice is recorded, and returned, once.
///
/// Call it inside the transaction that applies the effects.
pub async fn record_all(
    connection: &mut PgConnection,
    schema: ServiceSchema,
    subscription: &str,
    message_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if message_ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let sql = format!(
        "INSERT INTO {}.inbox (subscription, message_id) SELECT $1, id FROM UNNEST($2::text[]) AS m (id) \
         ON CONFLICT DO NOTHING RETURNING message_id",
        schema.as_str()
    );
    let recorded: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(subscription)
        .bind(message_ids)
        .fetch_all(connection)
        .await?;
    Ok(recorded.into_iter().collect())
}
