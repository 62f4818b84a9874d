//! The SQL of `invoicing.billing_modes` and of holding a customer's drafts.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// A customer's billing mode as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMode {
    /// `None`: every invoice held; `Some`: Tally bills boundaries after it.
    pub tally_bills_after: Option<DateTime<Utc>>,
    /// The version it was set with.
    pub version: i64,
}

/// The customer's mode (none: Tally bills), locked when `lock`.
pub async fn get(
    connection: &mut PgConnection,
    customer_id: &str,
    lock: bool,
) -> Result<Option<StoredMode>> {
    let sql = if lock {
        "SELECT tally_bills_after, version FROM invoicing.billing_modes WHERE customer_id = $1 FOR UPDATE"
    } else {
        "SELECT tally_bills_after, version FROM invoicing.billing_modes WHERE customer_id = $1"
    };
    let row: Option<(Option<DateTime<Utc>>, i64)> = sqlx::query_as(sql)
        .bind(customer_id)
        .fetch_optional(connection)
        .await?;
    Ok(row.map(|(tally_bills_after, version)| StoredMode {
        tally_bills_after,
        version,
    }))
}

/// Inserts or replaces the customer's mode.
pub async fn set(
    connection: &mut PgConnection,
    customer_id: &str,
    mode: StoredMode,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.billing_modes (customer_id, tally_bills_after, version, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO UPDATE SET \
           tally_bills_after = EXCLUDED.tally_bills_after, version = EXCLUDED.version, \
           updated_at = EXCLUDED.updated_at",
    )
    .bind(customer_id)
    .bind(mode.tally_bills_after)
    .bind(mode.version)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Holds the customer's drafts of boundaries up to `through` (all when
/// `None`): their grace ends at `held_until`. Answers how many.
pub async fn hold_drafts(
    connection: &mut PgConnection,
    customer_id: &str,
    through: Option<DateTime<Utc>>,
    held_until: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE invoicing.invoices SET grace_period_ends_at = $3 \
         WHERE customer_id = $1 AND status = 'draft' AND grace_period_ends_at <> $3 \
           AND ($2::timestamptz IS NULL OR boundary_at <= $2)",
    )
    .bind(customer_id)
    .bind(through)
    .bind(held_until)
    .execute(connection)
    .await?;
    Ok(done.rows_affected())
}
