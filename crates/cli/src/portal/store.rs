//! What `tally portal link` reads: the customer a link is for.

/// The `cus_…` id of `customer` (an id or an external id), if it exists.
pub async fn customer_id(pool: &sqlx::PgPool, customer: &str) -> sqlx::Result<Option<String>> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM invoicing.customers WHERE id = $1 OR external_id = $1 \
         ORDER BY id = $1 DESC LIMIT 1",
    )
    .bind(customer)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(id,)| id))
}
