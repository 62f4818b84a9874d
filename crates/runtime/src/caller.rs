//! `tally.auth.v1.AuthService`: tells a caller which key it called with and
//! that key's scopes, so a client (the console) shows only the actions the
//! key may take. Served by every [`crate::server::GrpcServer`], next to health
//! and reflection.

use tally_proto::auth::auth_service_server::{AuthService, AuthServiceServer};
use tally_proto::auth::{GetCallerRequest, GetCallerResponse};
use tonic::{Request, Response, Status};

use crate::auth::{ApiKey, Scope};

/// Answers `GetCaller` from the [`ApiKey`] the auth layer put in the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerApi;

impl CallerApi {
    /// The service, ready to add to a routing table.
    pub fn server() -> AuthServiceServer<Self> {
        AuthServiceServer::new(Self)
    }
}

#[tonic::async_trait]
impl AuthService for CallerApi {
    async fn get_caller(
        &self,
        request: Request<GetCallerRequest>,
    ) -> Result<Response<GetCallerResponse>, Status> {
        Ok(Response::new(describe(
            request.extensions().get::<ApiKey>(),
        )))
    }
}

/// The answer for `key`; no key means the auth layer checks nothing here.
fn describe(key: Option<&ApiKey>) -> GetCallerResponse {
    match key {
        Some(key) => GetCallerResponse {
            key_id: key.id.clone(),
            name: key.name.clone(),
            scopes: key
                .scopes
                .iter()
                .map(|scope| scope.as_str().to_owned())
                .collect(),
            authentication_disabled: false,
        },
        None => GetCallerResponse {
            scopes: [Scope::Ingest, Scope::Read, Scope::Write, Scope::Admin]
                .iter()
                .map(|scope| scope.as_str().to_owned())
                .collect(),
            authentication_disabled: true,
            ..GetCallerResponse::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_key_and_its_scopes() {
        let key = ApiKey {
            id: "key_1".to_owned(),
            name: "console".to_owned(),
            scopes: [Scope::Write, Scope::Read].into_iter().collect(),
        };
        let answer = describe(Some(&key));
        assert_eq!(answer.key_id, "key_1");
        assert_eq!(answer.name, "console");
        assert_eq!(answer.scopes, ["read", "write"]);
        assert!(!answer.authentication_disabled);
    }

    #[test]
    fn without_authentication_every_scope() {
        let answer = describe(None);
        assert!(answer.authentication_disabled);
        assert_eq!(answer.scopes, ["ingest", "read", "write", "admin"]);
    }

    #[test]
    fn needs_the_read_scope() {
        assert_eq!(
            Scope::required_for("/tally.auth.v1.AuthService/GetCaller"),
            Scope::Read
        );
    }
}
