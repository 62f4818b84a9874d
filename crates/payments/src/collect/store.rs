//! What collecting an invoice reads and writes: the mirrored invoice
//! (`payments.invoices`), its Stripe items, the Stripe customer, and whether
//! an `invoice-events` message was applied.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::error::PaymentsError;

/// The mirrored invoice's version, status and Stripe invoice.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceState {
    pub version: i64,
    pub status: String,
    pub stripe_invoice_id: Option<String>,
}

/// Invoice `invoice_id`'s state, locked (`FOR UPDATE`), if mirrored.
pub async fn lock_invoice_state(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<Option<InvoiceState>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT version, status, stripe_invoice_id FROM payments.invoices WHERE invoice_id = $1 FOR UPDATE",
    )
    .bind(invoice_id)
    .fetch_optional(connection)
    .await?)
}

/// Invoice `invoice_id`'s state (unlocked), if mirrored.
pub async fn invoice_state(
    pool: &PgPool,
    invoice_id: &str,
) -> Result<Option<InvoiceState>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT version, status, stripe_invoice_id FROM payments.invoices WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .fetch_optional(pool)
    .await?)
}

/// A finalized invoice as payments first stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewInvoice<'a> {
    pub invoice_id: &'a str,
    pub customer_id: &'a str,
    pub currency: &'a str,
    pub amount_due: Decimal,
    /// `charge_automatically` or `send_invoice`.
    pub collection_mode: &'a str,
    pub net_terms_days: i32,
    pub version: i64,
    /// `nothing_due` or `syncing`.
    pub status: &'a str,
    /// The encoded invoicing `Invoice`.
    pub snapshot: &'a [u8],
}

/// Stores a finalized invoice created at `now`.
pub async fn insert_invoice(
    connection: &mut PgConnection,
    invoice: NewInvoice<'_>,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.invoices (invoice_id, customer_id, currency, amount_due, collection_mode, \
         net_terms_days, version, status, snapshot, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
    )
    .bind(invoice.invoice_id)
    .bind(invoice.customer_id)
    .bind(invoice.currency)
    .bind(invoice.amount_due)
    .bind(invoice.collection_mode)
    .bind(invoice.net_terms_days)
    .bind(invoice.version)
    .bind(invoice.status)
    .bind(invoice.snapshot)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Marks invoice `invoice_id` as failed to mirror to Stripe.
pub async fn mark_sync_failed(
    connection: &mut PgConnection,
    invoice_id: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.invoices SET status = 'sync_failed', sync_error = $2, updated_at = $3 WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .bind(error)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Marks invoice `invoice_id` void as of `version`.
pub async fn mark_void(
    connection: &mut PgConnection,
    invoice_id: &str,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.invoices SET status = 'void', version = $2, updated_at = $3 WHERE invoice_id = $1",
    )
    .bind(invoice_id)
    .bind(version)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Names the Stripe invoice of invoice `invoice_id` on the invoice and its
/// payment.
pub async fn set_stripe_invoice(
    connection: &mut PgConnection,
    invoice_id: &str,
    stripe_invoice_id: &str,
) -> Result<(), PaymentsError> {
    sqlx::query("UPDATE payments.invoices SET stripe_invoice_id = $2 WHERE invoice_id = $1")
        .bind(invoice_id)
        .bind(stripe_invoice_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("UPDATE payments.payments SET stripe_invoice_id = $2 WHERE invoice_id = $1")
        .bind(invoice_id)
        .bind(stripe_invoice_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The invoice lines of `invoice_id` already created as Stripe items.
pub async fn created_item_lines(
    pool: &PgPool,
    invoice_id: &str,
) -> Result<Vec<String>, PaymentsError> {
    Ok(
        sqlx::query_scalar("SELECT line_id FROM payments.invoice_items WHERE invoice_id = $1")
            .bind(invoice_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Records the Stripe item of line `line_id` (nothing when recorded).
pub async fn insert_item(
    pool: &PgPool,
    line_id: &str,
    invoice_id: &str,
    stripe_invoice_item_id: &str,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.invoice_items (line_id, invoice_id, stripe_invoice_item_id) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(line_id)
    .bind(invoice_id)
    .bind(stripe_invoice_item_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves invoice `invoice_id` from `syncing` to `status`; `true` when it
/// moved (`false`: it had left `syncing` already).
pub async fn finish_sync(
    connection: &mut PgConnection,
    invoice_id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<bool, PaymentsError> {
    let moved = sqlx::query("UPDATE payments.invoices SET status = $2, updated_at = $3 WHERE invoice_id = $1 AND status = 'syncing'")
        .bind(invoice_id)
        .bind(status)
        .bind(now)
        .execute(connection)
        .await?;
    Ok(moved.rows_affected() == 1)
}

/// A Tally customer's Stripe customer and the hash of the details synced.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StripeCustomer {
    pub stripe_customer_id: String,
    pub synced_hash: String,
}

/// The Stripe customer of Tally customer `customer_id`, if mapped.
pub async fn stripe_customer(
    pool: &PgPool,
    customer_id: &str,
) -> Result<Option<StripeCustomer>, PaymentsError> {
    Ok(sqlx::query_as(
        "SELECT stripe_customer_id, synced_hash FROM payments.stripe_customers WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(pool)
    .await?)
}

/// Records that `customer_id`'s details with `hash` were synced at `now`.
pub async fn record_customer_sync(
    pool: &PgPool,
    customer_id: &str,
    hash: &str,
    now: DateTime<Utc>,
    has_default_payment_method: bool,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE payments.stripe_customers SET synced_hash = $2, synced_at = $3, \
         has_default_payment_method = $4 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(hash)
    .bind(now)
    .bind(has_default_payment_method)
    .execute(pool)
    .await?;
    Ok(())
}

/// A Stripe customer just created for a Tally customer.
#[derive(Debug, Clone, Copy)]
pub struct NewStripeCustomer<'a> {
    pub customer_id: &'a str,
    pub stripe_customer_id: &'a str,
    pub livemode: bool,
    pub has_default_payment_method: bool,
    pub synced_hash: &'a str,
}

/// Maps a Tally customer to its new Stripe customer (nothing when mapped
/// already), then returns the Stripe customer it is mapped to.
pub async fn insert_stripe_customer(
    pool: &PgPool,
    customer: NewStripeCustomer<'_>,
    now: DateTime<Utc>,
) -> Result<String, PaymentsError> {
    sqlx::query(
        "INSERT INTO payments.stripe_customers (customer_id, stripe_customer_id, livemode, \
         has_default_payment_method, synced_hash, created_at, synced_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer.customer_id)
    .bind(customer.stripe_customer_id)
    .bind(customer.livemode)
    .bind(customer.has_default_payment_method)
    .bind(customer.synced_hash)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT stripe_customer_id FROM payments.stripe_customers WHERE customer_id = $1",
    )
    .bind(customer.customer_id)
    .fetch_one(pool)
    .await?)
}

/// Whether `subscription` applied message `message_id`.
pub async fn inbox_has(
    pool: &PgPool,
    subscription: &str,
    message_id: &str,
) -> Result<bool, PaymentsError> {
    let applied: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM payments.inbox WHERE subscription = $1 AND message_id = $2",
    )
    .bind(subscription)
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    Ok(applied.is_some())
}
