//! The SQL of migrations: `connectors.billing_systems`,
//! `connectors.parity_reports` / `parity_findings` and `connectors.orb_prices`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::model::{
    BillingPeriod, BillingSystem, BillingSystemState, Finding, ParityReport, PeriodOutcome,
};
use crate::error::ConnectorsError;

type SystemRow = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn system(row: SystemRow) -> Result<BillingSystem, ConnectorsError> {
    let (customer_id, biller, state, cutover_at, version, created_at, updated_at) = row;
    let state = BillingSystemState::parse(&state).ok_or_else(|| {
        ConnectorsError::Internal(format!("unknown billing system state {state:?}"))
    })?;
    Ok(BillingSystem {
        customer_id,
        biller,
        state,
        cutover_at,
        version,
        created_at,
        updated_at,
    })
}

/// The customer's record, locked `FOR UPDATE` when `lock`.
pub(crate) async fn load(
    connection: &mut PgConnection,
    customer_id: &str,
    lock: bool,
) -> Result<Option<BillingSystem>, ConnectorsError> {
    let sql = if lock {
        "SELECT customer_id, biller, state, cutover_at, version, created_at, updated_at \
         FROM connectors.billing_systems WHERE customer_id = $1 FOR UPDATE"
    } else {
        "SELECT customer_id, biller, state, cutover_at, version, created_at, updated_at \
         FROM connectors.billing_systems WHERE customer_id = $1"
    };
    let row: Option<SystemRow> = sqlx::query_as(sql)
        .bind(customer_id)
        .fetch_optional(connection)
        .await?;
    row.map(system).transpose()
}

/// Inserts or replaces the customer's record.
pub(crate) async fn save(
    connection: &mut PgConnection,
    record: &BillingSystem,
) -> Result<(), ConnectorsError> {
    sqlx::query(
        "INSERT INTO connectors.billing_systems \
           (customer_id, biller, state, cutover_at, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (customer_id) DO UPDATE SET biller = EXCLUDED.biller, state = EXCLUDED.state, \
           cutover_at = EXCLUDED.cutover_at, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
    )
    .bind(&record.customer_id)
    .bind(&record.biller)
    .bind(record.state.as_str())
    .bind(record.cutover_at)
    .bind(record.version)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// The outcome of every period compared for the customer.
pub(crate) async fn outcomes(
    connection: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<PeriodOutcome>, ConnectorsError> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT period_start, period_end, matched FROM connectors.parity_reports \
         WHERE customer_id = $1 ORDER BY period_end DESC",
    )
    .bind(customer_id)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start, end, matched)| PeriodOutcome {
            start,
            end,
            matched,
        })
        .collect())
}

/// Stores `report`, replacing the period's earlier report.
pub(crate) async fn save_report(
    connection: &mut PgConnection,
    report: &ParityReport,
) -> Result<(), ConnectorsError> {
    sqlx::query(
        "DELETE FROM connectors.parity_reports WHERE customer_id = $1 AND period_start = $2",
    )
    .bind(&report.customer_id)
    .bind(report.period.start)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO connectors.parity_reports (customer_id, period_start, period_end, biller, \
           tally_invoice_id, external_invoice_id, currency, matched, lines_not_compared, compared_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&report.customer_id)
    .bind(report.period.start)
    .bind(report.period.end)
    .bind(&report.biller)
    .bind(&report.tally_invoice_id)
    .bind(&report.external_invoice_id)
    .bind(&report.currency)
    .bind(report.matched)
    .bind(i32::try_from(report.lines_not_compared).unwrap_or(i32::MAX))
    .bind(report.compared_at)
    .execute(&mut *connection)
    .await?;
    let positions: Vec<i32> = (0..report.findings.len())
        .map(|position| i32::try_from(position).unwrap_or(i32::MAX))
        .collect();
    let subjects: Vec<&str> = report.findings.iter().map(|f| f.subject.as_str()).collect();
    let tally: Vec<Option<Decimal>> = report.findings.iter().map(|f| f.tally_amount).collect();
    let external: Vec<Option<Decimal>> =
        report.findings.iter().map(|f| f.external_amount).collect();
    let differences: Vec<Option<Decimal>> = report.findings.iter().map(|f| f.difference).collect();
    let matches: Vec<bool> = report.findings.iter().map(|f| f.matches).collect();
    let notes: Vec<&str> = report.findings.iter().map(|f| f.note.as_str()).collect();
    sqlx::query(
        "INSERT INTO connectors.parity_findings (customer_id, period_start, position, subject, \
           tally_amount, external_amount, difference, matches, note) \
         SELECT $1, $2, * FROM unnest($3::int[], $4::text[], $5::numeric[], $6::numeric[], \
           $7::numeric[], $8::bool[], $9::text[])",
    )
    .bind(&report.customer_id)
    .bind(report.period.start)
    .bind(&positions)
    .bind(&subjects)
    .bind(&tally)
    .bind(&external)
    .bind(&differences)
    .bind(&matches)
    .bind(&notes)
    .execute(connection)
    .await?;
    Ok(())
}

type ReportRow = (
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    bool,
    i32,
    DateTime<Utc>,
);

type FindingRow = (
    DateTime<Utc>,
    String,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
    bool,
    String,
);

/// The customer's reports, newest period first, with their findings.
pub(crate) async fn reports(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Vec<ParityReport>, ConnectorsError> {
    let rows: Vec<ReportRow> = sqlx::query_as(
        "SELECT customer_id, period_start, period_end, biller, tally_invoice_id, \
           external_invoice_id, currency, matched, lines_not_compared, compared_at \
         FROM connectors.parity_reports WHERE customer_id = $1 ORDER BY period_start DESC",
    )
    .bind(customer_id)
    .fetch_all(pool)
    .await?;
    let findings: Vec<FindingRow> = sqlx::query_as(
        "SELECT period_start, subject, tally_amount, external_amount, difference, matches, note \
         FROM connectors.parity_findings WHERE customer_id = $1 ORDER BY period_start, position",
    )
    .bind(customer_id)
    .fetch_all(pool)
    .await?;
    let mut by_period: BTreeMap<DateTime<Utc>, Vec<Finding>> = BTreeMap::new();
    for (start, subject, tally_amount, external_amount, difference, matches, note) in findings {
        by_period.entry(start).or_default().push(Finding {
            subject,
            tally_amount,
            external_amount,
            difference,
            matches,
            note,
        });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let (customer_id, start, end, biller, tally_id, external_id, currency, matched) =
                (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
            ParityReport {
                customer_id,
                period: BillingPeriod { start, end },
                biller,
                tally_invoice_id: tally_id,
                external_invoice_id: external_id,
                currency,
                matched,
                lines_not_compared: u32::try_from(row.8).unwrap_or(0),
                findings: by_period.remove(&start).unwrap_or_default(),
                compared_at: row.9,
            }
        })
        .collect())
}

/// Orb price id → Tally charge key.
pub(crate) async fn orb_prices(pool: &PgPool) -> Result<BTreeMap<String, String>, ConnectorsError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT orb_price_id, charge_key FROM connectors.orb_prices")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Maps an Orb price to a Tally charge key (replacing an earlier mapping).
pub(crate) async fn map_orb_price(
    pool: &PgPool,
    orb_price_id: &str,
    charge_key: &str,
    now: DateTime<Utc>,
) -> Result<(), ConnectorsError> {
    sqlx::query(
        "INSERT INTO connectors.orb_prices (orb_price_id, charge_key, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (orb_price_id) DO UPDATE SET charge_key = EXCLUDED.charge_key",
    )
    .bind(orb_price_id)
    .bind(charge_key)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// The Orb external customer id the customer is mapped to.
pub(crate) async fn orb_external_id(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Option<String>, ConnectorsError> {
    Ok(sqlx::query_scalar(
        "SELECT external_customer_id FROM connectors.orb_customers WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(pool)
    .await?)
}
