//! What `PaymentService` lists and looks up: payment pages and the Stripe
//! customer mapping.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::PaymentsError;

/// Filters of a payment page (empty: all).
#[derive(Debug, Clone, Copy)]
pub struct PaymentFilter<'a> {
    pub customer_id: &'a str,
    pub invoice_id: &'a str,
    pub statuses: &'a [String],
}

/// Up to `limit` payment ids of `filter` before `before` (all when
/// empty), newest first (ids sort by creation time).
pub async fn payment_ids_page(
    connection: &mut PgConnection,
    filter: PaymentFilter<'_>,
    before: &str,
    limit: i64,
) -> Result<Vec<String>, PaymentsError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM payments.payments WHERE ($1 = '' OR customer_id = $1) AND ($2 = '' OR invoice_id = $2) \
         AND (cardinality($3::text[]) = 0 OR status = ANY($3)) AND ($4 = '' OR id < $4) \
         ORDER BY id DESC LIMIT $5",
    )
    .bind(filter.customer_id)
    .bind(filter.invoice_id)
    .bind(filter.statuses)
    .bind(before)
    .bind(limit)
    .fetch_all(connection)
    .await?)
}

/// How a Stripe customer mapping is looked up.
#[derive(Debug, Clone, Copy)]
pub enum CustomerLookup<'a> {
    /// By Tally customer.
    CustomerId(&'a str),
    /// By Stripe customer.
    StripeCustomerId(&'a str),
}

/// A Tally customer's Stripe customer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StripeCustomerRow {
    pub customer_id: String,
    pub stripe_customer_id: String,
    pub has_default_payment_method: bool,
    pub livemode: bool,
    pub created_at: DateTime<Utc>,
    pub synced_at: DateTime<Utc>,
}

/// The mapping `lookup` names, if any.
pub async fn stripe_customer(
    pool: &PgPool,
    lookup: CustomerLookup<'_>,
) -> Result<Option<StripeCustomerRow>, PaymentsError> {
    let (column, value) = match lookup {
        CustomerLookup::CustomerId(id) => ("customer_id", id),
        CustomerLookup::StripeCustomerId(id) => ("stripe_customer_id", id),
    };
    let sql = format!(
        "SELECT customer_id, stripe_customer_id, has_default_payment_method, livemode, created_at, synced_at \
         FROM payments.stripe_customers WHERE {column} = $1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_optional(pool)
        .await?)
}
