//! API-key authentication for every gRPC call.
//!
//! A key is a 256-bit random token shown once (`tally_…`). Only its SHA-256
//! hash is stored (`tally_auth.api_keys`). Each process keeps an in-memory copy
//! of the key table, refreshed every `auth.refresh_interval_seconds`, so a call
//! is checked without a database round trip; a revoked key stops working within
//! one refresh interval.
//!
//! Callers send the key as `authorization: Bearer <key>` or `x-api-key: <key>`.
//! A missing or unknown key is `UNAUTHENTICATED`; a key without the scope the
//! method needs is `PERMISSION_DENIED`. Health checks and reflection are open so
//! that probes and tools work without a key.
//!
//! Customer portal tokens are keys limited to one customer and a lifetime:
//! see [`crate::portal`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tally_domain::ids::ApiKeyId;

use crate::clock::SharedClock;
use crate::ids::IdGenerator;
use crate::portal::{CustomerScope, PORTAL_METHODS};
use crate::shutdown::Shutdown;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send usage events (`IngestBatch`, `IngestStream`).
    Ingest,
    /// Read-only calls (`Get…`, `BatchGet…`, `List…`, `Read…`, `Preview…`).
    Read,
    /// Calls that change billing state (customers, subscriptions, catalog, invoices, credits, refunds).
    Write,
    /// Everything, including clock control, backfills and reconciliation.
    Admin,
}

impl Scope {
    /// The name used in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses `ingest`, `read`, `write` or `admin`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// The scope a gRPC method needs, from its path `/package.Service/Method`.
    ///
    /// The rule is by name so new RPCs are covered without a table: ingestion
    /// needs `ingest`; clock, reconciliation, opening or closing a backfill
    /// (`…Backfill`), closing and rebuilding the books need `admin`; `Get`/`BatchGet`/`List`/`Read`/`Preview`
    /// methods need `read` (so `ListBackfills` is a read), and so do
    /// `Verify` methods (`VerifyAuditChain` only reads); everything else `write`.
    pub fn required_for(path: &str) -> Scope {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        if service == "tally.ingest.v1.IngestService" && method.starts_with("Ingest") {
            return Scope::Ingest;
        }
        if service.starts_with("tally.clock.")
            || service.ends_with("ReconciliationService")
            // Opening and closing a backfill both change which events are
            // accepted, so both are `admin` (closing was `write` by accident).
            || (service == "tally.ingest.v1.IngestService" && method.ends_with("Backfill"))
            // Closing the books moves every later posting of a closed period.
            || (service == "tally.finance.v1.LedgerService"
                && matches!(method, "ClosePeriod" | "RebuildLedger"))
        {
            return Scope::Admin;
        }
        if ["Get", "BatchGet", "List", "Read", "Preview", "Verify"]
            .iter()
            .any(|prefix| method.starts_with(prefix))
        {
            return Scope::Read;
        }
        Scope::Write
    }
}

/// A key as the server knows it (never the plaintext). Handlers find the
/// caller's key in `request.extensions().get::<ApiKey>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_…` id, safe to log.
    pub id: String,
    /// A human label, e.g. `checkout-service`.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl ApiKey {
    /// Whether this key may call a method that needs `required`.
    /// `admin` implies every scope and `write` implies `read`.
    pub fn allows(&self, required: Scope) -> bool {
        self.scopes.contains(&Scope::Admin)
            || self.scopes.contains(&required)
            || (required == Scope::Read && self.scopes.contains(&Scope::Write))
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key in the metadata.
    #[error(
        "missing API key: send `authorization: Bearer <key>` (create one with `tally keys create`)"
    )]
    Missing,
    /// The key is not known or was revoked.
    #[error("invalid or revoked API key")]
    Invalid,
    /// A portal token past its expiry.
    #[error("portal token expired at {0}: ask for a new link (`tally portal link`)")]
    Expired(String),
    /// A portal token calling outside [`PORTAL_METHODS`].
    #[error(
        "a customer portal token may only read its customer's usage, invoices and credits, not call {method}"
    )]
    OutsidePortal {
        /// The method path.
        method: String,
    },
    /// The key lacks the needed scope.
    #[error("API key `{key_id}` lacks the `{}` scope needed by {method}", required.as_str())]
    Forbidden {
        /// The key's id.
        key_id: String,
        /// The scope the method needs.
        required: Scope,
        /// The method path.
        method: String,
    },
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid | AuthError::Expired(_) => {
                tonic::Status::unauthenticated(error.to_string())
            }
            AuthError::Forbidden { .. } | AuthError::OutsidePortal { .. } => {
                tonic::Status::permission_denied(error.to_string())
            }
        }
    }
}

/// SHA-256 of a presented key, lowercase hex: what is stored and looked up.
pub fn hash_key(plaintext: &str) -> String {
    let digest = Sha256::digest(plaintext.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A fresh random key: `tally_` and 64 hex characters (two v4 UUIDs, 244 random bits).
pub fn generate_key() -> String {
    format!(
        "tally_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The in-memory key table every call is checked against.
#[derive(Default)]
pub struct ApiKeyRegistry {
    by_hash: RwLock<HashMap<String, ApiKey>>,
    /// The portal tokens among them, by the same hash.
    customer_scopes: RwLock<HashMap<String, CustomerScope>>,
}

impl fmt::Debug for ApiKeyRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self
            .by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        formatter
            .debug_struct("ApiKeyRegistry")
            .field("keys", &count)
            .finish()
    }
}

impl ApiKeyRegistry {
    /// Adds or replaces a key by the hash of its plaintext (tests and `tally dev`).
    pub fn insert(&self, key_hash: String, key: ApiKey) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_hash, key);
    }

    /// Adds or replaces a portal token (tests): a `read` key limited to `scope`.
    pub fn insert_portal_token(&self, key_hash: String, key: ApiKey, scope: CustomerScope) {
        self.insert(key_hash.clone(), key);
        self.customer_scopes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_hash, scope);
    }

    /// Checks `presented` against the table for a call to `method` (a gRPC path).
    pub fn authorize(&self, presented: Option<&str>, method: &str) -> Result<ApiKey, AuthError> {
        self.authorize_call(presented, method).map(|(key, _)| key)
    }

    /// [`ApiKeyRegistry::authorize`], with the customer a portal token is limited to.
    pub fn authorize_call(
        &self,
        presented: Option<&str>,
        method: &str,
    ) -> Result<(ApiKey, Option<CustomerScope>), AuthError> {
        let presented = presented.ok_or(AuthError::Missing)?;
        let key_hash = hash_key(presented);
        let keys = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys.get(&key_hash).ok_or(AuthError::Invalid)?;
        let scope = self
            .customer_scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key_hash)
            .cloned();
        if let Some(scope) = &scope {
            admit_portal(scope, method)?;
        }
        let required = Scope::required_for(method);
        if !key.allows(required) {
            return Err(AuthError::Forbidden {
                key_id: key.id.clone(),
                required,
                method: method.to_owned(),
            });
        }
        Ok((key.clone(), scope))
    }

    /// Replaces the table with the live (not revoked) keys in the database.
    pub async fn reload(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        type Row = (
            String,
            String,
            String,
            Vec<String>,
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, name, key_hash, scopes, customer_id, expires_at FROM tally_auth.api_keys \
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .fetch_all(pool)
        .await?;
        let mut table = HashMap::with_capacity(rows.len());
        let mut customer_scopes = HashMap::new();
        for (id, name, key_hash, scope_names, customer_id, expires_at) in rows {
            let scopes = scope_names
                .iter()
                // The table's CHECK constraint admits only names that parse.
                .filter_map(|name| Scope::parse(name))
                .collect();
            if let (Some(customer_id), Some(expires_at)) = (customer_id, expires_at) {
                customer_scopes.insert(
                    key_hash.clone(),
                    CustomerScope {
                        customer_id,
                        expires_at,
                    },
                );
            }
            table.insert(key_hash, ApiKey { id, name, scopes });
        }
        let count = table.len();
        // Scopes first: a token is never in the table without its limits.
        *self
            .customer_scopes
            .write()
            .unwrap_or_else(PoisonError::into_inner) = customer_scopes;
        *self.by_hash.write().unwrap_or_else(PoisonError::into_inner) = table;
        Ok(count)
    }

    /// Reloads from the database every `interval` until `shutdown`.
    pub fn spawn_refresh(self: &Arc<Self>, pool: PgPool, interval: Duration, shutdown: Shutdown) {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Err(error) = registry.reload(&pool).await {
                    tracing::warn!(%error, "api key refresh failed; keeping the previous table");
                }
            }
        });
    }
}

/// Creates a key with `scopes`, stores its hash and returns `(id, plaintext)`.
/// The plaintext is not stored anywhere: show it once. Takes a pool or a
/// transaction's connection (so `tally keys` audits it in the same transaction).
pub async fn create_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    ids: &dyn IdGenerator,
    clock: &SharedClock,
    name: &str,
    scopes: &BTreeSet<Scope>,
) -> Result<(String, String), sqlx::Error> {
    let id = String::from(ids.mint::<ApiKeyId>());
    let plaintext = generate_key();
    let scope_names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    sqlx::query("INSERT INTO tally_auth.api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(name)
        .bind(hash_key(&plaintext))
        .bind(&scope_names)
        .bind(clock.now())
        .execute(executor)
        .await?;
    Ok((id, plaintext))
}

/// What [`register_key`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The key was new: stored under this id.
    Created(String),
    /// The key was already registered, active, with these scopes.
    Existing {
        /// Its id.
        id: String,
        /// Its scopes.
        scopes: BTreeSet<Scope>,
    },
    /// The key was registered and revoked since: it stays revoked.
    Revoked(String),
}

/// Registers a key whose plaintext the caller holds (a peer key kept in a
/// Secret), unless it is registered already; idempotent, so a deployment
/// can run it at every upgrade. Only the hash is stored. Runs on the
/// caller's connection (in `tally keys register`'s audited transaction).
pub async fn register_key(
    connection: &mut sqlx::PgConnection,
    ids: &dyn IdGenerator,
    clock: &SharedClock,
    name: &str,
    plaintext: &str,
    scopes: &BTreeSet<Scope>,
) -> Result<Registered, sqlx::Error> {
    let key_hash = hash_key(plaintext);
    let scope_names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    let id = String::from(ids.mint::<ApiKeyId>());
    let inserted = sqlx::query(
        "INSERT INTO tally_auth.api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(&id)
    .bind(name)
    .bind(&key_hash)
    .bind(&scope_names)
    .bind(clock.now())
    .execute(&mut *connection)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Registered::Created(id));
    }
    let (id, stored_scopes, revoked): (String, Vec<String>, bool) = sqlx::query_as(
        "SELECT id, scopes, revoked_at IS NOT NULL FROM tally_auth.api_keys WHERE key_hash = $1",
    )
    .bind(&key_hash)
    .fetch_one(&mut *connection)
    .await?;
    if revoked {
        return Ok(Registered::Revoked(id));
    }
    Ok(Registered::Existing {
        id,
        scopes: stored_scopes
            .iter()
            .filter_map(|name| Scope::parse(name))
            .collect(),
    })
}

/// Revokes a key; returns false when no live key has that id. Takes a pool
/// or a transaction's connection.
pub async fn revoke_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    clock: &SharedClock,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE tally_auth.api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(clock.now())
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The key presented in the call's metadata, if any.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// Paths that never need a key: health probes and reflection.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// A tower layer that authenticates every gRPC call before it reaches a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    registry: Option<Arc<ApiKeyRegistry>>,
}

impl AuthLayer {
    /// Checks every call against `registry`.
    pub fn new(registry: Arc<ApiKeyRegistry>) -> Self {
        Self {
            registry: Some(registry),
        }
    }

    /// Lets every call through (`auth.enabled = false`, local experiments only).
    pub fn disabled() -> Self {
        Self { registry: None }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    registry: Option<Arc<ApiKeyRegistry>>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready: swap so the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if let Some(registry) = &self.registry
            && !is_public(&path)
        {
            match registry.authorize_call(presented_key(request.headers()), &path) {
                Ok((key, customer_scope)) => {
                    tracing::debug!(key_id = %key.id, method = %path, "authorized");
                    request.extensions_mut().insert(key);
                    if let Some(scope) = customer_scope {
                        request.extensions_mut().insert(scope);
                    }
                }
                Err(error) => {
                    tracing::info!(method = %path, %error, "call refused");
                    let status: tonic::Status = error.into();
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        Box::pin(inner.call(request))
    }
}

/// Whether a portal token may call `method` now: not after its expiry
/// (`UNAUTHENTICATED`), and only [`PORTAL_METHODS`] (`PERMISSION_DENIED`).
fn admit_portal(scope: &CustomerScope, method: &str) -> Result<(), AuthError> {
    if scope.expires_at <= chrono::Utc::now() {
        return Err(AuthError::Expired(
            scope
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    if !PORTAL_METHODS.contains(&method) {
        return Err(AuthError::OutsidePortal {
            method: method.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
