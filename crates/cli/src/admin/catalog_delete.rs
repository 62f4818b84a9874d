//! `tally catalog delete-draft` and `tally catalog delete-plan`: what was never
//! published can be deleted (a failed apply's draft, a plan code taken by
//! mistake); published versions never can.

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::{
    self, DeleteDraftPlanVersionRequest, DeletePlanRequest, GetPlanRequest,
    ListPlanVersionsRequest, PlanVersionStatus, get_plan_request,
};

use super::{Authenticated, Call as _, Output, Target, connect, print_json, usage};

type Client = CatalogServiceClient<Authenticated>;

/// Options of `tally catalog delete-draft`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["plan_version_id", "plan"])))]
pub struct DeleteDraftArgs {
    /// The draft version, `pv_…`.
    plan_version_id: Option<String>,
    /// Every draft of this plan (code or `plan_…` id).
    #[arg(long)]
    plan: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally catalog delete-plan`.
#[derive(Debug, Args)]
pub struct DeletePlanArgs {
    /// The plan: its code or `plan_…` id.
    plan: String,
    #[command(flatten)]
    target: Target,
}

#[allow(clippy::print_stdout)]
pub(super) async fn delete_draft(args: DeleteDraftArgs) -> anyhow::Result<()> {
    let target = &args.target;
    let mut client = CatalogServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    );
    let ids = match (&args.plan_version_id, &args.plan) {
        (Some(id), _) => vec![id.clone()],
        (None, Some(plan)) => {
            let plan_id = plan_of(&mut client, plan).await?.id;
            let mut ids = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_plan_versions(ListPlanVersionsRequest {
                        plan_id: plan_id.clone(),
                        status: PlanVersionStatus::Draft as i32,
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .answer(&format!("ListPlanVersions {plan}"))?;
                ids.extend(page.plan_versions.into_iter().map(|version| version.id));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            ids
        }
        (None, None) => return Err(usage("give a draft version id or --plan")),
    };
    let mut deleted = Vec::new();
    for id in ids {
        let version = client
            .delete_draft_plan_version(DeleteDraftPlanVersionRequest {
                plan_version_id: id.clone(),
            })
            .await
            .answer(&format!("DeleteDraftPlanVersion {id}"))?
            .plan_version
            .unwrap_or_default();
        deleted.push(version);
    }
    match target.output {
        Output::Json => print_json(&serde_json::Value::Array(
            deleted
                .iter()
                .map(|version| {
                    json!({"planVersionId": version.id, "planId": version.plan_id, "version": version.version})
                })
                .collect(),
        )),
        Output::Table => {
            if deleted.is_empty() {
                println!("no drafts to delete");
            }
            for version in deleted {
                println!(
                    "deleted draft {} (version {} of {})",
                    version.id, version.version, version.plan_id
                );
            }
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)]
pub(super) async fn delete_plan(args: DeletePlanArgs) -> anyhow::Result<()> {
    let target = &args.target;
    let mut client = CatalogServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    );
    let plan = plan_of(&mut client, &args.plan).await?;
    let answer = client
        .delete_plan(DeletePlanRequest {
            plan_id: plan.id.clone(),
        })
        .await
        .answer(&format!("DeletePlan {}", args.plan))?;
    match target.output {
        Output::Json => print_json(&json!({
            "planId": plan.id,
            "code": plan.code,
            "deletedDrafts": answer.deleted_drafts,
        })),
        Output::Table => {
            println!(
                "deleted plan {} ({}) and {} draft(s); its code is free again",
                plan.code, plan.id, answer.deleted_drafts
            );
            Ok(())
        }
    }
}

/// A plan by code or, when no plan has that code, by `plan_…` id (a code may
/// start with `plan_` too).
async fn plan_of(client: &mut Client, plan: &str) -> anyhow::Result<rating::Plan> {
    let by_code = client
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code(plan.to_owned())),
        })
        .await;
    let found = match by_code {
        Err(status) if status.code() == tonic::Code::NotFound && plan.starts_with("plan_") => {
            client
                .get_plan(GetPlanRequest {
                    lookup: Some(get_plan_request::Lookup::PlanId(plan.to_owned())),
                })
                .await
        }
        other => other,
    };
    found
        .answer(&format!("GetPlan {plan}"))?
        .plan
        .context("GetPlan answered without a plan")
}
