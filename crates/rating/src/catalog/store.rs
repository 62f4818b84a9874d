//! SQL for the catalog (schema `rating`, see the migration
//! `…_rating_catalog.sql`). Rows come back as plain structs; the API turns them
//! into wire types.
//!
//! The loaders at the top ([`published_version`], [`meter`], [`meters`]) are
//! what the rest of rating prices with: they return validated domain values
//! (deserialising a stored spec re-runs the domain validation).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tally_domain::ids::{MeterId, PlanId, PlanVersionId};
use tally_domain::meter::Meter;
use tally_domain::plan::Plan;

use super::mapping::{MeterDefinition, PlanAttributes};

/// A published (or archived) plan version: immutable, ready to price with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedVersion {
    /// `pv_…`.
    pub id: String,
    /// `plan_…`.
    pub plan_id: String,
    /// Version number within the plan, from 1.
    pub version: u32,
    /// The validated domain plan (its `version()` equals `version`).
    pub plan: Plan,
}

/// The published or archived version `version_id`; `None` if it does not
/// exist or is still a draft.
pub async fn published_version(
    pool: &PgPool,
    version_id: &str,
) -> Result<Option<PublishedVersion>, sqlx::Error> {
    let row: Option<(String, String, i32, Json<Plan>)> = sqlx::query_as(
        "SELECT id, plan_id, version, spec FROM rating.plan_versions \
         WHERE id = $1 AND status <> 'draft'",
    )
    .bind(version_id)
    .fetch_optional(pool)
    .await?;
    row.map(|(id, plan_id, version, Json(plan))| {
        Ok(PublishedVersion {
            id,
            plan_id,
            version: u32::try_from(version).map_err(|error| sqlx::Error::Decode(error.into()))?,
            plan,
        })
    })
    .transpose()
}

/// The stored wire spec (`PlanVersionSpec` bytes) of plan version `id`,
/// if the version exists.
pub async fn plan_version_content(pool: &PgPool, id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let content: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT content FROM rating.plan_versions WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(content.map(|(bytes,)| bytes))
}

/// The meter with `code`, if any.
pub async fn meter(pool: &PgPool, code: &str) -> Result<Option<Meter>, sqlx::Error> {
    let row: Option<(Json<Meter>,)> =
        sqlx::query_as("SELECT spec FROM rating.meters WHERE code = $1")
            .bind(code)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(Json(meter),)| meter))
}

/// Every meter, ordered by code.
pub async fn meters(pool: &PgPool) -> Result<Vec<Meter>, sqlx::Error> {
    let rows: Vec<(Json<Meter>,)> = sqlx::query_as("SELECT spec FROM rating.meters ORDER BY code")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(Json(meter),)| meter).collect())
}

/// The meters among `codes` that exist, by code.
pub async fn meters_by_code(
    connection: &mut PgConnection,
    codes: &[String],
) -> Result<BTreeMap<String, Meter>, sqlx::Error> {
    let rows: Vec<(String, Json<Meter>)> =
        sqlx::query_as("SELECT code, spec FROM rating.meters WHERE code = ANY($1)")
            .bind(codes)
            .fetch_all(connection)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(code, Json(meter))| (code, meter))
        .collect())
}

/// A stored meter with its display attributes.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MeterRow {
    /// `mtr_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Display unit.
    pub unit: String,
    /// The validated meter.
    pub spec: Json<Meter>,
    /// Creation time (service clock).
    pub created_at: DateTime<Utc>,
}

const METER_SELECT: &str =
    "SELECT t.id, t.name, t.description, t.unit, t.spec, t.created_at FROM rating.meters t";

/// How a create that is idempotent by a key ended.
#[derive(Clone, Debug)]
pub enum Created<T> {
    /// This call created it.
    New(T),
    /// It existed with the same request: the first result.
    Replayed(T),
    /// The key exists with a different request.
    Conflict,
}

/// Inserts a meter unless its code exists; an existing meter is a replay when
/// its definition hash equals `definition`'s.
pub async fn create_meter(
    connection: &mut PgConnection,
    id: &MeterId,
    definition: &MeterDefinition,
    now: DateTime<Utc>,
) -> Result<Created<MeterRow>, sqlx::Error> {
    let code = definition.meter.code().as_str();
    let hash = definition.definition_hash();
    let inserted = sqlx::query(
        "INSERT INTO rating.meters (code, id, name, description, unit, spec, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (code) DO NOTHING",
    )
    .bind(code)
    .bind(id.as_str())
    .bind(&definition.name)
    .bind(&definition.description)
    .bind(&definition.unit)
    .bind(Json(&definition.meter))
    .bind(&hash)
    .bind(now)
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    let row = row_by(&mut *connection, METER_SELECT, Lookup::Code(code)).await?;
    settle(connection, "rating.meters", code, &hash, inserted, row).await
}

/// How a meter or plan is looked up.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// By id (`mtr_…`, `plan_…`).
    Id(&'a str),
    /// By code.
    Code(&'a str),
}

impl<'a> Lookup<'a> {
    /// The column and the value to match.
    fn column(self) -> (&'static str, &'a str) {
        match self {
            Lookup::Id(id) => ("id", id),
            Lookup::Code(code) => ("code", code),
        }
    }
}

/// The end of a create idempotent by code: `row` (read back after the
/// insert) is new, a replay (the stored request hash is `hash`), or a conflict.
async fn settle<T>(
    connection: &mut PgConnection,
    table: &'static str,
    code: &str,
    hash: &[u8],
    inserted: bool,
    row: Option<T>,
) -> Result<Created<T>, sqlx::Error> {
    let Some(row) = row else {
        return Err(sqlx::Error::RowNotFound);
    };
    if inserted {
        return Ok(Created::New(row));
    }
    let stored_hash: Vec<u8> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT request_hash FROM {table} WHERE code = $1"
    )))
    .bind(code)
    .fetch_one(connection)
    .await?;
    Ok(if stored_hash == hash {
        Created::Replayed(row)
    } else {
        Created::Conflict
    })
}

/// One meter row.
pub async fn meter_row(pool: &PgPool, lookup: Lookup<'_>) -> Result<Option<MeterRow>, sqlx::Error> {
    row_by(pool, METER_SELECT, lookup).await
}

/// Up to `limit` meters after code `after`, by code.
pub async fn meter_page(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<MeterRow>, sqlx::Error> {
    page_by_code(pool, METER_SELECT, after, limit).await
}

/// One row of `select` (a query over the table aliased `t`) by id or code.
async fn row_by<T>(
    executor: impl sqlx::PgExecutor<'_>,
    select: &str,
    lookup: Lookup<'_>,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'row> sqlx::FromRow<'row, PgRow> + Send + Unpin,
{
    let (column, value) = lookup.column();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{select} WHERE t.{column} = $1"
    )))
    .bind(value)
    .fetch_optional(executor)
    .await
}

/// Up to `limit` rows of `select` after code `after`, by code.
async fn page_by_code<T>(
    pool: &PgPool,
    select: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'row> sqlx::FromRow<'row, PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{select} WHERE ($1::text IS NULL OR t.code > $1) ORDER BY t.code LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A stored plan.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PlanRow {
    /// `plan_…`.
    pub id: String,
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Metadata.
    pub metadata: Json<BTreeMap<String, String>>,
    /// Creation time (service clock).
    pub created_at: DateTime<Utc>,
    /// The most recently published version, if any.
    pub latest_published_version_id: Option<String>,
}

const PLAN_SELECT: &str = "SELECT t.id, t.code, t.name, t.description, t.metadata, t.created_at, \
     (SELECT v.id FROM rating.plan_versions v \
      WHERE v.plan_id = t.id AND v.status = 'published' \
      ORDER BY v.published_at DESC, v.version DESC LIMIT 1) AS latest_published_version_id \
     FROM rating.plans t";

/// Inserts a plan unless its code exists (see [`create_meter`] for replays).
pub async fn create_plan(
    connection: &mut PgConnection,
    id: &PlanId,
    attributes: &PlanAttributes,
    now: DateTime<Utc>,
) -> Result<Created<PlanRow>, sqlx::Error> {
    let hash = attributes.definition_hash();
    let inserted = sqlx::query(
        "INSERT INTO rating.plans (id, code, name, description, metadata, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(&attributes.code)
    .bind(&attributes.name)
    .bind(&attributes.description)
    .bind(Json(&attributes.metadata))
    .bind(&hash)
    .bind(now)
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    let row = row_by(
        &mut *connection,
        PLAN_SELECT,
        Lookup::Code(&attributes.code),
    )
    .await?;
    settle(
        connection,
        "rating.plans",
        &attributes.code,
        &hash,
        inserted,
        row,
    )
    .await
}

/// One plan row.
pub async fn plan_row(pool: &PgPool, lookup: Lookup<'_>) -> Result<Option<PlanRow>, sqlx::Error> {
    row_by(pool, PLAN_SELECT, lookup).await
}

/// Up to `limit` plans after code `after`, by code.
pub async fn plan_page(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PlanRow>, sqlx::Error> {
    page_by_code(pool, PLAN_SELECT, after, limit).await
}

/// Locks plan `id` (versions of one plan are numbered one at a time) and
/// returns its display name.
pub async fn lock_plan(
    connection: &mut PgConnection,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM rating.plans WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The display name of plan `id`.
pub async fn plan_name(
    connection: &mut PgConnection,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM rating.plans WHERE id = $1")
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// A stored plan version.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VersionRow {
    /// `pv_…`.
    pub id: String,
    /// `plan_…`.
    pub plan_id: String,
    /// Version number within the plan.
    pub version: i32,
    /// `draft`, `published` or `archived`.
    pub status: String,
    /// The `PlanVersionSpec` as written, protobuf-encoded.
    pub content: Vec<u8>,
    /// Draft revision, from 1.
    pub revision: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Publication time.
    pub published_at: Option<DateTime<Utc>>,
}

const VERSION_COLUMNS: &str =
    "id, plan_id, version, status, content, revision, created_at, updated_at, published_at";

/// A version by the idempotency key that created it, with that request's hash.
pub async fn version_by_key(
    connection: &mut PgConnection,
    idempotency_key: &str,
) -> Result<Option<(VersionRow, Vec<u8>)>, sqlx::Error> {
    let id: Option<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, request_hash FROM rating.plan_versions WHERE idempotency_key = $1",
    )
    .bind(idempotency_key)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((id, hash)) = id else {
        return Ok(None);
    };
    Ok(version(connection, &id, Lock::None)
        .await?
        .map(|row| (row, hash)))
}

/// Whether to lock a row read inside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// `FOR UPDATE`: the caller is about to change the row.
    ForUpdate,
}

/// One version.
pub async fn version(
    connection: &mut PgConnection,
    id: &str,
    lock: Lock,
) -> Result<Option<VersionRow>, sqlx::Error> {
    let suffix = match lock {
        Lock::None => "",
        Lock::ForUpdate => " FOR UPDATE",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM rating.plan_versions WHERE id = $1{suffix}"
    )))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// A new draft, numbered after the plan's last version.
#[derive(Clone, Debug)]
pub struct NewVersion<'a> {
    /// The new version's id.
    pub id: &'a PlanVersionId,
    /// `plan_…` (locked by the caller with [`lock_plan`]).
    pub plan_id: &'a str,
    /// The encoded `PlanVersionSpec`.
    pub content: &'a [u8],
    /// The caller's key.
    pub idempotency_key: &'a str,
    /// Hash of the request.
    pub request_hash: &'a [u8],
    /// Creation time.
    pub now: DateTime<Utc>,
}

/// Inserts a draft; `None` when the idempotency key is taken (by a concurrent call).
pub async fn insert_version(
    connection: &mut PgConnection,
    new: &NewVersion<'_>,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO rating.plan_versions \
         (id, plan_id, version, status, content, idempotency_key, request_hash, created_at, updated_at) \
         SELECT $1, $2, COALESCE(MAX(version), 0) + 1, 'draft', $3, $4, $5, $6, $6 \
         FROM rating.plan_versions WHERE plan_id = $2 \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {VERSION_COLUMNS}"
    )))
    .bind(new.id.as_str())
    .bind(new.plan_id)
    .bind(new.content)
    .bind(new.idempotency_key)
    .bind(new.request_hash)
    .bind(new.now)
    .fetch_optional(connection)
    .await
}

/// Replaces a draft's content and bumps its revision.
pub async fn update_draft(
    connection: &mut PgConnection,
    id: &str,
    content: &[u8],
    now: DateTime<Utc>,
) -> Result<VersionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE rating.plan_versions SET content = $2, revision = revision + 1, updated_at = $3 \
         WHERE id = $1 AND status = 'draft' RETURNING {VERSION_COLUMNS}"
    )))
    .bind(id)
    .bind(content)
    .bind(now)
    .fetch_one(connection)
    .await
}

/// Publishes a draft with its validated domain plan; from now on the
/// database refuses any change to it.
pub async fn publish(
    connection: &mut PgConnection,
    id: &str,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<VersionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE rating.plan_versions \
         SET status = 'published', spec = $2, published_at = $3, updated_at = $3 \
         WHERE id = $1 AND status = 'draft' RETURNING {VERSION_COLUMNS}"
    )))
    .bind(id)
    .bind(Json(plan))
    .bind(now)
    .fetch_one(connection)
    .await
}

/// Up to `limit` versions of `plan_id` below version `before`, newest first,
/// optionally only those in `status`.
pub async fn version_page(
    pool: &PgPool,
    plan_id: &str,
    status: Option<&str>,
    before: Option<i32>,
    limit: i64,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM rating.plan_versions \
         WHERE plan_id = $1 AND ($2::text IS NULL OR status = $2) \
           AND ($3::integer IS NULL OR version < $3) \
         ORDER BY version DESC LIMIT $4"
    )))
    .bind(plan_id)
    .bind(status)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Deletes draft `id` (the database refuses to delete anything else).
pub async fn delete_draft(connection: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM rating.plan_versions WHERE id = $1 AND status = 'draft'")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The status of every version of plan `plan_id`.
pub async fn version_statuses(
    connection: &mut PgConnection,
    plan_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM rating.plan_versions WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_all(connection)
        .await
}

/// Deletes plan `plan_id` and its drafts (the caller checked it has nothing
/// else; the database refuses to delete a published version), answering how
/// many drafts were deleted.
pub async fn delete_plan(connection: &mut PgConnection, plan_id: &str) -> Result<u32, sqlx::Error> {
    let drafts = sqlx::query("DELETE FROM rating.plan_versions WHERE plan_id = $1")
        .bind(plan_id)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM rating.plans WHERE id = $1")
        .bind(plan_id)
        .execute(connection)
        .await?;
    Ok(u32::try_from(drafts).unwrap_or(u32::MAX))
}
