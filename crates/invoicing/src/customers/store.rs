//! `invoicing.customers`: each customer as invoicing's model (the `document`
//! column, JSON of [`Customer`]) with the columns it is looked up and listed
//! by, and what decides whether its currency may change or it may be
//! archived. A row written before `20261207800000_invoicing_own_model.sql`
//! (or by a pod of the previous release during a rolling upgrade) has only
//! the protobuf `snapshot`: it is read through the mapping until `tally
//! migrate` converts it (`crate::upgrade`). This release still writes the
//! snapshot beside the document, so the previous release reads every row
//! after a rollback (expand/contract; the next release stops).

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tally_proto::invoicing as wire;

pub mod billing_modes;

use super::mapping;
use super::model::Customer;
use crate::error::{InvoicingError, Result};

/// A stored customer in either format.
#[derive(Debug, sqlx::FromRow)]
struct CustomerRow {
    id: String,
    document: Option<Json<Customer>>,
    snapshot: Option<Vec<u8>>,
}

impl CustomerRow {
    fn into_model(self) -> Result<Customer> {
        match (self.document, self.snapshot) {
            (Some(Json(customer)), _) => Ok(customer),
            (None, Some(bytes)) => legacy(&bytes),
            (None, None) => Err(InvoicingError::Internal(format!(
                "customer {} has neither a document nor a snapshot",
                self.id
            ))),
        }
    }
}

/// The protobuf snapshot the previous release reads.
fn snapshot_of(customer: &Customer) -> Vec<u8> {
    mapping::to_wire(customer).encode_to_vec()
}

/// The model of a protobuf snapshot stored by an earlier release.
pub fn legacy(bytes: &[u8]) -> Result<Customer> {
    let customer = wire::Customer::decode(bytes).map_err(InvoicingError::internal)?;
    mapping::from_wire(&customer)
}

/// How a customer is looked up.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// By `cus_…`.
    Id(&'a str),
    /// By the platform's external id.
    ExternalId(&'a str),
}

/// Customer `id` (`FOR UPDATE` when `lock`).
pub async fn get(connection: &mut PgConnection, id: &str, lock: bool) -> Result<Option<Customer>> {
    let sql = if lock {
        "SELECT id, document, snapshot FROM invoicing.customers WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT id, document, snapshot FROM invoicing.customers WHERE id = $1"
    };
    let row: Option<CustomerRow> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(connection)
        .await?;
    row.map(CustomerRow::into_model).transpose()
}

/// The customer `lookup` names, outside a transaction.
pub async fn get_by(pool: &PgPool, lookup: Lookup<'_>) -> Result<Option<Customer>> {
    let (sql, value) = match lookup {
        Lookup::Id(id) => (
            "SELECT id, document, snapshot FROM invoicing.customers WHERE id = $1",
            id,
        ),
        Lookup::ExternalId(id) => (
            "SELECT id, document, snapshot FROM invoicing.customers WHERE external_id = $1",
            id,
        ),
    };
    let row: Option<CustomerRow> = sqlx::query_as(sql).bind(value).fetch_optional(pool).await?;
    row.map(CustomerRow::into_model).transpose()
}

/// The customers of `ids` that exist (unlocked).
pub async fn many(connection: &mut PgConnection, ids: &[&str]) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> =
        sqlx::query_as("SELECT id, document, snapshot FROM invoicing.customers WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(connection)
            .await?;
    rows.into_iter().map(CustomerRow::into_model).collect()
}

/// Locks `external_id` for the rest of the caller's transaction (two
/// creations with the same external id run one after the other).
pub async fn lock_external_id(connection: &mut PgConnection, external_id: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 11))")
        .bind(external_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The customer with `external_id`, in the caller's transaction.
pub async fn get_by_external_id(
    connection: &mut PgConnection,
    external_id: &str,
) -> Result<Option<Customer>> {
    let row: Option<CustomerRow> = sqlx::query_as(
        "SELECT id, document, snapshot FROM invoicing.customers WHERE external_id = $1",
    )
    .bind(external_id)
    .fetch_optional(connection)
    .await?;
    row.map(CustomerRow::into_model).transpose()
}

/// Stores a new customer.
pub async fn insert(connection: &mut PgConnection, customer: &Customer) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoicing.customers (id, external_id, currency, status, request_hash, document, snapshot, \
           created_at, updated_at) \
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8)",
    )
    .bind(&customer.id)
    .bind(&customer.external_id)
    .bind(customer.currency.code())
    .bind(customer.status.name())
    .bind(Json(customer))
    .bind(snapshot_of(customer))
    .bind(customer.created_at)
    .bind(customer.updated_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Replaces a stored customer (its document, its snapshot and the columns
/// read from it).
pub async fn update(connection: &mut PgConnection, customer: &Customer) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.customers SET currency = $2, status = $3, document = $4, snapshot = $5, updated_at = $6 \
         WHERE id = $1",
    )
    .bind(&customer.id)
    .bind(customer.currency.code())
    .bind(customer.status.name())
    .bind(Json(customer))
    .bind(snapshot_of(customer))
    .bind(customer.updated_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Up to `limit` customers still stored only as a protobuf snapshot, locked
/// (`SKIP LOCKED`: a customer being changed is converted by the change).
pub async fn legacy_batch(connection: &mut PgConnection, limit: i64) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT id, document, snapshot FROM invoicing.customers WHERE document IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(connection)
    .await?;
    rows.into_iter().map(CustomerRow::into_model).collect()
}

/// Writes converted customers' documents (their snapshots stay, for the
/// previous release).
pub async fn set_documents(connection: &mut PgConnection, customers: &[Customer]) -> Result<()> {
    sqlx::query(
        "UPDATE invoicing.customers c SET document = d.document \
         FROM unnest($1::text[], $2::jsonb[]) AS d(id, document) WHERE c.id = d.id",
    )
    .bind(
        customers
            .iter()
            .map(|customer| customer.id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(customers.iter().map(Json).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// The stored currency of customer `id` (which must exist).
pub async fn currency(connection: &mut PgConnection, id: &str) -> Result<String> {
    let (currency,): (String,) =
        sqlx::query_as("SELECT currency FROM invoicing.customers WHERE id = $1")
            .bind(id)
            .fetch_one(connection)
            .await?;
    Ok(currency)
}

/// Whether customer `id` has a subscription or a credit grant (its
/// currency can then no longer change).
pub async fn has_subscriptions_or_credits(connection: &mut PgConnection, id: &str) -> Result<bool> {
    let (used,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM invoicing.subscriptions WHERE customer_id = $1) \
             OR EXISTS (SELECT 1 FROM invoicing.credit_grants WHERE customer_id = $1)",
    )
    .bind(id)
    .fetch_one(connection)
    .await?;
    Ok(used)
}

/// Up to `limit` customers (with `status` when given) with an id after
/// `after`, by id.
pub async fn page(
    pool: &PgPool,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT id, document, snapshot FROM invoicing.customers \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2) \
         ORDER BY id LIMIT $3",
    )
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(CustomerRow::into_model).collect()
}

/// The ids of customer `id`'s subscriptions not canceled by `now`, by id.
pub async fn live_subscription_ids(
    connection: &mut PgConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM invoicing.subscriptions WHERE customer_id = $1 AND (cancel_at IS NULL OR cancel_at > $2) ORDER BY id",
    )
    .bind(id)
    .bind(now)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
