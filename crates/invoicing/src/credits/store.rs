//! The credit tables: grants (`invoicing.credit_grants`, the remaining
//! amount on the row), the ledger's transactions and entries
//! (`invoicing.ledger_transactions`, `invoicing.credit_ledger_entries`,
//! append-only), and the per-customer lock that orders postings.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::model::{Closure, EntryKind, GrantKind};
use crate::error::{InvoicingError, Result};

/// A grant row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    pub customer_id: String,
    pub kind: GrantKind,
    pub currency: String,
    pub amount: Decimal,
    pub remaining: Decimal,
    pub priority: i32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub closed: Option<Closure>,
    pub description: String,
    pub credit_note_id: String,
    pub created_at: DateTime<Utc>,
}

const GRANT_COLUMNS: &str = "id, customer_id, kind, currency, amount, remaining, priority, effective_at, expires_at, \
    closed, description, credit_note_id, created_at";

/// Grant `id` (`FOR UPDATE` when `lock`).
pub async fn load_grant(connection: &mut PgConnection, id: &str, lock: bool) -> Result<GrantRow> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| InvoicingError::NotFound(format!("credit grant {id:?} not found")))
}

/// Stores a new grant (its remaining amount is its amount).
pub async fn insert_grant(connection: &mut PgConnection, row: &GrantRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.credit_grants (id, customer_id, kind, currency, amount, remaining, priority, effective_at, \
           expires_at, description, credit_note_id, created_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.id)
    .bind(&row.customer_id)
    .bind(row.kind.name())
    .bind(&row.currency)
    .bind(row.amount)
    .bind(row.priority)
    .bind(row.effective_at)
    .bind(row.expires_at)
    .bind(&row.description)
    .bind(&row.credit_note_id)
    .bind(row.created_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// The grants of `customer_id` in `currency` usable at `now` (open, not
/// empty, effective by `usable_from`, not expired), by id, locked
/// (`FOR UPDATE`).
pub async fn lock_usable_grants(
    connection: &mut PgConnection,
    customer_id: &str,
    currency: &str,
    usable_from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<GrantRow>> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE customer_id = $1 AND currency = $2 \
         AND closed IS NULL AND remaining > 0 AND effective_at <= $3 AND (expires_at IS NULL OR expires_at > $4) \
         ORDER BY id FOR UPDATE"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(currency)
        .bind(usable_from)
        .bind(now)
        .fetch_all(connection)
        .await?)
}

/// The open, non-empty grants of `customer_id` in `currency`, by id
/// (unlocked: a preview writes nothing).
pub async fn open_grants(
    connection: &mut PgConnection,
    customer_id: &str,
    currency: &str,
) -> Result<Vec<GrantRow>> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE customer_id = $1 AND currency = $2 \
         AND closed IS NULL AND remaining > 0 ORDER BY id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(currency)
        .fetch_all(connection)
        .await?)
}

/// Up to 1000 open grants with a remaining amount expired by `now`, by
/// expiry, locked (`FOR UPDATE SKIP LOCKED`: another replica has the rest).
pub async fn lock_expired_grants(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<GrantRow>> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM invoicing.credit_grants WHERE closed IS NULL AND remaining > 0 \
         AND expires_at <= $1 ORDER BY expires_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .fetch_all(connection)
        .await?)
}

/// The grants of `customer_id` as they were at `as_of`: not yet expired and
/// created by then, each with its amount plus every later entry (burns,
/// expiries, voids, reversals) effective by then as `remaining`.
pub async fn grants_as_of(
    connection: &mut PgConnection,
    customer_id: &str,
    as_of: DateTime<Utc>,
) -> Result<Vec<GrantRow>> {
    let sql = format!(
        "SELECT {} FROM invoicing.credit_grants g WHERE customer_id = $1 \
         AND (expires_at IS NULL OR expires_at > $2) AND created_at <= $2",
        GRANT_COLUMNS.replace(
            "remaining",
            "amount + COALESCE((SELECT sum(e.amount) FROM invoicing.credit_ledger_entries e \
               WHERE e.credit_grant_id = g.id AND e.kind <> 'grant' AND e.effective_at <= $2), 0) AS remaining",
        )
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(as_of)
        .fetch_all(connection)
        .await?)
}

/// The customers among `customers` with a grant that may still be burned.
pub async fn customers_with_open_grants(
    connection: &mut PgConnection,
    customers: &[&str],
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT customer_id FROM invoicing.credit_grants \
         WHERE customer_id = ANY($1) AND closed IS NULL AND remaining > 0",
    )
    .bind(customers)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(customer,)| customer).collect())
}

/// Takes `amount` from grant `grant_id`'s remaining amount.
pub async fn reduce_remaining(
    connection: &mut PgConnection,
    grant_id: &str,
    amount: Decimal,
) -> Result<()> {
    sqlx::query("UPDATE invoicing.credit_grants SET remaining = remaining - $2 WHERE id = $1")
        .bind(grant_id)
        .bind(amount)
        .execute(connection)
        .await?;
    Ok(())
}

/// Gives `amount` back to grant `grant_id`; an expired grant reopens (the
/// next expiry pass writes it off again).
pub async fn give_back(
    connection: &mut PgConnection,
    grant_id: &str,
    amount: Decimal,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.credit_grants SET remaining = remaining + $2, \
           closed = CASE WHEN closed = 'expired' THEN NULL ELSE closed END WHERE id = $1",
    )
    .bind(grant_id)
    .bind(amount)
    .execute(connection)
    .await?;
    Ok(())
}

/// Empties grant `grant_id` and closes it as expired.
pub async fn close_expired(connection: &mut PgConnection, grant_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.credit_grants SET remaining = 0, closed = 'expired' WHERE id = $1",
    )
    .bind(grant_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// Empties grant `grant_id` and closes it as void.
pub async fn close_void(connection: &mut PgConnection, grant_id: &str) -> Result<()> {
    sqlx::query("UPDATE invoicing.credit_grants SET remaining = 0, closed = 'void' WHERE id = $1")
        .bind(grant_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Credits burned on an invoice and not given back yet, per grant.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReturnableBurn {
    pub customer_id: String,
    pub credit_grant_id: String,
    pub currency: String,
    /// Burned minus given back (positive).
    pub amount: Decimal,
}

/// What was burned on `invoice_id` and not given back, per grant, the
/// latest burn first.
pub async fn returnable_burns(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Vec<ReturnableBurn>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, credit_grant_id, currency, -SUM(amount) AS amount FROM invoicing.credit_ledger_entries \
         WHERE invoice_id = $1 AND kind IN ('burn', 'reversal') \
         GROUP BY customer_id, credit_grant_id, currency HAVING SUM(amount) < 0 ORDER BY MAX(seq) DESC",
    )
    .bind(invoice_id)
    .fetch_all(connection)
    .await?)
}

/// Locks `customer_id`'s credit ledger for the rest of the caller's
/// transaction (postings of one customer run one after the other, so each
/// entry's balance follows the previous one).
pub async fn lock_customer_ledger(connection: &mut PgConnection, customer_id: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))")
        .bind(customer_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Stores a balanced ledger transaction (its domain body as JSON).
pub async fn insert_ledger_transaction(
    connection: &mut PgConnection,
    id: &str,
    customer_id: &str,
    body: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO invoicing.ledger_transactions (id, customer_id, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(customer_id)
        .bind(body)
        .bind(now)
        .execute(connection)
        .await?;
    Ok(())
}

/// The balance after `customer_id`'s latest entry in `currency`, if any.
pub async fn latest_balance(
    connection: &mut PgConnection,
    customer_id: &str,
    currency: &str,
) -> Result<Option<Decimal>> {
    let (previous,): (Option<Decimal>,) = sqlx::query_as(
        "SELECT (SELECT balance_after FROM invoicing.credit_ledger_entries WHERE customer_id = $1 AND currency = $2 \
         ORDER BY seq DESC LIMIT 1)",
    )
    .bind(customer_id)
    .bind(currency)
    .fetch_one(connection)
    .await?;
    Ok(previous)
}

/// A ledger entry on a customer's credit balance.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LedgerEntry {
    /// Posting order (the page token).
    pub seq: i64,
    pub id: String,
    pub transaction_id: String,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub currency: String,
    pub balance_after: Decimal,
    pub credit_grant_id: String,
    pub invoice_id: String,
    pub counter_account: String,
    pub description: String,
    pub effective_at: DateTime<Utc>,
}

/// Up to `limit` entries of `customer_id` (of grant `grant_id` when not
/// empty) after `after_seq`, in posting order.
pub async fn ledger_entries_page(
    connection: &mut PgConnection,
    customer_id: &str,
    grant_id: &str,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<LedgerEntry>> {
    Ok(sqlx::query_as(
        "SELECT seq, id, transaction_id, kind, amount, currency, balance_after, credit_grant_id, invoice_id, \
           counter_account, description, effective_at FROM invoicing.credit_ledger_entries \
         WHERE customer_id = $1 AND ($2 = '' OR credit_grant_id = $2) AND ($3::bigint IS NULL OR seq > $3) \
         ORDER BY seq LIMIT $4",
    )
    .bind(customer_id)
    .bind(grant_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(connection)
    .await?)
}

/// A new ledger entry (its `seq` is assigned by the database).
#[derive(Clone, Copy, Debug)]
pub struct NewLedgerEntry<'a> {
    pub id: &'a str,
    pub transaction_id: &'a str,
    pub customer_id: &'a str,
    pub credit_grant_id: &'a str,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub currency: &'a str,
    pub balance_after: Decimal,
    pub invoice_id: &'a str,
    pub counter_account: &'a str,
    pub description: &'a str,
    pub effective_at: DateTime<Utc>,
}

/// Stores a ledger entry.
pub async fn insert_ledger_entry(
    connection: &mut PgConnection,
    entry: NewLedgerEntry<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.credit_ledger_entries (id, transaction_id, customer_id, credit_grant_id, kind, amount, \
           currency, balance_after, invoice_id, counter_account, description, effective_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry.id)
    .bind(entry.transaction_id)
    .bind(entry.customer_id)
    .bind(entry.credit_grant_id)
    .bind(entry.kind.name())
    .bind(entry.amount)
    .bind(entry.currency)
    .bind(entry.balance_after)
    .bind(entry.invoice_id)
    .bind(entry.counter_account)
    .bind(entry.description)
    .bind(entry.effective_at)
    .execute(connection)
    .await?;
    Ok(())
}
