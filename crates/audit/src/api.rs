//! `tally.audit.v1.AuditService` over the chains a process serves.

use sqlx::PgPool;
use tally_proto::audit::audit_service_server::{AuditService, AuditServiceServer};
use tally_proto::audit::{self as proto};
use tally_runtime::SharedClock;
use tally_runtime::server::GrpcServer;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::chain::{self, Head};
use crate::error::AuditError;
use crate::mapping;
use crate::schema::Schema;
use crate::store::{self, Cursor};

/// Entries per page unless asked otherwise, and at most.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The audit service of one process: it answers for `schemas` (a service's
/// own chain and `auth` in a cluster; every chain in `tally dev`).
#[derive(Debug, Clone)]
pub struct AuditApi {
    pool: PgPool,
    clock: SharedClock,
    schemas: Vec<Schema>,
}

impl AuditApi {
    /// Answers for `schemas` (kept in [`Schema::ALL`] order, once each).
    pub fn new(pool: PgPool, clock: SharedClock, schemas: &[Schema]) -> Self {
        let schemas = Schema::ALL
            .into_iter()
            .filter(|schema| schemas.contains(schema))
            .collect();
        Self {
            pool,
            clock,
            schemas,
        }
    }

    /// The chains served.
    pub fn schemas(&self) -> &[Schema] {
        &self.schemas
    }

    /// `AuditService`, ready to serve (merged into a service's server).
    pub fn grpc_server(self, max_message_bytes: usize) -> GrpcServer {
        let server = AuditServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        GrpcServer::new(
            move |routes: Routes| routes.add_service(server),
            vec![<AuditServiceServer<AuditApi> as NamedService>::NAME],
        )
    }

    /// The chains a request names: all served when `chain` is empty.
    fn chains(&self, chain: &str) -> Result<Vec<Schema>, AuditError> {
        if chain.is_empty() {
            return Ok(self.schemas.clone());
        }
        let schema = Schema::from_chain_name(chain).ok_or_else(|| {
            AuditError::invalid(
                "chain",
                "invalid_value",
                format!("unknown chain `{chain}`: use auth, ingest, rating, invoicing or payments"),
            )
        })?;
        if !self.schemas.contains(&schema) {
            return Err(AuditError::invalid(
                "chain",
                "not_served",
                format!("this process does not serve the `{chain}` chain: ask the {chain} service"),
            ));
        }
        Ok(vec![schema])
    }

    async fn list(
        &self,
        request: proto::ListAuditEntriesRequest,
    ) -> Result<proto::ListAuditEntriesResponse, AuditError> {
        let schemas = self.chains(&request.chain)?;
        let filter = mapping::filter(&request)?;
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
            Err(_) => {
                return Err(AuditError::invalid(
                    "page_size",
                    "invalid_value",
                    "must not be negative",
                ));
            }
        };
        let cursor = match request.page_token.as_str() {
            "" => None,
            token => Some(Cursor::from_token(token).ok_or_else(|| {
                AuditError::invalid(
                    "page_token",
                    "invalid_page_token",
                    "is not a token this service returned",
                )
            })?),
        };
        let (entries, more) = store::list(&self.pool, &schemas, &filter, cursor, page_size).await?;
        let next_page_token = match entries.last() {
            Some(last) if more => Cursor::after(last).to_token(),
            _ => String::new(),
        };
        Ok(proto::ListAuditEntriesResponse {
            entries: entries.iter().map(mapping::entry).collect(),
            next_page_token,
        })
    }

    async fn verify(
        &self,
        request: proto::VerifyAuditChainRequest,
    ) -> Result<proto::VerifyAuditChainResponse, AuditError> {
        let schemas = self.chains(&request.chain)?;
        let mut exported = Vec::with_capacity(request.expected_heads.len());
        for (index, head) in request.expected_heads.iter().enumerate() {
            exported.push(mapping::expected_head(index, head)?);
        }
        let mut chains = Vec::with_capacity(schemas.len());
        for schema in schemas {
            let verification = chain::verify_against(&self.pool, schema, &exported).await?;
            chains.push(mapping::verification(schema, &verification));
        }
        Ok(proto::VerifyAuditChainResponse { chains })
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<proto::ListAuditEntriesRequest>,
    ) -> Result<Response<proto::ListAuditEntriesResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn get_audit_entry(
        &self,
        request: Request<proto::GetAuditEntryRequest>,
    ) -> Result<Response<proto::GetAuditEntryResponse>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(AuditError::invalid("id", "required", "is required").into());
        }
        let entry = store::get(&self.pool, &self.schemas, &id)
            .await?
            .ok_or(AuditError::NotFound(id))?;
        Ok(Response::new(proto::GetAuditEntryResponse {
            entry: Some(mapping::entry(&entry)),
        }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<proto::VerifyAuditChainRequest>,
    ) -> Result<Response<proto::VerifyAuditChainResponse>, Status> {
        Ok(Response::new(self.verify(request.into_inner()).await?))
    }

    async fn get_audit_chain_head(
        &self,
        request: Request<proto::GetAuditChainHeadRequest>,
    ) -> Result<Response<proto::GetAuditChainHeadResponse>, Status> {
        let schemas = self.chains(&request.into_inner().chain)?;
        let read_at = self.clock.now();
        let mut heads = Vec::with_capacity(schemas.len());
        for schema in schemas {
            let head: Head = chain::head(&self.pool, schema).await?;
            heads.push(mapping::head(&head));
        }
        Ok(Response::new(proto::GetAuditChainHeadResponse {
            heads,
            read_at: Some(tally_proto::convert::timestamp(read_at)),
        }))
    }
}
