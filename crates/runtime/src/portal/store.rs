//! Portal tokens in the shared `tally_auth.api_keys` table.

use tally_domain::ids::ApiKeyId;

use crate::clock::SharedClock;
use crate::ids::IdGenerator;

use super::generate_token;

/// Issues a portal token for `customer_id` valid until `expires_at`, stores
/// its hash (scope `read`, limited to the customer) and returns `(id,
/// plaintext)`. Show the plaintext once.
pub async fn create_token<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    ids: &dyn IdGenerator,
    clock: &SharedClock,
    customer_id: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<(String, String), sqlx::Error> {
    let id = String::from(ids.mint::<ApiKeyId>());
    let plaintext = generate_token(customer_id);
    sqlx::query(
        "INSERT INTO tally_auth.api_keys (id, name, key_hash, scopes, created_at, customer_id, expires_at) \
         VALUES ($1, $2, $3, ARRAY['read'], $4, $5, $6)",
    )
    .bind(&id)
    .bind(format!("portal {customer_id}"))
    .bind(crate::auth::hash_key(&plaintext))
    .bind(clock.now())
    .bind(customer_id)
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok((id, plaintext))
}
