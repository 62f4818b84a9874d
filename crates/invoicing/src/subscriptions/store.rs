//! Subscriptions in PostgreSQL: the row and its phases and pauses (JSON),
//! loading (optionally locked, or claimed `SKIP LOCKED` by a bill run),
//! storing a new version, listing; and what a cancellation reads of the
//! invoice of its boundary.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::{InvoicingError, Result};
use crate::plans::{interval_from_name, interval_name};

use super::model::{Pause, Phase, Policy, Subscription};

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: String,
    customer_id: String,
    currency: String,
    billing_interval: String,
    start_at: DateTime<Utc>,
    billing_anchor_at: DateTime<Utc>,
    trial_end_at: Option<DateTime<Utc>>,
    cancel_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    cancel_reason: String,
    cancel_proration: String,
    past_due: bool,
    version: i64,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    billed_through: Option<DateTime<Utc>>,
    phases: sqlx::types::Json<Vec<PhaseJson>>,
    pauses: sqlx::types::Json<Vec<PauseJson>>,
    terms: Option<serde_json::Value>,
    terms_format: Option<i16>,
}

/// The format of `invoicing.subscriptions.terms` this release writes: the domain's
/// `SubscriptionTermsSpec` as serde writes it.
const TERMS_FORMAT: i16 = 1;

/// The subscription's columns and, in the same statement, its phases and
/// pauses as JSON arrays (one round trip per subscription).
const COLUMNS: &str = "s.id, s.customer_id, s.currency, s.billing_interval, s.start_at, s.billing_anchor_at, \
    s.trial_end_at, s.cancel_at, s.canceled_at, s.cancel_reason, s.cancel_proration, s.past_due, s.version, s.metadata, \
    s.created_at, s.updated_at, s.billed_through, s.terms, s.terms_format, \
    (SELECT coalesce(json_agg(json_build_object('plan_id', p.plan_id, 'plan_version_id', p.plan_version_id, \
       'start_at', p.start_at, 'end_at', p.end_at, 'policy', p.proration_policy) ORDER BY p.phase_index), '[]') \
     FROM invoicing.subscription_phases p WHERE p.subscription_id = s.id) AS phases, \
    (SELECT coalesce(json_agg(json_build_object('pause_at', q.pause_at, 'resume_at', q.resume_at) \
       ORDER BY q.pause_at), '[]') \
     FROM invoicing.subscription_pauses q WHERE q.subscription_id = s.id) AS pauses";

#[derive(serde::Deserialize)]
struct PhaseJson {
    plan_id: String,
    plan_version_id: String,
    start_at: DateTime<Utc>,
    end_at: Option<DateTime<Utc>>,
    policy: String,
}

#[derive(serde::Deserialize)]
struct PauseJson {
    pause_at: DateTime<Utc>,
    resume_at: Option<DateTime<Utc>>,
}

/// Loads a subscription (`FOR UPDATE` when `lock`).
pub async fn load(connection: &mut PgConnection, id: &str, lock: bool) -> Result<Subscription> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invoicing.subscriptions s WHERE s.id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    let row =
        row.ok_or_else(|| InvoicingError::NotFound(format!("subscription {id:?} not found")))?;
    from_row(row)
}

/// Locks the subscriptions of `ids` that no other transaction holds
/// (`FOR UPDATE SKIP LOCKED`: another bill-run replica has the rest) and, with
/// `due_by`, only those with a boundary due by then; by id.
pub async fn claim_many(
    connection: &mut PgConnection,
    ids: &[&str],
    due_by: Option<DateTime<Utc>>,
) -> Result<Vec<Subscription>> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoicing.subscriptions s \
         WHERE s.id = ANY($1) AND ($2::timestamptz IS NULL OR s.next_bill_at <= $2) \
         ORDER BY s.id FOR UPDATE OF s SKIP LOCKED"
    )))
    .bind(ids)
    .bind(due_by)
    .fetch_all(&mut *connection)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Loads many subscriptions at once (unlocked), by id; unknown ids are left out.
pub async fn load_many(
    connection: &mut PgConnection,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, Subscription>> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoicing.subscriptions s WHERE s.id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(&mut *connection)
    .await?;
    rows.into_iter()
        .map(|row| from_row(row).map(|subscription| (subscription.id.clone(), subscription)))
        .collect()
}

fn from_row(row: SubscriptionRow) -> Result<Subscription> {
    let SubscriptionRow {
        id,
        customer_id,
        currency,
        billing_interval: interval,
        start_at,
        billing_anchor_at,
        trial_end_at,
        cancel_at,
        canceled_at,
        cancel_reason,
        cancel_proration,
        past_due,
        version,
        metadata,
        created_at,
        updated_at,
        billed_through,
        phases,
        pauses,
        terms,
        terms_format,
    } = row;
    let terms = match (terms, terms_format) {
        (None, None) => None,
        (Some(terms), Some(TERMS_FORMAT)) => {
            Some(serde_json::from_value(terms).map_err(InvoicingError::internal)?)
        }
        (_, format) => {
            return Err(InvoicingError::internal(format!(
                "subscription {id}: terms in format {format:?}, this release reads {TERMS_FORMAT}"
            )));
        }
    };
    let phases = phases
        .0
        .into_iter()
        .map(|phase| {
            Ok(Phase {
                plan_id: phase.plan_id,
                plan_version_id: phase.plan_version_id,
                start_at: phase.start_at,
                end_at: phase.end_at,
                policy: Policy::from_name(&phase.policy)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pauses: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = pauses
        .0
        .into_iter()
        .map(|pause| (pause.pause_at, pause.resume_at))
        .collect();
    Ok(Subscription {
        id,
        customer_id,
        currency: crate::wire::stored_currency(&currency)?,
        interval: interval_from_name(&interval)?,
        start_at,
        billing_anchor_at,
        trial_end_at,
        cancel_at,
        canceled_at,
        cancel_reason,
        cancel_proration: Policy::from_name(&cancel_proration)?,
        past_due,
        version,
        metadata: serde_json::from_value(metadata).map_err(InvoicingError::internal)?,
        created_at,
        updated_at,
        billed_through,
        phases,
        pauses: pauses
            .into_iter()
            .map(|(pause_at, resume_at)| Pause {
                pause_at,
                resume_at,
            })
            .collect(),
        terms,
    })
}

/// Writes the subscription with its phases and pauses (insert or replace).
pub async fn store(connection: &mut PgConnection, subscription: &Subscription) -> Result<()> {
    let next_bill_at = subscription.next_bill_at()?;
    sqlx::query(
        "INSERT INTO invoicing.subscriptions (id, customer_id, currency, billing_interval, start_at, billing_anchor_at, \
           trial_end_at, cancel_at, canceled_at, cancel_reason, cancel_proration, past_due, version, metadata, \
           created_at, updated_at, billed_through, next_bill_at, terms, terms_format) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT (id) DO UPDATE SET trial_end_at = EXCLUDED.trial_end_at, cancel_at = EXCLUDED.cancel_at, \
           canceled_at = EXCLUDED.canceled_at, cancel_reason = EXCLUDED.cancel_reason, \
           cancel_proration = EXCLUDED.cancel_proration, past_due = EXCLUDED.past_due, version = EXCLUDED.version, \
           metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at, billed_through = EXCLUDED.billed_through, \
           next_bill_at = EXCLUDED.next_bill_at, terms = EXCLUDED.terms, terms_format = EXCLUDED.terms_format",
    )
    .bind(&subscription.id)
    .bind(&subscription.customer_id)
    .bind(subscription.currency.code())
    .bind(interval_name(subscription.interval))
    .bind(subscription.start_at)
    .bind(subscription.billing_anchor_at)
    .bind(subscription.trial_end_at)
    .bind(subscription.cancel_at)
    .bind(subscription.canceled_at)
    .bind(&subscription.cancel_reason)
    .bind(subscription.cancel_proration.name())
    .bind(subscription.past_due)
    .bind(subscription.version)
    .bind(serde_json::to_value(&subscription.metadata).map_err(InvoicingError::internal)?)
    .bind(subscription.created_at)
    .bind(subscription.updated_at)
    .bind(subscription.billed_through)
    .bind(next_bill_at)
    .bind(
        subscription
            .terms
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(InvoicingError::internal)?,
    )
    .bind(subscription.terms.as_ref().map(|_| TERMS_FORMAT))
    .execute(&mut *connection)
    .await?;
    sqlx::query("DELETE FROM invoicing.subscription_phases WHERE subscription_id = $1")
        .bind(&subscription.id)
        .execute(&mut *connection)
        .await?;
    for (index, phase) in subscription.phases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO invoicing.subscription_phases (subscription_id, phase_index, plan_id, plan_version_id, \
               start_at, end_at, proration_policy) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&subscription.id)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .bind(&phase.plan_id)
        .bind(&phase.plan_version_id)
        .bind(phase.start_at)
        .bind(phase.end_at)
        .bind(phase.policy.name())
        .execute(&mut *connection)
        .await?;
    }
    sqlx::query("DELETE FROM invoicing.subscription_pauses WHERE subscription_id = $1")
        .bind(&subscription.id)
        .execute(&mut *connection)
        .await?;
    for pause in &subscription.pauses {
        sqlx::query(
            "INSERT INTO invoicing.subscription_pauses (subscription_id, pause_at, resume_at) VALUES ($1, $2, $3)",
        )
        .bind(&subscription.id)
        .bind(pause.pause_at)
        .bind(pause.resume_at)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Lists subscriptions (newest first) matching the filters.
pub async fn list(
    connection: &mut PgConnection,
    customer_id: Option<&str>,
    plan_id: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Subscription>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invoicing.subscriptions s \
         WHERE ($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR id < $2) \
           AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM invoicing.subscription_phases p \
                WHERE p.subscription_id = s.id AND p.plan_id = $3)) \
         ORDER BY id DESC LIMIT $4"
    );
    let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(before)
        .bind(plan_id)
        .bind(limit)
        .fetch_all(&mut *connection)
        .await?;
    let mut subscriptions = Vec::with_capacity(rows.len());
    for row in rows {
        subscriptions.push(from_row(row)?);
    }
    Ok(subscriptions)
}

/// Locks subscription `id`'s row for the caller's transaction. Lock order
/// everywhere: the subscription, then its invoices.
pub async fn lock(connection: &mut PgConnection, id: &str) -> Result<()> {
    sqlx::query("SELECT id FROM invoicing.subscriptions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The invoice of a subscription's boundary.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct BoundaryInvoice {
    pub id: String,
    pub status: String,
}

/// The invoice of `subscription_id` at `boundary`, locked (`FOR UPDATE`).
pub async fn lock_boundary_invoice(
    connection: &mut PgConnection,
    subscription_id: &str,
    boundary: DateTime<Utc>,
) -> Result<Option<BoundaryInvoice>> {
    Ok(sqlx::query_as(
        "SELECT id, status FROM invoicing.invoices WHERE subscription_id = $1 AND boundary_at = $2 FOR UPDATE",
    )
    .bind(subscription_id)
    .bind(boundary)
    .fetch_optional(connection)
    .await?)
}

/// The positive in-advance lines of `invoice_id` for services from `from`:
/// `(line id, amount)` in line order.
pub async fn in_advance_lines_from(
    connection: &mut PgConnection,
    invoice_id: &str,
    from: DateTime<Utc>,
) -> Result<Vec<(String, rust_decimal::Decimal)>> {
    Ok(sqlx::query_as(
        "SELECT id, amount FROM invoicing.invoice_lines WHERE invoice_id = $1 AND in_advance \
           AND service_start >= $2 AND amount > 0 ORDER BY position",
    )
    .bind(invoice_id)
    .bind(from)
    .fetch_all(connection)
    .await?)
}
