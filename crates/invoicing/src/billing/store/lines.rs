//! `invoicing.invoice_lines`: each line as explicit columns plus its
//! explanation (JSON of [`Explanation`]). A line stored before
//! `20261207800000_invoicing_own_model.sql` (or by a pod of the previous
//! release during a rolling upgrade) has only its protobuf `detail`: it is
//! read through the mapping until `tally migrate` converts it
//! (`crate::upgrade`). This release still writes `detail` beside the
//! columns, so the previous release reads every line after a rollback
//! (expand/contract; the next release stops).

use chrono::{DateTime, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_domain::ids::InvoiceLineId;
use tally_domain::money::Currency;
use tally_proto::invoicing as proto;

use crate::billing::lines::Line;
use crate::billing::mapping::{self, line_to_wire};
use crate::billing::model::{Explanation, LineKind, StoredLine};
use crate::error::{InvoicingError, Result};

/// A stored line in either format (`quantity` is NULL only on old rows).
#[derive(Debug, sqlx::FromRow)]
struct LineRow {
    id: String,
    kind: LineKind,
    description: Option<String>,
    service_start: DateTime<Utc>,
    service_end: DateTime<Utc>,
    quantity: Option<Decimal>,
    unit_price: Option<Decimal>,
    precise_amount: Option<Decimal>,
    amount: Decimal,
    explanation: Option<Json<Explanation>>,
    detail: Option<Vec<u8>>,
}

impl LineRow {
    fn into_model(self) -> Result<StoredLine> {
        let (Some(quantity), Some(precise_amount)) = (self.quantity, self.precise_amount) else {
            let bytes = self.detail.ok_or_else(|| {
                InvoicingError::Internal(format!("line {} has no stored form", self.id))
            })?;
            return legacy(&bytes);
        };
        Ok(StoredLine {
            id: self.id,
            kind: self.kind,
            description: self.description.unwrap_or_default(),
            service_start: self.service_start,
            service_end: self.service_end,
            quantity,
            unit_price: self.unit_price,
            precise_amount,
            amount: self.amount,
            explanation: self.explanation.map(|Json(explanation)| explanation),
        })
    }
}

/// The model of a protobuf line stored by an earlier release.
pub fn legacy(bytes: &[u8]) -> Result<StoredLine> {
    let line = proto::InvoiceLine::decode(bytes).map_err(InvoicingError::internal)?;
    mapping::line_from_wire(&line)
}

const LINE_COLUMNS: &str = "id, kind, description, service_start, service_end, quantity, unit_price, \
    precise_amount, amount, explanation, detail";

/// The stored lines of an invoice, in order.
pub async fn stored(connection: &mut PgConnection, invoice_id: &str) -> Result<Vec<StoredLine>> {
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM invoicing.invoice_lines WHERE invoice_id = $1 ORDER BY position"
    );
    let rows: Vec<LineRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(invoice_id)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(LineRow::into_model).collect()
}

/// The stored lines of an invoice in `currency`, in order, as wire lines.
pub async fn wire_lines(
    connection: &mut PgConnection,
    invoice_id: &str,
    currency: Currency,
) -> Result<Vec<proto::InvoiceLine>> {
    Ok(stored(connection, invoice_id)
        .await?
        .iter()
        .map(|line| line_to_wire(line, currency))
        .collect())
}

/// Appends `lines` to an invoice from `position` on, with fresh ids.
pub async fn insert(
    connection: &mut PgConnection,
    ids: &dyn tally_runtime::ids::IdGenerator,
    invoice_id: &str,
    currency: Currency,
    first_position: i32,
    lines: &[Line],
) -> Result<Vec<proto::InvoiceLine>> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    // One statement for all lines of the invoice (a bill run writes
    // hundreds of thousands of lines: a round trip each would dominate it).
    let mut columns = LineColumns::default();
    let mut stored = Vec::with_capacity(lines.len());
    for (offset, line) in lines.iter().enumerate() {
        let id = String::from(ids.mint::<InvoiceLineId>());
        let wire = line_to_wire(&line.stored(id.clone()), currency);
        let explanation = line
            .explanation
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(InvoicingError::internal)?;
        columns.id.push(id);
        columns
            .position
            .push(first_position + i32::try_from(offset).unwrap_or(i32::MAX));
        columns.kind.push(line.kind.name());
        columns.description.push(line.description.clone());
        columns.plan_version_id.push(line.plan_version_id.clone());
        columns.charge_key.push(line.charge_key.clone());
        columns.in_advance.push(line.in_advance);
        columns.service_start.push(line.service.start());
        columns.service_end.push(line.service.end());
        columns.quantity.push(line.quantity);
        columns.unit_price.push(line.unit_price);
        columns.precise_amount.push(line.precise);
        columns.amount.push(line.amount);
        columns.usage_period_start.push(line.usage_period_start);
        columns
            .original_invoice_id
            .push(line.original_invoice_id.clone());
        columns.explanation.push(explanation);
        columns.detail.push(wire.encode_to_vec());
        stored.push(wire);
    }
    sqlx::query(
        "INSERT INTO invoicing.invoice_lines (id, invoice_id, position, kind, description, plan_version_id, charge_key, \
           in_advance, service_start, service_end, quantity, unit_price, precise_amount, amount, usage_period_start, \
           original_invoice_id, explanation, detail) \
         SELECT id, $2, position, kind, description, plan_version_id, charge_key, in_advance, service_start, service_end, \
           quantity, unit_price, precise_amount, amount, usage_period_start, original_invoice_id, explanation::jsonb, detail \
         FROM unnest($1::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], \
           $9::timestamptz[], $10::timestamptz[], $11::numeric[], $12::numeric[], $13::numeric[], $14::numeric[], \
           $15::timestamptz[], $16::text[], $17::text[], $18::bytea[]) \
           AS line(id, position, kind, description, plan_version_id, charge_key, in_advance, service_start, service_end, \
             quantity, unit_price, precise_amount, amount, usage_period_start, original_invoice_id, explanation, detail)",
    )
    .bind(&columns.id)
    .bind(invoice_id)
    .bind(&columns.position)
    .bind(&columns.kind)
    .bind(&columns.description)
    .bind(&columns.plan_version_id)
    .bind(&columns.charge_key)
    .bind(&columns.in_advance)
    .bind(&columns.service_start)
    .bind(&columns.service_end)
    .bind(&columns.quantity)
    .bind(&columns.unit_price)
    .bind(&columns.precise_amount)
    .bind(&columns.amount)
    .bind(&columns.usage_period_start)
    .bind(&columns.original_invoice_id)
    .bind(&columns.explanation)
    .bind(&columns.detail)
    .execute(&mut *connection)
    .await?;
    Ok(stored)
}

/// The lines of one `insert` call, column by column (for `unnest`).
#[derive(Default)]
struct LineColumns {
    id: Vec<String>,
    position: Vec<i32>,
    kind: Vec<&'static str>,
    description: Vec<String>,
    plan_version_id: Vec<String>,
    charge_key: Vec<String>,
    in_advance: Vec<bool>,
    service_start: Vec<DateTime<Utc>>,
    service_end: Vec<DateTime<Utc>>,
    quantity: Vec<Decimal>,
    unit_price: Vec<Option<Decimal>>,
    precise_amount: Vec<Decimal>,
    amount: Vec<Decimal>,
    usage_period_start: Vec<Option<DateTime<Utc>>>,
    original_invoice_id: Vec<Option<String>>,
    explanation: Vec<Option<String>>,
    /// The protobuf line the previous release reads.
    detail: Vec<Vec<u8>>,
}

/// Up to `limit` lines still stored only as protobuf, oldest invoice first.
pub async fn legacy_batch(connection: &mut PgConnection, limit: i64) -> Result<Vec<StoredLine>> {
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM invoicing.invoice_lines WHERE quantity IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    let rows: Vec<LineRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(LineRow::into_model).collect()
}

/// Writes converted lines' columns and explanations (their protobuf stays,
/// for the previous release). Only the columns that had no value are
/// written: what a line billed (kind, period, amount) is the row's already,
/// and the database's immutability trigger lets exactly this conversion
/// through.
pub async fn set_converted(connection: &mut PgConnection, lines: &[StoredLine]) -> Result<()> {
    let explanations = lines
        .iter()
        .map(|line| {
            line.explanation
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(InvoicingError::internal)?;
    sqlx::query(
        "UPDATE invoicing.invoice_lines l SET description = c.description, quantity = c.quantity, \
           unit_price = c.unit_price, precise_amount = c.precise_amount, explanation = c.explanation::jsonb \
         FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::text[]) \
           AS c(id, description, quantity, unit_price, precise_amount, explanation) \
         WHERE l.id = c.id",
    )
    .bind(lines.iter().map(|line| line.id.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|line| line.description.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|line| line.quantity).collect::<Vec<_>>())
    .bind(lines.iter().map(|line| line.unit_price).collect::<Vec<_>>())
    .bind(lines.iter().map(|line| line.precise_amount).collect::<Vec<_>>())
    .bind(&explanations)
    .execute(connection)
    .await?;
    Ok(())
}
