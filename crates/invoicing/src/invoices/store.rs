//! SQL of the invoice operations: credit notes (`invoicing.credit_notes`),
//! the void and credited-amount updates, the bill-run lock, and the drafts
//! a preview finalizes first. Invoice rows and lines themselves are read
//! and written by `billing::store`.

use chrono::{DateTime, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tally_domain::money::Currency;
use tally_proto::invoicing as proto;

use super::mapping;
use super::model::{CreditNote, CreditNoteLine, CreditNoteReason};
use crate::error::{InvoicingError, Result};

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

/// A stored credit note in either format (`reason` is NULL only on rows
/// written before `20261207800000_invoicing_own_model.sql`, or by a pod of
/// the previous release during a rolling upgrade: their protobuf `snapshot`
/// is read through the mapping until `tally migrate` converts them).
#[derive(Debug, sqlx::FromRow)]
struct CreditNoteRow {
    id: String,
    number: String,
    invoice_id: String,
    customer_id: String,
    reason: Option<CreditNoteReason>,
    memo: Option<String>,
    lines: Option<Json<Vec<CreditNoteLine>>>,
    currency: Option<String>,
    total: Decimal,
    credited_to_balance: Option<bool>,
    refund_id: Option<String>,
    created_at: DateTime<Utc>,
    refund_amount: Option<Decimal>,
    snapshot: Option<Vec<u8>>,
}

impl CreditNoteRow {
    fn into_model(self) -> Result<CreditNote> {
        let (Some(reason), Some(Json(lines)), Some(currency)) =
            (self.reason, self.lines, self.currency)
        else {
            let bytes = self.snapshot.ok_or_else(|| {
                InvoicingError::Internal(format!("credit note {} has no stored form", self.id))
            })?;
            return legacy_credit_note(&bytes);
        };
        Ok(CreditNote {
            id: self.id,
            number: self.number,
            invoice_id: self.invoice_id,
            customer_id: self.customer_id,
            reason,
            memo: self.memo.unwrap_or_default(),
            lines,
            currency: Currency::from_code(&currency).map_err(InvoicingError::internal)?,
            total: self.total,
            credited_to_balance: self.credited_to_balance.unwrap_or(false),
            refund_id: self.refund_id,
            created_at: self.created_at,
            refund_amount: self.refund_amount,
        })
    }
}

/// The model of a protobuf credit note stored by an earlier release (this
/// release still writes it beside the columns, for the previous release to
/// read after a rollback).
pub fn legacy_credit_note(bytes: &[u8]) -> Result<CreditNote> {
    let note = proto::CreditNote::decode(bytes).map_err(InvoicingError::internal)?;
    mapping::from_wire(&note)
}

const CREDIT_NOTE_COLUMNS: &str = "id, number, invoice_id, customer_id, reason, memo, lines, currency, total, \
    credited_to_balance, refund_id, created_at, refund_amount, snapshot";

/// Stores a credit note.
pub async fn insert_credit_note(connection: &mut PgConnection, note: &CreditNote) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.credit_notes (id, number, invoice_id, customer_id, reason, memo, lines, currency, total, \
           credited_to_balance, refund_id, created_at, refund_amount, snapshot) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&note.id)
    .bind(&note.number)
    .bind(&note.invoice_id)
    .bind(&note.customer_id)
    .bind(note.reason.name())
    .bind(&note.memo)
    .bind(Json(&note.lines))
    .bind(note.currency.code())
    .bind(note.total)
    .bind(note.credited_to_balance)
    .bind(note.refund_id.as_deref())
    .bind(note.created_at)
    .bind(note.refund_amount)
    .bind(mapping::to_wire(note).encode_to_vec())
    .execute(connection)
    .await?;
    Ok(())
}

/// Every credit note of invoice `invoice_id`.
pub async fn credit_notes_of_invoice(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Vec<CreditNote>> {
    let sql = format!(
        "SELECT {CREDIT_NOTE_COLUMNS} FROM invoicing.credit_notes WHERE invoice_id = $1 ORDER BY id"
    );
    let rows: Vec<CreditNoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(invoice_id)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(CreditNoteRow::into_model).collect()
}

/// Credit note `note_id` (which must exist).
pub async fn credit_note(connection: &mut PgConnection, note_id: &str) -> Result<CreditNote> {
    let sql = format!("SELECT {CREDIT_NOTE_COLUMNS} FROM invoicing.credit_notes WHERE id = $1");
    let row: CreditNoteRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(note_id)
        .fetch_one(connection)
        .await?;
    row.into_model()
}

/// Up to `limit` credit notes (of `invoice_id` and `customer_id` when not
/// empty) with an id before `before`, newest id first.
pub async fn credit_notes_page(
    pool: &PgPool,
    invoice_id: &str,
    customer_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<CreditNote>> {
    let sql = format!(
        "SELECT {CREDIT_NOTE_COLUMNS} FROM invoicing.credit_notes WHERE ($1 = '' OR invoice_id = $1) \
           AND ($2 = '' OR customer_id = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    );
    let rows: Vec<CreditNoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(invoice_id)
        .bind(customer_id)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(CreditNoteRow::into_model).collect()
}

/// Up to `limit` credit notes still stored only as protobuf.
pub async fn legacy_credit_notes(
    connection: &mut PgConnection,
    limit: i64,
) -> Result<Vec<CreditNote>> {
    let sql = format!(
        "SELECT {CREDIT_NOTE_COLUMNS} FROM invoicing.credit_notes WHERE reason IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    let rows: Vec<CreditNoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(CreditNoteRow::into_model).collect()
}

/// Writes converted credit notes' columns (their protobuf stays, for the
/// previous release).
pub async fn set_converted_credit_notes(
    connection: &mut PgConnection,
    notes: &[CreditNote],
) -> Result<()> {
    let lines = notes
        .iter()
        .map(|note| serde_json::to_string(&note.lines))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(InvoicingError::internal)?;
    sqlx::query(
        "UPDATE invoicing.credit_notes n SET reason = c.reason, memo = c.memo, lines = c.lines::jsonb, \
           currency = c.currency, credited_to_balance = c.credited_to_balance, refund_amount = c.refund_amount \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::numeric[]) \
           AS c(id, reason, memo, lines, currency, credited_to_balance, refund_amount) \
         WHERE n.id = c.id",
    )
    .bind(notes.iter().map(|note| note.id.as_str()).collect::<Vec<_>>())
    .bind(notes.iter().map(|note| note.reason.name()).collect::<Vec<_>>())
    .bind(notes.iter().map(|note| note.memo.as_str()).collect::<Vec<_>>())
    .bind(&lines)
    .bind(notes.iter().map(|note| note.currency.code()).collect::<Vec<_>>())
    .bind(notes.iter().map(|note| note.credited_to_balance).collect::<Vec<_>>())
    .bind(notes.iter().map(|note| note.refund_amount).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
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
