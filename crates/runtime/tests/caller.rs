//! `tally.auth.v1.AuthService/GetCaller` over a real server: a key learns its
//! id, name and scopes; a call without a key is UNAUTHENTICATED; a portal
//! token is refused; with authentication off the answer says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use tally_proto::auth::GetCallerRequest;
use tally_proto::auth::auth_service_client::AuthServiceClient;
use tally_runtime::Shutdown;
use tally_runtime::auth::{ApiKey, ApiKeyRegistry, AuthLayer, Scope, hash_key};
use tally_runtime::portal::CustomerScope;
use tally_runtime::server::GrpcServer;
use tonic::Code;
use tonic::transport::Channel;

async fn serve(auth: AuthLayer, shutdown: &Shutdown) -> SocketAddr {
    GrpcServer::new(|routes| routes, vec!["tally.test.v1.Service"])
        .spawn_on_loopback(auth, shutdown)
        .await
        .unwrap()
}

async fn client(address: SocketAddr) -> AuthServiceClient<Channel> {
    AuthServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn with_key(key: Option<&str>) -> tonic::Request<GetCallerRequest> {
    let mut request = tonic::Request::new(GetCallerRequest {});
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn a_key_learns_its_scopes() {
    let registry = Arc::new(ApiKeyRegistry::default());
    registry.insert(
        hash_key("tally_reader"),
        ApiKey {
            id: "key_reader".to_owned(),
            name: "support".to_owned(),
            scopes: [Scope::Read].into_iter().collect(),
        },
    );
    registry.insert_portal_token(
        hash_key("tallyp_portal"),
        ApiKey {
            id: "key_portal".to_owned(),
            name: "portal".to_owned(),
            scopes: [Scope::Read].into_iter().collect(),
        },
        CustomerScope {
            customer_id: "cus_1".to_owned(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        },
    );
    let shutdown = Shutdown::new();
    let address = serve(AuthLayer::new(registry), &shutdown).await;
    let mut auth = client(address).await;

    let answer = auth
        .get_caller(with_key(Some("tally_reader")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.key_id, "key_reader");
    assert_eq!(answer.name, "support");
    assert_eq!(answer.scopes, ["read"]);
    assert!(!answer.authentication_disabled);

    let missing = auth.get_caller(with_key(None)).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let portal = auth
        .get_caller(with_key(Some("tallyp_portal")))
        .await
        .unwrap_err();
    assert_eq!(portal.code(), Code::PermissionDenied, "{portal:?}");
    shutdown.trigger();
}

#[tokio::test]
async fn without_authentication_every_scope() {
    let shutdown = Shutdown::new();
    let address = serve(AuthLayer::disabled(), &shutdown).await;
    let answer = client(address)
        .await
        .get_caller(with_key(None))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.authentication_disabled);
    assert_eq!(answer.scopes, ["ingest", "read", "write", "admin"]);
    shutdown.trigger();
}
