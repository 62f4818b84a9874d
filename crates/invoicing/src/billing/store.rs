//! Stored invoices: writing a composition, reading an invoice back.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::ids::{CustomerId, InvoiceId};
use tally_domain::invoice::Invoice as DomainInvoice;
use tally_domain::money::{Currency, LINE_ROUNDING, Money};
use tally_proto::invoicing::{self as proto, CollectionMode as CollectionModeWire, InvoiceStatus};

use super::compose::Composition;
use super::lines::Line;
use super::mapping;
use super::model::{BillingReason, InvoiceStatus as Status};
use crate::customers::mapping::{collection_mode_from_wire, collection_mode_to_wire};
use crate::customers::model::CollectionMode;
use crate::error::{InvoicingError, Result};
use crate::wire::{maybe_timestamp, money, stored_currency, time_range, timestamp};

pub mod billed;
pub mod lines;
pub mod runs;

/// An invoice row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct InvoiceRow {
    pub id: String,
    pub subscription_id: String,
    pub customer_id: String,
    pub boundary_at: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub status: Status,
    pub billing_reason: BillingReason,
    pub currency: String,
    pub number: Option<String>,
    pub subtotal: Decimal,
    pub credits_applied: Decimal,
    pub total: Decimal,
    pub amount_paid: Decimal,
    pub amount_credited: Decimal,
    /// The wire enum's number, written for the previous release only (read
    /// through [`InvoiceRow::collection_mode`]).
    #[sqlx(rename = "collection_mode")]
    pub collection_mode_number: i32,
    /// Set at finalization; NULL on a row an old pod finalized.
    pub collection_mode_name: Option<CollectionMode>,
    pub grace_period_ends_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl InvoiceRow {
    /// The currency.
    pub fn currency(&self) -> Result<Currency> {
        stored_currency(&self.currency)
    }

    /// What is still due: total − paid − credited, never negative.
    pub fn amount_due(&self) -> Decimal {
        (self.total - self.amount_paid - self.amount_credited).max(Decimal::ZERO)
    }

    /// The customer's collection mode copied at finalization (`None` before):
    /// the stored name, or on a row a pod of the previous release finalized
    /// (`20261207800200_invoicing_collection_mode_text.sql`) its number.
    pub fn collection_mode(&self) -> Result<Option<CollectionMode>> {
        match (self.collection_mode_name, self.collection_mode_number) {
            (Some(mode), _) => Ok(Some(mode)),
            (None, 0) => Ok(None),
            (None, number) => collection_mode_from_wire(number).map(Some),
        }
    }

    /// The wire status.
    pub fn wire_status(&self) -> InvoiceStatus {
        status_to_wire(self.status)
    }

    /// The boundary before this one (`None` for a subscription's first invoice).
    pub fn previous_boundary(&self) -> Option<DateTime<Utc>> {
        (self.period_start != self.boundary_at).then_some(self.period_start)
    }
}

/// The wire status of a stored one.
pub fn status_to_wire(status: Status) -> InvoiceStatus {
    match status {
        Status::Draft => InvoiceStatus::Draft,
        Status::Finalized => InvoiceStatus::Finalized,
        Status::Paid => InvoiceStatus::Paid,
        Status::Void => InvoiceStatus::Void,
        Status::Uncollectible => InvoiceStatus::Uncollectible,
    }
}

/// The stored status a wire one names (`None` for unset).
pub fn status_from_wire(status: InvoiceStatus) -> Option<Status> {
    match status {
        InvoiceStatus::Unspecified => None,
        InvoiceStatus::Draft => Some(Status::Draft),
        InvoiceStatus::Finalized => Some(Status::Finalized),
        InvoiceStatus::Paid => Some(Status::Paid),
        InvoiceStatus::Void => Some(Status::Void),
        InvoiceStatus::Uncollectible => Some(Status::Uncollectible),
    }
}

fn reason_from_wire(reason: proto::BillingReason) -> Result<BillingReason> {
    Ok(match reason {
        proto::BillingReason::SubscriptionCycle => BillingReason::SubscriptionCycle,
        proto::BillingReason::SubscriptionCreate => BillingReason::SubscriptionCreate,
        proto::BillingReason::SubscriptionUpdate => BillingReason::SubscriptionUpdate,
        proto::BillingReason::SubscriptionEnd => BillingReason::SubscriptionEnd,
        proto::BillingReason::Unspecified => {
            return Err(InvoicingError::Internal(
                "a composition has no billing reason".into(),
            ));
        }
    })
}

fn reason_to_wire(reason: BillingReason) -> proto::BillingReason {
    match reason {
        BillingReason::SubscriptionCycle => proto::BillingReason::SubscriptionCycle,
        BillingReason::SubscriptionCreate => proto::BillingReason::SubscriptionCreate,
        BillingReason::SubscriptionUpdate => proto::BillingReason::SubscriptionUpdate,
        BillingReason::SubscriptionEnd => proto::BillingReason::SubscriptionEnd,
    }
}

const INVOICE_COLUMNS: &str = "id, subscription_id, customer_id, boundary_at, period_start, period_end, status, \
    billing_reason, currency, number, subtotal, credits_applied, total, amount_paid, amount_credited, collection_mode, \
    collection_mode_name, grace_period_ends_at, finalized_at, due_at, paid_at, voided_at, void_reason, version, created_at, updated_at";

/// Loads invoice rows by id, without locking (those missing are left out).
pub async fn load_many(connection: &mut PgConnection, ids: &[&str]) -> Result<Vec<InvoiceRow>> {
    let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoicing.invoices WHERE id = ANY($1)");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(connection)
        .await?)
}

/// Loads an invoice row (`FOR UPDATE` when `lock`).
pub async fn load(connection: &mut PgConnection, id: &str, lock: bool) -> Result<InvoiceRow> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoicing.invoices WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| InvoicingError::NotFound(format!("invoice {id:?} not found")))
}

/// Invoice rows matching a filter (newest period first, then id).
pub async fn list(
    connection: &mut PgConnection,
    customer_id: Option<&str>,
    subscription_id: Option<&str>,
    statuses: &[&str],
    period_start_range: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    before: Option<(DateTime<Utc>, &str)>,
    limit: i64,
) -> Result<Vec<InvoiceRow>> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoicing.invoices \
         WHERE ($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR subscription_id = $2) \
           AND (cardinality($3::text[]) = 0 OR status = ANY($3)) \
           AND ($4::timestamptz IS NULL OR period_start >= $4) AND ($5::timestamptz IS NULL OR period_start < $5) \
           AND ($6::timestamptz IS NULL OR (period_start, id) < ($6, $7)) \
         ORDER BY period_start DESC, id DESC LIMIT $8"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(subscription_id)
        .bind(statuses)
        .bind(period_start_range.map(|(start, _)| start))
        .bind(period_start_range.and_then(|(_, end)| end))
        .bind(before.map(|(start, _)| start))
        .bind(before.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(connection)
        .await?)
}

/// Subtotal of `lines` through the domain invoice (one rounding per line).
pub fn subtotal(
    invoice_id: &str,
    customer_id: &str,
    currency: Currency,
    lines: &[Line],
) -> Result<Money> {
    let mut invoice = DomainInvoice::draft(
        InvoiceId::parse(invoice_id).map_err(InvoicingError::internal)?,
        CustomerId::parse(customer_id).map_err(InvoicingError::internal)?,
        currency,
        LINE_ROUNDING,
    );
    for line in lines {
        invoice
            .add_line(line.domain(currency)?)
            .map_err(InvoicingError::internal)?;
    }
    invoice.subtotal().map_err(InvoicingError::internal)
}

/// Stores a new draft and returns its row and lines; `None` when the boundary already
/// has an invoice (the unique constraint: another replica or an earlier run
/// billed it).
#[allow(clippy::too_many_arguments)]
pub async fn insert_draft(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    subscription_id: &str,
    customer_id: &str,
    currency: Currency,
    composition: &Composition,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<Option<(InvoiceRow, Vec<proto::InvoiceLine>)>> {
    let id = String::from(ids.mint::<InvoiceId>());
    let subtotal = subtotal(&id, customer_id, currency, &composition.lines)?;
    let sql = format!(
        "INSERT INTO invoicing.invoices (id, subscription_id, customer_id, boundary_at, period_start, period_end, status, \
           billing_reason, currency, subtotal, total, grace_period_ends_at, version, created_at, updated_at, refreshed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8, $9, $9, $10, 1, $11, $11, $11) \
         ON CONFLICT (subscription_id, boundary_at) DO NOTHING RETURNING {INVOICE_COLUMNS}"
    );
    let inserted: Option<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .bind(subscription_id)
        .bind(customer_id)
        .bind(composition.boundary)
        .bind(composition.period.start())
        .bind(composition.period.end())
        .bind(reason_from_wire(composition.reason)?.name())
        .bind(currency.code())
        .bind(subtotal.amount())
        .bind(composition.boundary + grace)
        .bind(now)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let lines = lines::insert(connection, ids, &id, currency, 0, &composition.lines).await?;
    Ok(Some((row, lines)))
}

/// What finalizing one draft writes on its row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finalized<'a> {
    pub(crate) invoice_id: &'a str,
    pub(crate) subtotal: Decimal,
    /// Burned credits (positive).
    pub(crate) credits_total: Decimal,
    pub(crate) total: Decimal,
    pub(crate) due_at: DateTime<Utc>,
    /// The customer's.
    pub(crate) collection_mode: CollectionMode,
}

/// Marks the prepared drafts `finalized` with their numbers (one
/// statement), and returns their rows as stored, in the order given.
pub(crate) async fn finalize_all(
    connection: &mut PgConnection,
    sealings: &[Finalized<'_>],
    numbers: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<InvoiceRow>> {
    let ids: Vec<&str> = sealings.iter().map(|s| s.invoice_id).collect();
    let sql = format!(
        "UPDATE invoicing.invoices i SET status = 'finalized', number = f.number, subtotal = f.subtotal, \
           credits_applied = f.credits_applied, total = f.total, finalized_at = $8, due_at = f.due_at, \
           collection_mode = f.collection_mode, collection_mode_name = f.collection_mode_name, \
           version = i.version + 1, updated_at = $8 \
         FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::timestamptz[], $7::int[], \
           $9::text[]) AS f(id, number, subtotal, credits_applied, total, due_at, collection_mode, collection_mode_name) \
         WHERE i.id = f.id RETURNING {}",
        INVOICE_COLUMNS
            .split(", ")
            .map(|column| format!("i.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows: Vec<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&ids)
        .bind(numbers)
        .bind(sealings.iter().map(|s| s.subtotal).collect::<Vec<_>>())
        .bind(
            sealings
                .iter()
                .map(|s| -s.credits_total)
                .collect::<Vec<_>>(),
        )
        .bind(sealings.iter().map(|s| s.total).collect::<Vec<_>>())
        .bind(sealings.iter().map(|s| s.due_at).collect::<Vec<_>>())
        .bind(
            sealings
                .iter()
                .map(|s| collection_mode_to_wire(s.collection_mode) as i32)
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .bind(
            sealings
                .iter()
                .map(|s| s.collection_mode.name())
                .collect::<Vec<_>>(),
        )
        .fetch_all(connection)
        .await?;
    // RETURNING has no order: put the rows back in the order of `sealings`.
    let mut by_id: std::collections::HashMap<String, InvoiceRow> =
        rows.into_iter().map(|row| (row.id.clone(), row)).collect();
    ids.iter()
        .map(|id| {
            by_id
                .remove(*id)
                .ok_or_else(|| InvoicingError::Internal(format!("invoice {id} was not finalized")))
        })
        .collect()
}

/// A billed subscription: (id, billed through, next bill at).
pub type Advanced = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Moves the billed subscriptions forward, in one statement.
pub async fn advance_subscriptions(
    connection: &mut PgConnection,
    advanced: &[Advanced],
) -> Result<()> {
    if advanced.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE invoicing.subscriptions s SET billed_through = a.billed_through, next_bill_at = a.next_bill_at \
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS a(id, billed_through, next_bill_at) \
         WHERE s.id = a.id",
    )
    .bind(advanced.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>())
    .bind(advanced.iter().map(|(_, through, _)| *through).collect::<Vec<_>>())
    .bind(advanced.iter().map(|(_, _, next)| *next).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// Replaces a draft's lines with a new composition.
pub async fn replace_draft_lines(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    invoice: &InvoiceRow,
    composition: &Composition,
    now: DateTime<Utc>,
) -> Result<bool> {
    let currency = invoice.currency()?;
    let existing = lines::wire_lines(&mut *connection, &invoice.id, currency).await?;
    let unchanged = existing.len() == composition.lines.len()
        && existing
            .iter()
            .zip(&composition.lines)
            .all(|(stored, line)| {
                *stored == mapping::line_to_wire(&line.stored(stored.id.clone()), currency)
            });
    sqlx::query("UPDATE invoicing.invoices SET refreshed_at = $2 WHERE id = $1")
        .bind(&invoice.id)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    if unchanged {
        return Ok(false);
    }
    sqlx::query("DELETE FROM invoicing.invoice_lines WHERE invoice_id = $1")
        .bind(&invoice.id)
        .execute(&mut *connection)
        .await?;
    lines::insert(
        &mut *connection,
        ids,
        &invoice.id,
        currency,
        0,
        &composition.lines,
    )
    .await?;
    let subtotal = subtotal(
        &invoice.id,
        &invoice.customer_id,
        currency,
        &composition.lines,
    )?;
    sqlx::query(
        "UPDATE invoicing.invoices SET subtotal = $2, total = $2, version = version + 1, updated_at = $3 WHERE id = $1",
    )
    .bind(&invoice.id)
    .bind(subtotal.amount())
    .bind(now)
    .execute(connection)
    .await?;
    Ok(true)
}

/// The wire invoice (lines included when `with_lines`).
pub async fn to_proto(
    connection: &mut PgConnection,
    row: &InvoiceRow,
    with_lines: bool,
) -> Result<proto::Invoice> {
    let currency = row.currency()?;
    let lines = if with_lines {
        lines::wire_lines(connection, &row.id, currency).await?
    } else {
        Vec::new()
    };
    Ok(proto::Invoice {
        id: row.id.clone(),
        number: row.number.clone().unwrap_or_default(),
        customer_id: row.customer_id.clone(),
        subscription_id: row.subscription_id.clone(),
        status: row.wire_status() as i32,
        billing_reason: reason_to_wire(row.billing_reason) as i32,
        collection_mode: row
            .collection_mode()?
            .map_or(CollectionModeWire::Unspecified, collection_mode_to_wire)
            as i32,
        currency: row.currency.clone(),
        period: Some(time_range(row.period_start, row.period_end)),
        lines,
        subtotal: Some(money(row.subtotal, currency)),
        credits_applied: Some(money(row.credits_applied, currency)),
        total: Some(money(row.total, currency)),
        amount_paid: Some(money(row.amount_paid, currency)),
        amount_credited: Some(money(row.amount_credited, currency)),
        amount_due: Some(money(row.amount_due(), currency)),
        grace_period_ends_at: Some(timestamp(row.grace_period_ends_at)),
        finalized_at: maybe_timestamp(row.finalized_at),
        due_at: maybe_timestamp(row.due_at),
        paid_at: maybe_timestamp(row.paid_at),
        voided_at: maybe_timestamp(row.voided_at),
        void_reason: row.void_reason.clone(),
        version: u64::try_from(row.version).unwrap_or(0),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    })
}

/// The next number of `prefix` (`<prefix>-000042`), from the counter row
/// updated in the caller's transaction: a rollback gives the number back, so
/// numbers have no gaps.
pub async fn next_number(connection: &mut PgConnection, prefix: &str) -> Result<String> {
    let mut numbers = next_numbers(connection, prefix, 1).await?;
    numbers
        .pop()
        .ok_or_else(|| InvoicingError::Internal("no invoice number allocated".into()))
}

/// The next `count` numbers of `prefix`, in order, taken in one statement:
/// the counter row stays locked until the transaction ends, so a bill run
/// numbers a whole batch of invoices at once, just before it commits.
pub async fn next_numbers(
    connection: &mut PgConnection,
    prefix: &str,
    count: usize,
) -> Result<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let count = i64::try_from(count).map_err(InvoicingError::internal)?;
    let (last,): (i64,) = sqlx::query_as(
        "INSERT INTO invoicing.number_counters (prefix, last_number) VALUES ($1, $2) \
         ON CONFLICT (prefix) DO UPDATE SET last_number = invoicing.number_counters.last_number + $2 \
         RETURNING last_number",
    )
    .bind(prefix)
    .bind(count)
    .fetch_one(connection)
    .await?;
    Ok((last - count + 1..=last)
        .map(|number| format!("{prefix}-{number:06}"))
        .collect())
}
