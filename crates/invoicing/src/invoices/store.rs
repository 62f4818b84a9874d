//! SQL of the invoice operations: credit notes (`invoicing.credit_notes`),
//! the void and credited-amount updates, the bill-run lock, and the drafts
//! a preview finalizes first. Invoice rows and lines themselves are read
//! and written by `billing::store`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::error::Result;

/// The session advisory lock one bill run at a time holds (`tallybil`).
const BILL_RUN_LOCK: i64 = 0x7461_6c6c_7962_696c;

/// Waits for the bill-run lock and takes it for the session.
pub async fn lock_bill_runs(connection: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(BILL_RUN_LOCK)
        .execute(connection)
        .await?;
    Ok(())
}

/// Takes the bill-run lock for the session if free; `false` when another
/// run holds it.
pub async fn try_lock_bill_runs(connection: &mut PgConnection) -> Result<bool> {
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(BILL_RUN_LOCK)
        .fetch_one(connection)
        .await?;
    Ok(locked)
}

/// Releases the bill-run lock.
pub async fn unlock_bill_runs(connection: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(BILL_RUN_LOCK)
        .execute(connection)
        .await?;
    Ok(())
}

/// Marks invoice `invoice_id` void at `now` for `reason`, as a new version.
pub async fn mark_void(
    connection: &mut PgConnection,
    invoice_id: &str,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoices SET status = 'void', voided_at = $2, void_reason = $3, version = version + 1, \
           updated_at = $2 WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(now)
    .bind(reason)
    .execute(connection)
    .await?;
    Ok(())
}

/// Adds `total` to invoice `invoice_id`'s credited amount, as a new version.
pub async fn add_amount_credited(
    connection: &mut PgConnection,
    invoice_id: &str,
    total: Decimal,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.invoices SET amount_credited = amount_credited + $2, version = version + 1, updated_at = $3 \
         WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(total)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// A credit note as `invoicing.credit_notes` stores it.
#[derive(Clone, Copy, Debug)]
pub struct NewCreditNote<'a> {
    /// `cn_…`.
    pub id: &'a str,
    pub number: &'a str,
    pub invoice_id: &'a str,
    pub customer_id: &'a str,
    pub total: Decimal,
    pub refund_id: Option<&'a str>,
    /// The encoded `tally.invoicing.v1.CreditNote`.
    pub snapshot: &'a [u8],
    pub created_at: DateTime<Utc>,
}

/// Stores a credit note.
pub async fn insert_credit_note(
    connection: &mut PgConnection,
    note: NewCreditNote<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.credit_notes (id, number, invoice_id, customer_id, total, refund_id, snapshot, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(note.id)
    .bind(note.number)
    .bind(note.invoice_id)
    .bind(note.customer_id)
    .bind(note.total)
    .bind(note.refund_id)
    .bind(note.snapshot)
    .bind(note.created_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// The snapshots of every credit note of invoice `invoice_id`.
pub async fn credit_note_snapshots_of_invoice(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Vec<Vec<u8>>> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT snapshot FROM invoicing.credit_notes WHERE invoice_id = $1")
            .bind(invoice_id)
            .fetch_all(connection)
            .await?;
    Ok(rows.into_iter().map(|(snapshot,)| snapshot).collect())
}

/// A stored credit note's snapshot and invoice.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CreditNoteSnapshot {
    /// The encoded `tally.invoicing.v1.CreditNote`.
    pub snapshot: Vec<u8>,
    pub invoice_id: String,
}

/// Credit note `note_id` (which must exist).
pub async fn credit_note_snapshot(
    connection: &mut PgConnection,
    note_id: &str,
) -> Result<CreditNoteSnapshot> {
    Ok(
        sqlx::query_as("SELECT snapshot, invoice_id FROM invoicing.credit_notes WHERE id = $1")
            .bind(note_id)
            .fetch_one(connection)
            .await?,
    )
}

/// A credit note in a listing.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ListedCreditNote {
    /// `cn_…` (the page token).
    pub id: String,
    /// The encoded `tally.invoicing.v1.CreditNote`.
    pub snapshot: Vec<u8>,
}

/// Up to `limit` credit notes (of `invoice_id` and `customer_id` when not
/// empty) with an id before `before`, newest id first.
pub async fn credit_notes_page(
    pool: &PgPool,
    invoice_id: &str,
    customer_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<ListedCreditNote>> {
    Ok(sqlx::query_as(
        "SELECT id, snapshot FROM invoicing.credit_notes WHERE ($1 = '' OR invoice_id = $1) \
           AND ($2 = '' OR customer_id = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(invoice_id)
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A draft a preview finalizes before the previewed invoice.
#[derive(Clone, Copy, Debug, sqlx::FromRow)]
pub struct DraftDue {
    pub subtotal: Decimal,
    pub period_end: DateTime<Utc>,
    pub grace_period_ends_at: DateTime<Utc>,
}

/// The drafts of customer `customer_id`, in the order they finalize.
pub async fn customer_drafts(
    connection: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<DraftDue>> {
    Ok(sqlx::query_as(
        "SELECT subtotal, period_end, grace_period_ends_at FROM invoicing.invoices \
         WHERE customer_id = $1 AND status = 'draft' ORDER BY grace_period_ends_at, id",
    )
    .bind(customer_id)
    .fetch_all(connection)
    .await?)
}
