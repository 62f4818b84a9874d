//! `tally.rating.v1.CatalogService`: request checks, transactions and the
//! wire form of stored rows. Rules live in [`super::mapping`], SQL in
//! [`super::store`].

use prost::Message as _;
use sqlx::PgPool;
use tally_domain::ids::{MeterId, PlanId, PlanVersionId};
use tally_proto::rating::catalog_service_server::CatalogService;
use tally_proto::rating::create_plan_version_request::Source;
use tally_proto::rating::{self as proto, get_meter_request, get_plan_request};
use tally_runtime::SharedClock;
use tally_runtime::clock_service::chrono_to_timestamp;
use tally_runtime::ids::SharedIdGenerator;
use tonic::{Request, Response, Status};

use super::audit::{Change, meter_state, plan_state, version_state};
use super::changes;
use super::error::CatalogError;
use super::mapping::{self, PlanIdentity, Rule, Violations};
use super::paging::{page_after, page_by_code, page_size, paginate, version_token};
use super::store::{self, Created, Lock, Lookup, NewVersion, VersionRow};

/// Longest idempotency key (common.proto).
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

type CatalogResult<T> = Result<Response<T>, Status>;

/// The `CatalogService` implementation.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    pool: PgPool,
    clock: SharedClock,
    ids: SharedIdGenerator,
}

impl CatalogApi {
    /// The catalog over `pool`, stamping times from `clock` and minting ids with `ids`.
    pub fn new(pool: PgPool, clock: SharedClock, ids: SharedIdGenerator) -> Self {
        Self { pool, clock, ids }
    }

    /// A change by `origin`, now.
    fn change<'a>(&'a self, origin: &'a tally_audit::Origin) -> Change<'a> {
        Change {
            ids: &*self.ids,
            now: self.clock.now(),
            origin,
        }
    }

    async fn create_version(
        &self,
        request: &proto::CreatePlanVersionRequest,
        origin: &tally_audit::Origin,
    ) -> Result<VersionRow, CatalogError> {
        let request_hash = mapping::version_request_hash(request);
        let mut transaction = self.pool.begin().await?;
        if let Some(replayed) = replay(&mut transaction, request, &request_hash).await? {
            return Ok(replayed);
        }
        if store::lock_plan(&mut transaction, &request.plan_id)
            .await?
            .is_none()
        {
            return Err(CatalogError::not_found("plan", &request.plan_id));
        }
        let content = match &request.source {
            Some(Source::Spec(spec)) => spec.encode_to_vec(),
            Some(Source::CopyFromVersionId(source_id)) => {
                store::version(&mut transaction, source_id, Lock::None)
                    .await?
                    .filter(|source| source.plan_id == request.plan_id)
                    .ok_or_else(|| CatalogError::not_found("plan version", source_id))?
                    .content
            }
            None => return Err(CatalogError::Invalid(required("source"))),
        };
        let id = self.ids.mint::<PlanVersionId>();
        let change = self.change(origin);
        let new = NewVersion {
            id: &id,
            plan_id: &request.plan_id,
            content: &content,
            idempotency_key: &request.idempotency_key,
            request_hash: &request_hash,
            now: change.now,
        };
        let Some(row) = store::insert_version(&mut transaction, &new).await? else {
            // A concurrent call with the same key committed first.
            return replay(&mut transaction, request, &request_hash)
                .await?
                .ok_or_else(|| CatalogError::AlreadyExists(key_conflict(request)));
        };
        let states = (None, Some(version_state(&row)));
        change
            .record(
                &mut transaction,
                "catalog.plan_version.drafted",
                ("plan_version", &row.id),
                states,
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(plan_version_id = %row.id, plan_id = %row.plan_id, version = row.version, "plan version drafted");
        Ok(row)
    }

    async fn update_draft(
        &self,
        request: &proto::UpdateDraftPlanVersionRequest,
        spec: &proto::PlanVersionSpec,
        origin: &tally_audit::Origin,
    ) -> Result<VersionRow, CatalogError> {
        let mut transaction = self.pool.begin().await?;
        let row = store::version(&mut transaction, &request.plan_version_id, Lock::ForUpdate)
            .await?
            .ok_or_else(|| CatalogError::not_found("plan version", &request.plan_version_id))?;
        if row.status != "draft" {
            return Err(immutable(&row));
        }
        let revision = u64::try_from(row.revision).unwrap_or_default();
        if request.expected_revision != 0 && request.expected_revision != revision {
            return Err(CatalogError::Aborted(format!(
                "plan version {} is at revision {revision}, not {}; re-read it and retry",
                row.id, request.expected_revision
            )));
        }
        let change = self.change(origin);
        let before = version_state(&row);
        let row = store::update_draft(&mut transaction, &row.id, &spec.encode_to_vec(), change.now)
            .await?;
        let states = (Some(before), Some(version_state(&row)));
        change
            .record(
                &mut transaction,
                "catalog.plan_version.draft_updated",
                ("plan_version", &row.id),
                states,
            )
            .await?;
        transaction.commit().await?;
        Ok(row)
    }

    async fn publish(
        &self,
        id: &str,
        origin: &tally_audit::Origin,
    ) -> Result<VersionRow, CatalogError> {
        let mut transaction = self.pool.begin().await?;
        let row = store::version(&mut transaction, id, Lock::ForUpdate)
            .await?
            .ok_or_else(|| CatalogError::not_found("plan version", id))?;
        match row.status.as_str() {
            "published" => return Ok(row),
            "draft" => {}
            _ => return Err(immutable(&row)),
        }
        let plan = match validate(&mut transaction, &row).await? {
            Ok(plan) => plan,
            Err(violations) => {
                return Err(CatalogError::FailedPrecondition {
                    message: format!(
                        "plan version {id} does not validate: {}",
                        violations.summary()
                    ),
                    violations,
                });
            }
        };
        let before = version_state(&row);
        let change = self.change(origin);
        let row = store::publish(&mut transaction, id, &plan, change.now).await?;
        // Last in the transaction: the chain's lock after every other.
        let states = (Some(before), Some(version_state(&row)));
        change
            .record(
                &mut transaction,
                "catalog.plan_version.published",
                ("plan_version", &row.id),
                states,
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(plan_version_id = %row.id, plan_id = %row.plan_id, version = row.version, "plan version published");
        Ok(row)
    }
}

/// The domain plan of a stored version, or every violation.
async fn validate(
    connection: &mut sqlx::PgConnection,
    row: &VersionRow,
) -> Result<Result<tally_domain::plan::Plan, Violations>, CatalogError> {
    let spec = decode_content(row)?;
    let name = store::plan_name(connection, &row.plan_id)
        .await?
        .ok_or_else(|| corrupt(row, "its plan is missing"))?;
    let identity = PlanIdentity {
        plan_id: PlanId::parse(&row.plan_id).map_err(|error| corrupt(row, &error.to_string()))?,
        version: u32::try_from(row.version).map_err(|error| corrupt(row, &error.to_string()))?,
        name,
    };
    let meters = store::meters_by_code(connection, &mapping::meter_codes(&spec)).await?;
    Ok(mapping::plan(&identity, &spec, &meters))
}

/// The version an earlier call with this key created, if any; an error when
/// that call's request was different.
async fn replay(
    connection: &mut sqlx::PgConnection,
    request: &proto::CreatePlanVersionRequest,
    request_hash: &[u8],
) -> Result<Option<VersionRow>, CatalogError> {
    match store::version_by_key(connection, &request.idempotency_key).await? {
        Some((row, stored_hash)) if stored_hash == request_hash => Ok(Some(row)),
        Some(_) => Err(CatalogError::AlreadyExists(key_conflict(request))),
        None => Ok(None),
    }
}

fn key_conflict(request: &proto::CreatePlanVersionRequest) -> String {
    format!(
        "idempotency key {:?} was already used for a different CreatePlanVersion request",
        request.idempotency_key
    )
}

/// The row and whether this call created it, or ALREADY_EXISTS with `conflict`'s message.
fn created_or_conflict<T>(
    created: Created<T>,
    conflict: impl FnOnce() -> String,
) -> Result<(T, bool), CatalogError> {
    match created {
        Created::New(row) => Ok((row, true)),
        Created::Replayed(row) => Ok((row, false)),
        Created::Conflict => Err(CatalogError::AlreadyExists(conflict())),
    }
}

fn immutable(row: &VersionRow) -> CatalogError {
    CatalogError::FailedPrecondition {
        message: format!(
            "plan version {} is {}: published versions are immutable; \
             create a new version (CreatePlanVersion with copy_from_version_id)",
            row.id, row.status
        ),
        violations: Violations::default(),
    }
}

fn corrupt(row: &VersionRow, detail: &str) -> CatalogError {
    CatalogError::Corrupt {
        what: format!("plan version {}", row.id),
        detail: detail.to_owned(),
    }
}

fn decode_content(row: &VersionRow) -> Result<proto::PlanVersionSpec, CatalogError> {
    proto::PlanVersionSpec::decode(row.content.as_slice())
        .map_err(|error| corrupt(row, &error.to_string()))
}

fn required(field: &str) -> Violations {
    let mut violations = Violations::default();
    violations.missing::<()>(field, "");
    violations
}

fn require(value: &str, field: &str) -> Result<(), CatalogError> {
    if value.is_empty() {
        return Err(CatalogError::Invalid(required(field)));
    }
    Ok(())
}

fn check_idempotency_key(key: &str, violations: &mut Violations) {
    let field = "idempotency_key";
    if key.is_empty() {
        violations.add(field, Rule::Required, "idempotency_key is required");
    } else if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        violations.add(
            field,
            Rule::MaxLength,
            format!("idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        );
    } else if let Some(bad) = key.chars().find(|c| !(' '..='~').contains(c)) {
        violations.add(
            field,
            Rule::InvalidCharacters,
            format!("idempotency_key contains {bad:?}; only printable ASCII is allowed"),
        );
    }
}

fn meter_proto(row: store::MeterRow) -> proto::Meter {
    mapping::meter_to_proto(
        row.id,
        &row.spec.0,
        row.name,
        row.description,
        row.unit,
        row.created_at,
    )
}

fn plan_proto(row: store::PlanRow) -> proto::Plan {
    proto::Plan {
        id: row.id,
        code: row.code,
        name: row.name,
        description: row.description,
        latest_published_version_id: row.latest_published_version_id.unwrap_or_default(),
        metadata: row.metadata.0.into_iter().collect(),
        created_at: Some(chrono_to_timestamp(row.created_at)),
    }
}

fn version_proto(row: VersionRow) -> Result<proto::PlanVersion, CatalogError> {
    let spec = decode_content(&row)?;
    let status = match row.status.as_str() {
        "draft" => proto::PlanVersionStatus::Draft,
        "published" => proto::PlanVersionStatus::Published,
        "archived" => proto::PlanVersionStatus::Archived,
        other => return Err(corrupt(&row, &format!("unknown status {other:?}"))),
    };
    Ok(proto::PlanVersion {
        id: row.id,
        plan_id: row.plan_id,
        version: u32::try_from(row.version).unwrap_or_default(),
        status: status as i32,
        spec: Some(spec),
        revision: u64::try_from(row.revision).unwrap_or_default(),
        created_at: Some(chrono_to_timestamp(row.created_at)),
        updated_at: Some(chrono_to_timestamp(row.updated_at)),
        published_at: row.published_at.map(chrono_to_timestamp),
    })
}

fn version_status_filter(value: i32) -> Result<Option<&'static str>, CatalogError> {
    let mut violations = Violations::default();
    let status: Option<proto::PlanVersionStatus> =
        mapping::known_enum(value, "status", &mut violations);
    match status {
        None => Err(CatalogError::Invalid(violations)),
        Some(proto::PlanVersionStatus::Unspecified) => Ok(None),
        Some(proto::PlanVersionStatus::Draft) => Ok(Some("draft")),
        Some(proto::PlanVersionStatus::Published) => Ok(Some("published")),
        Some(proto::PlanVersionStatus::Archived) => Ok(Some("archived")),
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn create_meter(
        &self,
        request: Request<proto::CreateMeterRequest>,
    ) -> CatalogResult<proto::CreateMeterResponse> {
        let definition =
            mapping::meter_definition(request.get_ref()).map_err(CatalogError::Invalid)?;
        let id = self.ids.mint::<MeterId>();
        let origin = tally_audit::Origin::from_request(&request);
        let change = self.change(&origin);
        let mut transaction = self.pool.begin().await.map_err(CatalogError::from)?;
        let created = store::create_meter(&mut transaction, &id, &definition, change.now)
            .await
            .map_err(CatalogError::from)?;
        let created_row = |row: &store::MeterRow| (row.id.clone(), meter_state(row));
        change
            .created(
                &mut transaction,
                &created,
                ("catalog.meter.created", "meter"),
                created_row,
            )
            .await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        let (row, created) = created_or_conflict(created, || {
            format!(
                "meter {} already exists with a different definition; meters are immutable, \
                 so create one with a new code",
                definition.meter.code()
            )
        })?;
        Ok(Response::new(proto::CreateMeterResponse {
            meter: Some(meter_proto(row)),
            created,
        }))
    }

    async fn get_meter(
        &self,
        request: Request<proto::GetMeterRequest>,
    ) -> CatalogResult<proto::GetMeterResponse> {
        let (lookup, asked) = match &request.get_ref().lookup {
            Some(get_meter_request::Lookup::MeterId(id)) => (Lookup::Id(id), id),
            Some(get_meter_request::Lookup::Code(code)) => (Lookup::Code(code), code),
            None => return Err(CatalogError::Invalid(required("lookup")).into()),
        };
        let row = store::meter_row(&self.pool, lookup)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::not_found("meter", asked.as_str()))?;
        Ok(Response::new(proto::GetMeterResponse {
            meter: Some(meter_proto(row)),
        }))
    }

    async fn list_meters(
        &self,
        request: Request<proto::ListMetersRequest>,
    ) -> CatalogResult<proto::ListMetersResponse> {
        let request = request.get_ref();
        let (rows, next_page_token) = page_by_code(
            &request.page_token,
            request.page_size,
            "meters",
            async |after, limit| store::meter_page(&self.pool, after, limit).await,
            |row| row.spec.0.code().to_string(),
        )
        .await?;
        Ok(Response::new(proto::ListMetersResponse {
            meters: rows.into_iter().map(meter_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_plan(
        &self,
        request: Request<proto::CreatePlanRequest>,
    ) -> CatalogResult<proto::CreatePlanResponse> {
        let attributes =
            mapping::plan_attributes(request.get_ref()).map_err(CatalogError::Invalid)?;
        let id = self.ids.mint::<PlanId>();
        let origin = tally_audit::Origin::from_request(&request);
        let change = self.change(&origin);
        let mut transaction = self.pool.begin().await.map_err(CatalogError::from)?;
        let created = store::create_plan(&mut transaction, &id, &attributes, change.now)
            .await
            .map_err(CatalogError::from)?;
        let created_row = |row: &store::PlanRow| (row.id.clone(), plan_state(row));
        change
            .created(
                &mut transaction,
                &created,
                ("catalog.plan.created", "plan"),
                created_row,
            )
            .await?;
        transaction.commit().await.map_err(CatalogError::from)?;
        let (row, created) = created_or_conflict(created, || {
            format!(
                "plan {} already exists with a different name, description or metadata",
                attributes.code
            )
        })?;
        Ok(Response::new(proto::CreatePlanResponse {
            plan: Some(plan_proto(row)),
            created,
        }))
    }

    async fn get_plan(
        &self,
        request: Request<proto::GetPlanRequest>,
    ) -> CatalogResult<proto::GetPlanResponse> {
        let (lookup, asked) = match &request.get_ref().lookup {
            Some(get_plan_request::Lookup::PlanId(id)) => (Lookup::Id(id), id),
            Some(get_plan_request::Lookup::Code(code)) => (Lookup::Code(code), code),
            None => return Err(CatalogError::Invalid(required("lookup")).into()),
        };
        let row = store::plan_row(&self.pool, lookup)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::not_found("plan", asked.as_str()))?;
        Ok(Response::new(proto::GetPlanResponse {
            plan: Some(plan_proto(row)),
        }))
    }

    async fn list_plans(
        &self,
        request: Request<proto::ListPlansRequest>,
    ) -> CatalogResult<proto::ListPlansResponse> {
        let request = request.get_ref();
        let (rows, next_page_token) = page_by_code(
            &request.page_token,
            request.page_size,
            "plans",
            async |after, limit| store::plan_page(&self.pool, after, limit).await,
            |row| row.code.clone(),
        )
        .await?;
        Ok(Response::new(proto::ListPlansResponse {
            plans: rows.into_iter().map(plan_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_plan_version(
        &self,
        request: Request<proto::CreatePlanVersionRequest>,
    ) -> CatalogResult<proto::CreatePlanVersionResponse> {
        let origin = tally_audit::Origin::from_request(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        check_idempotency_key(&request.idempotency_key, &mut violations);
        if request.plan_id.is_empty() {
            violations.add("plan_id", Rule::Required, "plan_id is required");
        } else if let Err(error) = PlanId::check(&request.plan_id) {
            violations.add("plan_id", Rule::of_id_error(&error), error.to_string());
        }
        match &request.source {
            None => violations.add(
                "source",
                Rule::Required,
                "either spec or copy_from_version_id is required",
            ),
            Some(Source::CopyFromVersionId(id)) if id.is_empty() => violations.add(
                "copy_from_version_id",
                Rule::Required,
                "copy_from_version_id is empty",
            ),
            Some(Source::CopyFromVersionId(_)) => {}
            Some(Source::Spec(spec)) => {
                for violation in mapping::structural_violations(spec).iter() {
                    violations.add(
                        violation.field.clone(),
                        violation.rule,
                        violation.description.clone(),
                    );
                }
            }
        }
        if !violations.is_empty() {
            return Err(CatalogError::Invalid(violations).into());
        }
        let row = self.create_version(&request, &origin).await?;
        Ok(Response::new(proto::CreatePlanVersionResponse {
            plan_version: Some(version_proto(row)?),
        }))
    }

    async fn update_draft_plan_version(
        &self,
        request: Request<proto::UpdateDraftPlanVersionRequest>,
    ) -> CatalogResult<proto::UpdateDraftPlanVersionResponse> {
        let origin = tally_audit::Origin::from_request(&request);
        let request = request.into_inner();
        require(&request.plan_version_id, "plan_version_id")?;
        let Some(spec) = &request.spec else {
            return Err(CatalogError::Invalid(required("spec")).into());
        };
        let violations = mapping::structural_violations(spec);
        if !violations.is_empty() {
            return Err(CatalogError::Invalid(violations).into());
        }
        let row = self.update_draft(&request, spec, &origin).await?;
        Ok(Response::new(proto::UpdateDraftPlanVersionResponse {
            plan_version: Some(version_proto(row)?),
        }))
    }

    async fn validate_plan_version(
        &self,
        request: Request<proto::ValidatePlanVersionRequest>,
    ) -> CatalogResult<proto::ValidatePlanVersionResponse> {
        let id = &request.get_ref().plan_version_id;
        require(id, "plan_version_id")?;
        let mut connection = self.pool.acquire().await.map_err(CatalogError::from)?;
        let row = store::version(&mut connection, id, Lock::None)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::not_found("plan version", id.as_str()))?;
        let violations = match validate(&mut connection, &row).await? {
            Ok(_) => Vec::new(),
            Err(violations) => violations.to_proto(),
        };
        Ok(Response::new(proto::ValidatePlanVersionResponse {
            valid: violations.is_empty(),
            violations,
        }))
    }

    async fn publish_plan_version(
        &self,
        request: Request<proto::PublishPlanVersionRequest>,
    ) -> CatalogResult<proto::PublishPlanVersionResponse> {
        let id = &request.get_ref().plan_version_id;
        require(id, "plan_version_id")?;
        let origin = tally_audit::Origin::from_request(&request);
        let row = self.publish(id, &origin).await?;
        Ok(Response::new(proto::PublishPlanVersionResponse {
            plan_version: Some(version_proto(row)?),
        }))
    }

    async fn get_plan_version(
        &self,
        request: Request<proto::GetPlanVersionRequest>,
    ) -> CatalogResult<proto::GetPlanVersionResponse> {
        let id = &request.get_ref().plan_version_id;
        require(id, "plan_version_id")?;
        let mut connection = self.pool.acquire().await.map_err(CatalogError::from)?;
        let row = store::version(&mut connection, id, Lock::None)
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::not_found("plan version", id.as_str()))?;
        Ok(Response::new(proto::GetPlanVersionResponse {
            plan_version: Some(version_proto(row)?),
        }))
    }

    async fn list_plan_versions(
        &self,
        request: Request<proto::ListPlanVersionsRequest>,
    ) -> CatalogResult<proto::ListPlanVersionsResponse> {
        let request = request.into_inner();
        require(&request.plan_id, "plan_id")?;
        let status = version_status_filter(request.status)?;
        let before = match page_after(&request.page_token, "versions")? {
            None => None,
            Some(after) => Some(version_token(&after, &request.plan_id)?),
        };
        store::plan_row(&self.pool, Lookup::Id(&request.plan_id))
            .await
            .map_err(CatalogError::from)?
            .ok_or_else(|| CatalogError::not_found("plan", request.plan_id.as_str()))?;
        let limit = page_size(request.page_size);
        let rows = store::version_page(&self.pool, &request.plan_id, status, before, limit + 1)
            .await
            .map_err(CatalogError::from)?;
        let (rows, next_page_token) = paginate(rows, limit, |row| {
            format!("versions:{}:{}", row.plan_id, row.version)
        });
        let plan_versions = rows
            .into_iter()
            .map(version_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(proto::ListPlanVersionsResponse {
            plan_versions,
            next_page_token,
        }))
    }

    async fn validate_catalog_changes(
        &self,
        request: Request<proto::ValidateCatalogChangesRequest>,
    ) -> CatalogResult<proto::ValidateCatalogChangesResponse> {
        let placeholder = self.ids.mint::<PlanId>();
        let violations = changes::validate(&self.pool, request.get_ref(), &placeholder)
            .await?
            .to_proto();
        Ok(Response::new(proto::ValidateCatalogChangesResponse {
            valid: violations.is_empty(),
            violations,
        }))
    }

    async fn delete_draft_plan_version(
        &self,
        request: Request<proto::DeleteDraftPlanVersionRequest>,
    ) -> CatalogResult<proto::DeleteDraftPlanVersionResponse> {
        let id = &request.get_ref().plan_version_id;
        require(id, "plan_version_id")?;
        let origin = tally_audit::Origin::from_request(&request);
        let row = changes::delete_draft(&self.pool, id, &self.change(&origin)).await?;
        Ok(Response::new(proto::DeleteDraftPlanVersionResponse {
            plan_version: Some(version_proto(row)?),
        }))
    }

    async fn delete_plan(
        &self,
        request: Request<proto::DeletePlanRequest>,
    ) -> CatalogResult<proto::DeletePlanResponse> {
        let id = &request.get_ref().plan_id;
        require(id, "plan_id")?;
        let origin = tally_audit::Origin::from_request(&request);
        let (row, deleted_drafts) =
            changes::delete_plan(&self.pool, id, &self.change(&origin)).await?;
        Ok(Response::new(proto::DeletePlanResponse {
            plan: Some(plan_proto(row)),
            deleted_drafts,
        }))
    }
}
