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
