//! A service under test served with authentication and one API key, so a
//! test sees what a real caller's key does (scopes, the actor the audit log
//! records) — the shared harnesses serve without authentication.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tally_runtime::Shutdown;
use tally_runtime::auth::{self, ApiKey, ApiKeyRegistry, AuthLayer, Scope};
use tally_runtime::server::GrpcServer;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The request id [`Bearer`] sends with every call.
pub const REQUEST_ID: &str = "req-test-1";

/// A key the server knows: its id, name and the plaintext to send.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// `key_…`.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The secret a caller sends.
    pub plaintext: String,
}

/// Serves `grpc` on loopback, authenticating every call against one key
/// (`id`, `name`, `scopes`); returns a channel carrying that key and the key.
pub async fn serve_with_key(
    grpc: GrpcServer,
    shutdown: &Shutdown,
    id: &str,
    name: &str,
    scopes: &[Scope],
) -> anyhow::Result<(InterceptedService<Channel, Bearer>, TestKey)> {
    let registry = Arc::new(ApiKeyRegistry::default());
    let plaintext = auth::generate_key();
    registry.insert(
        auth::hash_key(&plaintext),
        ApiKey {
            id: id.to_owned(),
            name: name.to_owned(),
            scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
        },
    );
    let channel = serve_with_registry(grpc, shutdown, registry, &plaintext).await?;
    Ok((
        channel,
        TestKey {
            id: id.to_owned(),
            name: name.to_owned(),
            plaintext,
        },
    ))
}

/// Serves `grpc` on loopback, authenticating every call against one customer
/// portal token for `customer_id` (valid for an hour); returns a channel
/// carrying that token.
pub async fn serve_with_portal_token(
    grpc: GrpcServer,
    shutdown: &Shutdown,
    customer_id: &str,
) -> anyhow::Result<InterceptedService<Channel, Bearer>> {
    let registry = Arc::new(ApiKeyRegistry::default());
    let token = tally_runtime::portal::generate_token(customer_id);
    registry.insert_portal_token(
        auth::hash_key(&token),
        ApiKey {
            id: "key_portal".to_owned(),
            name: format!("portal {customer_id}"),
            scopes: BTreeSet::from([Scope::Read]),
        },
        tally_runtime::portal::CustomerScope {
            customer_id: customer_id.to_owned(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        },
    );
    serve_with_registry(grpc, shutdown, registry, &token).await
}

/// Serves `grpc` on loopback checking calls against `registry`; a channel
/// sending `plaintext`.
async fn serve_with_registry(
    grpc: GrpcServer,
    shutdown: &Shutdown,
    registry: Arc<ApiKeyRegistry>,
    plaintext: &str,
) -> anyhow::Result<InterceptedService<Channel, Bearer>> {
    let address: SocketAddr = grpc
        .spawn_on_loopback(AuthLayer::new(registry), shutdown)
        .await?;
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let bearer = Bearer {
        authorization: MetadataValue::try_from(format!("Bearer {plaintext}"))?,
    };
    Ok(InterceptedService::new(channel, bearer))
}

/// Adds the key and `x-request-id: req-test-1` to every call.
#[derive(Clone)]
pub struct Bearer {
    authorization: AsciiMetadataValue,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Bearer") // never print the key
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
            .metadata_mut()
            .insert("x-request-id", MetadataValue::from_static(REQUEST_ID));
        Ok(request)
    }
}
