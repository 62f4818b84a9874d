//! Quotes in PostgreSQL (`invoicing.quotes`): insert a revision, load one (optionally
//! locked), list, move its status, number a chain, and read the current term of a
//! subscription (the `ends_at` of the last quote accepted for it).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tally_domain::quote::{QuotePreview, QuoteStatus};
use tally_domain::terms::SubscriptionTermsSpec;

use crate::error::{InvoicingError, Result};
use crate::wire::stored_currency;

use super::model::{NewCustomer, Offer, Party, Quote, Signature, status_from_name};

#[derive(sqlx::FromRow)]
struct QuoteRow {
    id: String,
    chain_id: String,
    revision: i32,
    from_quote_id: Option<String>,
    number: Option<String>,
    status: String,
    customer_id: Option<String>,
    new_customer: Option<Json<NewCustomer>>,
    amends_subscription_id: Option<String>,
    plan_version_id: String,
    currency: String,
    terms: Json<SubscriptionTermsSpec>,
    starts_at: DateTime<Utc>,
    term_months: i32,
    ends_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    preview: Json<QuotePreview>,
    memo: String,
    status_reason: String,
    signed_by: Option<String>,
    signed_at: Option<DateTime<Utc>>,
    document_sha256: Option<String>,
    accepted_customer_id: Option<String>,
    subscription_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finalized_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, chain_id, revision, from_quote_id, number, status, customer_id, \
    new_customer, amends_subscription_id, plan_version_id, currency, terms, starts_at, \
    term_months, ends_at, expires_at, preview, memo, status_reason, signed_by, signed_at, \
    document_sha256, accepted_customer_id, subscription_id, created_at, updated_at, \
    finalized_at, accepted_at";

fn from_row(row: QuoteRow) -> Result<Quote> {
    let party = match (row.customer_id, row.new_customer) {
        (Some(id), None) => Party::Customer(id),
        (None, Some(Json(customer))) => Party::New(customer),
        _ => {
            return Err(InvoicingError::internal(format!(
                "quote {} names both or neither of a customer and a new customer",
                row.id
            )));
        }
    };
    let signature = match (row.signed_by, row.signed_at) {
        (Some(signed_by), Some(signed_at)) => Some(Signature {
            signed_by,
            signed_at,
            document_sha256: row.document_sha256,
        }),
        _ => None,
    };
    let count = |value: i32| u32::try_from(value).map_err(InvoicingError::internal);
    Ok(Quote {
        chain_id: row.chain_id,
        revision: count(row.revision)?,
        from_quote_id: row.from_quote_id,
        number: row.number,
        status: status_from_name(&row.status)?,
        offer: Offer {
            party,
            amends_subscription_id: row.amends_subscription_id,
            plan_version_id: row.plan_version_id,
            currency: stored_currency(&row.currency)?,
            terms: row.terms.0,
            starts_at: row.starts_at,
            term_months: count(row.term_months)?,
            ends_at: row.ends_at,
            expires_at: row.expires_at,
            preview: row.preview.0,
            memo: row.memo,
        },
        status_reason: row.status_reason,
        signature,
        accepted_customer_id: row.accepted_customer_id,
        subscription_id: row.subscription_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finalized_at: row.finalized_at,
        accepted_at: row.accepted_at,
        id: row.id,
    })
}

/// Inserts a new revision.
pub async fn insert(connection: &mut PgConnection, quote: &Quote) -> Result<()> {
    let offer = &quote.offer;
    let (customer_id, new_customer) = match &offer.party {
        Party::Customer(id) => (Some(id.as_str()), None),
        Party::New(customer) => (None, Some(Json(customer))),
    };
    sqlx::query(
        "INSERT INTO invoicing.quotes (id, chain_id, revision, from_quote_id, number, status, \
         customer_id, new_customer, amends_subscription_id, plan_version_id, currency, terms, \
         starts_at, term_months, ends_at, expires_at, preview, memo, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $19)",
    )
    .bind(&quote.id)
    .bind(&quote.chain_id)
    .bind(i32::try_from(quote.revision).map_err(InvoicingError::internal)?)
    .bind(&quote.from_quote_id)
    .bind(&quote.number)
    .bind(quote.status.name())
    .bind(customer_id)
    .bind(new_customer)
    .bind(&offer.amends_subscription_id)
    .bind(&offer.plan_version_id)
    .bind(offer.currency.code())
    .bind(Json(&offer.terms))
    .bind(offer.starts_at)
    .bind(i32::try_from(offer.term_months).map_err(InvoicingError::internal)?)
    .bind(offer.ends_at)
    .bind(offer.expires_at)
    .bind(Json(&offer.preview))
    .bind(&offer.memo)
    .bind(quote.created_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Loads a quote (`FOR UPDATE` when `lock`).
pub async fn load(connection: &mut PgConnection, id: &str, lock: bool) -> Result<Quote> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invoicing.quotes WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<QuoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await?;
    from_row(row.ok_or_else(|| InvoicingError::NotFound(format!("quote {id:?} not found")))?)
}

/// Quotes newest first (ids sort by creation), of `customer` (the one named or the one
/// an acceptance created) if given, in `statuses` as read at `now` (empty: all), with ids
/// below `before`.
pub async fn list(
    connection: &mut PgConnection,
    customer: Option<&str>,
    statuses: &[QuoteStatus],
    now: DateTime<Utc>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Quote>> {
    let names: Vec<&str> = statuses.iter().map(|status| status.name()).collect();
    // The status as read: an open quote past its expiry is expired.
    let sql = format!(
        "SELECT {COLUMNS} FROM invoicing.quotes \
         WHERE ($1::text IS NULL OR customer_id = $1 OR accepted_customer_id = $1) \
           AND (cardinality($2::text[]) = 0 OR \
                (CASE WHEN status = 'open' AND expires_at <= $3 THEN 'expired' ELSE status END) \
                = ANY($2)) \
           AND ($4::text IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5"
    );
    let rows: Vec<QuoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(customer)
        .bind(&names)
        .bind(now)
        .bind(before)
        .bind(limit)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// The chain's revisions in `status` other than `except`, locked.
pub async fn chain_in_status(
    connection: &mut PgConnection,
    chain_id: &str,
    status: QuoteStatus,
    except: &str,
) -> Result<Vec<Quote>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invoicing.quotes \
         WHERE chain_id = $1 AND status = $2 AND id <> $3 ORDER BY revision FOR UPDATE"
    );
    let rows: Vec<QuoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(chain_id)
        .bind(status.name())
        .bind(except)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// Writes a quote's status and what comes with it (number, reason, signature,
/// acceptance); the offer never changes once stored.
pub async fn update(connection: &mut PgConnection, quote: &Quote) -> Result<()> {
    let signature = quote.signature.as_ref();
    sqlx::query(
        "UPDATE invoicing.quotes SET status = $2, number = $3, status_reason = $4, \
         signed_by = $5, signed_at = $6, document_sha256 = $7, accepted_customer_id = $8, \
         subscription_id = $9, updated_at = $10, finalized_at = $11, accepted_at = $12 \
         WHERE id = $1",
    )
    .bind(&quote.id)
    .bind(quote.status.name())
    .bind(&quote.number)
    .bind(&quote.status_reason)
    .bind(signature.map(|signature| &signature.signed_by))
    .bind(signature.map(|signature| signature.signed_at))
    .bind(signature.and_then(|signature| signature.document_sha256.as_ref()))
    .bind(&quote.accepted_customer_id)
    .bind(&quote.subscription_id)
    .bind(quote.updated_at)
    .bind(quote.finalized_at)
    .bind(quote.accepted_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// The number the chain already has (a revision keeps it), if any.
pub async fn chain_number(connection: &mut PgConnection, chain_id: &str) -> Result<Option<String>> {
    let number: Option<(String,)> = sqlx::query_as(
        "SELECT number FROM invoicing.quotes WHERE chain_id = $1 AND number IS NOT NULL LIMIT 1",
    )
    .bind(chain_id)
    .fetch_optional(connection)
    .await?;
    Ok(number.map(|(number,)| number))
}

/// The chain's highest revision number.
pub async fn latest_revision(connection: &mut PgConnection, chain_id: &str) -> Result<u32> {
    let (latest,): (i32,) =
        sqlx::query_as("SELECT max(revision) FROM invoicing.quotes WHERE chain_id = $1")
            .bind(chain_id)
            .fetch_one(connection)
            .await?;
    u32::try_from(latest).map_err(InvoicingError::internal)
}

/// The revision of the chain that was accepted, if any.
pub async fn accepted_in_chain(
    connection: &mut PgConnection,
    chain_id: &str,
) -> Result<Option<String>> {
    let id: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM invoicing.quotes WHERE chain_id = $1 AND status = 'accepted'",
    )
    .bind(chain_id)
    .fetch_optional(connection)
    .await?;
    Ok(id.map(|(id,)| id))
}

/// The end of a subscription's current term: the `ends_at` of the last quote accepted
/// for it (a new subscription or an amendment, which co-terminates), if any.
pub async fn term_end(
    connection: &mut PgConnection,
    subscription_id: &str,
) -> Result<Option<DateTime<Utc>>> {
    let end: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "SELECT ends_at FROM invoicing.quotes \
         WHERE subscription_id = $1 AND status = 'accepted' \
         ORDER BY accepted_at DESC, id DESC LIMIT 1",
    )
    .bind(subscription_id)
    .fetch_optional(connection)
    .await?;
    Ok(end.map(|(end,)| end))
}
