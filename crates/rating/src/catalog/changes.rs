//! Catalog changes checked before they are made, and undone before they are
//! published: `ValidateCatalogChanges` (the dry run of `tally catalog apply`,
//! with the rules of CreateMeter, CreatePlan and PublishPlanVersion),
//! `DeleteDraftPlanVersion` and `DeletePlan` (each deletion audited).

use std::collections::BTreeMap;

use sqlx::PgPool;
use tally_domain::ids::PlanId;
use tally_proto::rating as proto;

use super::audit::{Change, plan_state, version_state};
use super::error::CatalogError;
use super::mapping::{self, PlanIdentity, Rule, Violations};
use super::store::{self, Lock, Lookup, PlanRow, VersionRow};

/// Every violation applying `request` would meet, paths from the request
/// root; nothing is written. `placeholder_plan_id` names the plans that do
/// not exist yet (the domain plan needs an id; it is never stored).
pub async fn validate(
    pool: &PgPool,
    request: &proto::ValidateCatalogChangesRequest,
    placeholder_plan_id: &PlanId,
) -> Result<Violations, CatalogError> {
    let mut violations = Violations::default();
    if request.meters.is_empty() && request.plans.is_empty() {
        violations.add(
            "plans",
            Rule::Required,
            "at least one meter or plan is required",
        );
        return Err(CatalogError::Invalid(violations));
    }
    let mut new_meters = BTreeMap::new();
    for (index, meter) in request.meters.iter().enumerate() {
        match mapping::meter_definition(meter) {
            Ok(definition) => {
                new_meters.insert(meter.code.clone(), definition.meter);
            }
            Err(found) => nest(&mut violations, &format!("meters[{index}]."), &found),
        }
    }
    let mut connection = pool.acquire().await?;
    for (index, change) in request.plans.iter().enumerate() {
        let prefix = format!("plans[{index}].");
        let plan = change.plan.clone().unwrap_or_default();
        if let Err(found) = mapping::plan_attributes(&plan) {
            nest(&mut violations, &format!("{prefix}plan."), &found);
        }
        let Some(spec) = &change.spec else {
            violations.add(format!("{prefix}spec"), Rule::Required, "spec is required");
            continue;
        };
        let existing = store::plan_row(pool, Lookup::Code(&plan.code)).await?;
        let plan_id = match existing {
            Some(row) => match PlanId::parse(&row.id) {
                Ok(plan_id) => plan_id,
                Err(_) => continue,
            },
            None => placeholder_plan_id.clone(),
        };
        let identity = PlanIdentity {
            plan_id,
            version: 1,
            name: plan.name.clone(),
        };
        // The catalog's meters win: a file's meter with an existing code is
        // not created (the CLI reports it as a conflict when it differs).
        let mut meters =
            store::meters_by_code(&mut connection, &mapping::meter_codes(spec)).await?;
        for (code, meter) in &new_meters {
            meters.entry(code.clone()).or_insert_with(|| meter.clone());
        }
        if let Err(found) = mapping::plan(&identity, spec, &meters) {
            nest(&mut violations, &prefix, &found);
        }
    }
    Ok(violations)
}

fn nest(into: &mut Violations, prefix: &str, found: &Violations) {
    for violation in found.iter() {
        into.add(
            format!("{prefix}{}", violation.field),
            violation.rule,
            violation.description.clone(),
        );
    }
}

/// Deletes draft `id`, answering it as it was.
pub async fn delete_draft(
    pool: &PgPool,
    id: &str,
    change: &Change<'_>,
) -> Result<VersionRow, CatalogError> {
    let mut transaction = pool.begin().await?;
    let row = store::version(&mut transaction, id, Lock::ForUpdate)
        .await?
        .ok_or_else(|| CatalogError::not_found("plan version", id))?;
    if row.status != "draft" {
        return Err(CatalogError::FailedPrecondition {
            message: format!(
                "plan version {id} is {}: only drafts can be deleted (published versions are immutable)",
                row.status
            ),
            violations: Violations::default(),
        });
    }
    store::delete_draft(&mut transaction, id).await?;
    let states = (Some(version_state(&row)), None);
    change
        .record(
            &mut transaction,
            "catalog.plan_version.draft_deleted",
            ("plan_version", id),
            states,
        )
        .await?;
    transaction.commit().await?;
    tracing::info!(plan_version_id = %row.id, plan_id = %row.plan_id, version = row.version, "draft plan version deleted");
    Ok(row)
}

/// Deletes plan `id` and its drafts when none of its versions was ever
/// published, answering the plan and how many drafts went with it.
pub async fn delete_plan(
    pool: &PgPool,
    id: &str,
    change: &Change<'_>,
) -> Result<(PlanRow, u32), CatalogError> {
    let mut transaction = pool.begin().await?;
    if store::lock_plan(&mut transaction, id).await?.is_none() {
        return Err(CatalogError::not_found("plan", id));
    }
    let plan = store::plan_row(pool, Lookup::Id(id))
        .await?
        .ok_or_else(|| CatalogError::not_found("plan", id))?;
    let statuses = store::version_statuses(&mut transaction, id).await?;
    if let Some(published) = statuses.iter().find(|status| status.as_str() != "draft") {
        return Err(CatalogError::FailedPrecondition {
            message: format!(
                "plan {} ({id}) has a {published} version: subscriptions and invoices may name it, \
                 so it cannot be deleted (only a plan never published can)",
                plan.code
            ),
            violations: Violations::default(),
        });
    }
    let drafts = store::delete_plan(&mut transaction, id).await?;
    let states = (Some(plan_state(&plan)), None);
    change
        .record(
            &mut transaction,
            "catalog.plan.deleted",
            ("plan", id),
            states,
        )
        .await?;
    transaction.commit().await?;
    tracing::info!(plan_id = %id, code = %plan.code, drafts, "unpublished plan deleted");
    Ok((plan, drafts))
}
