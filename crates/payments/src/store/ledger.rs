//! The payments ledger's tables (`payments.ledger_transactions`,
//! `payments.ledger_accounts`, `payments.ledger_entries`), append-only, in
//! the caller's database transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::ids::TransactionId;
use tally_domain::ledger::Transaction;

/// Stores `transaction` (its JSON `body`) unless its id is stored; `true`
/// when inserted. A database error (such as a second reversal of the same
/// transaction) is returned as it is, for the caller to name.
pub async fn insert_transaction(
    connection: &mut PgConnection,
    transaction: &Transaction,
    body: &serde_json::Value,
    recorded_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payments.ledger_transactions (id, effective_at, description, reverses, body, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(transaction.id().as_str())
    .bind(transaction.effective_at())
    .bind(transaction.description())
    .bind(transaction.reverses().map(TransactionId::as_str))
    .bind(body)
    .bind(recorded_at)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The stored JSON body of transaction `id`, if stored.
pub async fn transaction_body(
    connection: &mut PgConnection,
    id: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM payments.ledger_transactions WHERE id = $1")
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// Opens an account (nothing when open).
pub async fn open_account(
    connection: &mut PgConnection,
    id: &str,
    name: &str,
    kind: &str,
    currency: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.ledger_accounts (id, name, kind, currency) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(kind)
    .bind(currency)
    .execute(connection)
    .await?;
    Ok(())
}

/// One entry of a stored transaction.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub transaction_id: &'a str,
    pub position: i32,
    pub account_id: &'a str,
    /// `debit` or `credit`.
    pub side: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
}

/// Stores an entry.
pub async fn insert_entry(
    connection: &mut PgConnection,
    entry: NewEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments.ledger_entries (transaction_id, position, account_id, side, amount, currency) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.transaction_id)
    .bind(entry.position)
    .bind(entry.account_id)
    .bind(entry.side)
    .bind(entry.amount)
    .bind(entry.currency)
    .execute(connection)
    .await?;
    Ok(())
}

/// The sum of account `account_id`'s entries, positive on side `normal`.
pub async fn account_total(
    connection: &mut PgConnection,
    account_id: &str,
    normal: &str,
) -> Result<Option<Decimal>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sum(CASE WHEN side = $2 THEN amount ELSE -amount END) FROM payments.ledger_entries WHERE account_id = $1",
    )
    .bind(account_id)
    .bind(normal)
    .fetch_one(connection)
    .await
}
