//! `tally catalog apply|show`: declarative meters and plans against rating's
//! `CatalogService`.
//!
//! `apply` compares the file with the catalog and prints one row per meter and
//! plan: `new`, `new version` (the spec differs from the latest published
//! version), `unchanged`, or `conflict` (something the catalog never changes:
//! a meter's definition, a plan's name, description or metadata). With a
//! conflict nothing is written. Otherwise it creates what is missing, and a
//! changed plan gets a new version: draft → validate → publish. A published
//! version is never touched, so running the same file twice changes nothing.
//!
//! Before writing anything, and as all of `--dry-run`, rating validates the
//! whole change (`ValidateCatalogChanges`: the rules of CreateMeter,
//! CreatePlan and PublishPlanVersion, with the file's new meters), so a dry
//! run fails exactly where the apply would and an invalid file leaves nothing
//! behind. `delete-draft` and `delete-plan` remove what was never published
//! (e.g. left by an apply that failed before this check existed).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::{
    self, CreatePlanVersionRequest, GetMeterRequest, GetPlanRequest, GetPlanVersionRequest,
    PlanChange, PlanVersionSpec, PublishPlanVersionRequest, ValidateCatalogChangesRequest,
    ValidatePlanVersionRequest, create_plan_version_request, get_meter_request, get_plan_request,
};

use super::catalog_delete::{DeleteDraftArgs, DeletePlanArgs, delete_draft, delete_plan};
use super::catalog_file::{CatalogFile, MeterEntry, PlanEntry};
use super::table::Table;
use super::{Authenticated, Call as _, Output, Target, connect, print_json, usage};

/// `tally catalog …`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Creates the file's missing meters and plans and publishes changed plans as new versions.
    Apply(ApplyArgs),
    /// Lists meters and plans with their latest published version; `--plan` shows one plan.
    Show(super::catalog_show::ShowArgs),
    /// Deletes draft plan versions (never published): one by id, or every draft of `--plan`.
    DeleteDraft(DeleteDraftArgs),
    /// Deletes a plan that never had a version published, with its drafts, freeing its code.
    DeletePlan(DeletePlanArgs),
}

/// Options of `tally catalog apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The catalog file (YAML, format in docs/operations.md); `-` reads stdin.
    #[arg(long, short)]
    file: PathBuf,
    /// Print what would change and write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

type Client = CatalogServiceClient<Authenticated>;

/// Runs `tally catalog`.
pub async fn run(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Apply(args) => apply(args).await,
        CatalogCommand::Show(args) => super::catalog_show::run(args).await,
        CatalogCommand::DeleteDraft(args) => delete_draft(args).await,
        CatalogCommand::DeletePlan(args) => delete_plan(args).await,
    }
}

/// What `apply` does (or would do) to one entry.
#[derive(Debug)]
enum Change {
    New,
    NewVersion { replaces: Option<u32> },
    Unchanged { version: Option<u32> },
    Conflict(String),
}

/// One row of the diff, filled in as it is applied.
#[derive(Debug)]
struct Row {
    kind: &'static str,
    code: String,
    change: Change,
    version: Option<u32>,
    plan_version_id: String,
}

async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let file = read_file(&args.file)?;
    apply_file(&file, &args.target, args.dry_run).await
}

/// Applies a catalog given as YAML text (`tally dev --demo` applies its own
/// price book this way), printing the rows as `apply` does.
pub async fn apply_text(yaml: &str, target: &Target) -> anyhow::Result<()> {
    let file: CatalogFile = serde_norway::from_str(yaml)
        .map_err(|error| usage(format!("not a valid catalog file: {error}")))?;
    apply_file(&file, target, false).await
}

async fn apply_file(file: &CatalogFile, target: &Target, dry_run: bool) -> anyhow::Result<()> {
    for (kind, codes) in [
        (
            "meter",
            file.meters.iter().map(|m| &m.code).collect::<Vec<_>>(),
        ),
        ("plan", file.plans.iter().map(|p| &p.code).collect()),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(repeated) = codes.into_iter().find(|code| !seen.insert(*code)) {
            return Err(usage(format!(
                "{kind} {repeated} appears twice in the file"
            )));
        }
    }
    let mut specs = Vec::new();
    for plan in &file.plans {
        specs.push(plan.version.spec(&plan.code).map_err(usage)?);
    }
    let mut client = CatalogServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    );

    let mut rows = Vec::new();
    for meter in &file.meters {
        rows.push(meter_change(&mut client, meter).await?);
    }
    let mut plan_ids = Vec::new();
    for (plan, spec) in file.plans.iter().zip(&specs) {
        let (row, plan_id) = plan_change(&mut client, plan, spec).await?;
        rows.push(row);
        plan_ids.push(plan_id);
    }
    let conflicts = rows
        .iter()
        .filter(|row| matches!(row.change, Change::Conflict(_)))
        .count();
    if conflicts > 0 {
        print_rows(target.output, &rows, true)?;
        anyhow::bail!(
            "{conflicts} conflicting entries: nothing was applied (meters and a plan's identity never change; give a new code)"
        );
    }
    let invalid = validate_changes(&mut client, file, &specs, &rows).await?;
    if !invalid.is_empty() || dry_run {
        print_rows(target.output, &rows, true)?;
        anyhow::ensure!(invalid.is_empty(), "{invalid}");
        return Ok(());
    }

    let (meter_rows, plan_rows) = rows.split_at_mut(file.meters.len());
    for (row, meter) in meter_rows.iter_mut().zip(&file.meters) {
        if matches!(row.change, Change::New) {
            client
                .create_meter(meter.request())
                .await
                .answer(&format!("CreateMeter {}", meter.code))?;
        }
    }
    for (((row, plan), spec), plan_id) in plan_rows
        .iter_mut()
        .zip(&file.plans)
        .zip(specs)
        .zip(plan_ids)
    {
        let plan_id = match plan_id {
            Some(plan_id) => plan_id,
            None => {
                client
                    .create_plan(plan.request())
                    .await
                    .answer(&format!("CreatePlan {}", plan.code))?
                    .plan
                    .context("CreatePlan answered without a plan")?
                    .id
            }
        };
        if matches!(row.change, Change::New | Change::NewVersion { .. }) {
            let base = match row.change {
                Change::NewVersion { replaces } => replaces.unwrap_or(0),
                _ => 0,
            };
            let published = publish(&mut client, &plan.code, &plan_id, base, spec).await?;
            row.version = Some(published.version);
            row.plan_version_id = published.id;
        }
    }
    print_rows(target.output, &rows, false)
}

/// Asks rating to validate every meter the file would create and every plan
/// version it would publish, as the apply itself would (nothing is written);
/// answers the violations as text, empty when the change is valid.
async fn validate_changes(
    client: &mut Client,
    file: &CatalogFile,
    specs: &[PlanVersionSpec],
    rows: &[Row],
) -> anyhow::Result<String> {
    let (meter_rows, plan_rows) = rows.split_at(file.meters.len());
    let meters: Vec<_> = file
        .meters
        .iter()
        .zip(meter_rows)
        .filter(|(_, row)| matches!(row.change, Change::New))
        .map(|(meter, _)| meter.request())
        .collect();
    let plans: Vec<_> = file
        .plans
        .iter()
        .zip(specs)
        .zip(plan_rows)
        .filter(|(_, row)| matches!(row.change, Change::New | Change::NewVersion { .. }))
        .map(|((plan, spec), _)| PlanChange {
            plan: Some(plan.request()),
            spec: Some(spec.clone()),
        })
        .collect();
    if meters.is_empty() && plans.is_empty() {
        return Ok(String::new());
    }
    let names: Vec<String> = meters
        .iter()
        .map(|meter| format!("meter {}", meter.code))
        .collect();
    let plan_names: Vec<String> = plans
        .iter()
        .map(|change| {
            format!(
                "plan {}",
                change.plan.as_ref().map_or("", |plan| &plan.code)
            )
        })
        .collect();
    let answer = client
        .validate_catalog_changes(ValidateCatalogChangesRequest { meters, plans })
        .await
        .answer("ValidateCatalogChanges")?;
    if answer.valid {
        return Ok(String::new());
    }
    let mut text = format!(
        "{} violations: nothing was applied",
        answer.violations.len()
    );
    for violation in answer.violations {
        // `plans[1].spec…` names the entry: say which one.
        let entry = entry_of(&violation.field, "meters[", &names)
            .or_else(|| entry_of(&violation.field, "plans[", &plan_names));
        text.push_str(&format!(
            "\n  {}{}: {} ({})",
            entry.map(|name| format!("{name}: ")).unwrap_or_default(),
            violation.field,
            violation.rule,
            violation.description
        ));
    }
    Ok(text)
}

/// The name of the entry a violation's `field` path starts in (`plans[1]…`).
fn entry_of<'a>(field: &str, prefix: &str, names: &'a [String]) -> Option<&'a String> {
    let index: usize = field
        .strip_prefix(prefix)?
        .split(']')
        .next()?
        .parse()
        .ok()?;
    names.get(index)
}

fn read_file(path: &PathBuf) -> anyhow::Result<CatalogFile> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|error| usage(format!("cannot read stdin: {error}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|error| usage(format!("cannot read {}: {error}", path.display())))?
    };
    let name = if path.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    serde_norway::from_str(&text)
        .map_err(|error| usage(format!("{name} is not a valid catalog file: {error}")))
}

async fn meter_change(client: &mut Client, meter: &MeterEntry) -> anyhow::Result<Row> {
    let wanted = meter.request();
    let found = client
        .get_meter(GetMeterRequest {
            lookup: Some(get_meter_request::Lookup::Code(meter.code.clone())),
        })
        .await;
    let change = match found {
        Err(status) if status.code() == tonic::Code::NotFound => Change::New,
        Err(status) => return Err(super::refused(&format!("GetMeter {}", meter.code), &status)),
        Ok(response) => {
            let existing = response.into_inner().meter.unwrap_or_default();
            let existing = rating::CreateMeterRequest {
                code: existing.code,
                name: existing.name,
                description: existing.description,
                aggregation: existing.aggregation,
                property: existing.property,
                filters: existing.filters,
                group_by: existing.group_by,
                unit: existing.unit,
            };
            let differing = meter_differences(&existing, &wanted);
            if differing.is_empty() {
                Change::Unchanged { version: None }
            } else {
                Change::Conflict(format!(
                    "meters are immutable; differs in {}",
                    differing.join(", ")
                ))
            }
        }
    };
    Ok(Row {
        kind: "meter",
        code: meter.code.clone(),
        change,
        version: None,
        plan_version_id: String::new(),
    })
}

fn meter_differences(
    existing: &rating::CreateMeterRequest,
    wanted: &rating::CreateMeterRequest,
) -> Vec<&'static str> {
    let checks = [
        ("name", existing.name == wanted.name),
        ("description", existing.description == wanted.description),
        ("aggregation", existing.aggregation == wanted.aggregation),
        ("property", existing.property == wanted.property),
        ("filters", existing.filters == wanted.filters),
        ("group_by", existing.group_by == wanted.group_by),
        ("unit", existing.unit == wanted.unit),
    ];
    checks
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}

async fn plan_change(
    client: &mut Client,
    plan: &PlanEntry,
    spec: &PlanVersionSpec,
) -> anyhow::Result<(Row, Option<String>)> {
    let mut row = Row {
        kind: "plan",
        code: plan.code.clone(),
        change: Change::New,
        version: None,
        plan_version_id: String::new(),
    };
    let found = client
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code(plan.code.clone())),
        })
        .await;
    let existing = match found {
        Err(status) if status.code() == tonic::Code::NotFound => return Ok((row, None)),
        Err(status) => return Err(super::refused(&format!("GetPlan {}", plan.code), &status)),
        Ok(response) => response.into_inner().plan.unwrap_or_default(),
    };
    let wanted = plan.request();
    let mut differing = Vec::new();
    if existing.name != wanted.name {
        differing.push("name");
    }
    if existing.description != wanted.description {
        differing.push("description");
    }
    if existing.metadata != wanted.metadata {
        differing.push("metadata");
    }
    if !differing.is_empty() {
        row.change = Change::Conflict(format!(
            "a plan's {} cannot change (only its versions do)",
            differing.join(", ")
        ));
        return Ok((row, Some(existing.id)));
    }
    if existing.latest_published_version_id.is_empty() {
        row.change = Change::NewVersion { replaces: None };
        return Ok((row, Some(existing.id)));
    }
    let latest = client
        .get_plan_version(GetPlanVersionRequest {
            plan_version_id: existing.latest_published_version_id.clone(),
        })
        .await
        .answer(&format!(
            "GetPlanVersion {}",
            existing.latest_published_version_id
        ))?
        .plan_version
        .unwrap_or_default();
    row.change = if latest.spec.as_ref() == Some(spec) {
        row.version = Some(latest.version);
        row.plan_version_id = latest.id;
        Change::Unchanged {
            version: Some(latest.version),
        }
    } else {
        Change::NewVersion {
            replaces: Some(latest.version),
        }
    };
    Ok((row, Some(existing.id)))
}

/// Creates a draft of `spec`, validates and publishes it. The idempotency key
/// names the plan, the version it replaces and the spec, so a run interrupted
/// after the draft was created finishes that draft instead of adding another,
/// while going back to an earlier spec later still makes a new version.
async fn publish(
    client: &mut Client,
    plan_code: &str,
    plan_id: &str,
    replaces: u32,
    spec: PlanVersionSpec,
) -> anyhow::Result<rating::PlanVersion> {
    let mut canonical = spec.clone();
    for charge in &mut canonical.charges {
        if let Some(rating::Price {
            model: Some(rating::price::Model::Matrix(matrix)),
        }) = &mut charge.price
        {
            // Protobuf maps encode in hash order: hash the cells sorted.
            for cell in &mut matrix.cells {
                cell.dimension_values.clear();
            }
        }
    }
    let mut digest = Sha256::new();
    digest.update(prost::Message::encode_to_vec(&canonical));
    for charge in &spec.charges {
        if let Some(rating::Price {
            model: Some(rating::price::Model::Matrix(matrix)),
        }) = &charge.price
        {
            for cell in &matrix.cells {
                let mut pairs: Vec<_> = cell.dimension_values.iter().collect();
                pairs.sort();
                digest.update(format!("{pairs:?}"));
            }
        }
    }
    let hash: String = digest
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let draft = client
        .create_plan_version(CreatePlanVersionRequest {
            idempotency_key: format!("catalog-apply:{plan_id}:after-v{replaces}:{hash}"),
            plan_id: plan_id.to_owned(),
            source: Some(create_plan_version_request::Source::Spec(spec)),
        })
        .await
        .answer(&format!("CreatePlanVersion for {plan_code}"))?
        .plan_version
        .context("CreatePlanVersion answered without a version")?;
    let validation = client
        .validate_plan_version(ValidatePlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .answer(&format!("ValidatePlanVersion {}", draft.id))?;
    if !validation.valid {
        let mut text = format!(
            "plan {plan_code}: the new version is invalid; it stays a draft ({}, version {}) and nothing was published:",
            draft.id, draft.version
        );
        for violation in validation.violations {
            text.push_str(&format!(
                "\n  {}: {} ({})",
                violation.field, violation.rule, violation.description
            ));
        }
        anyhow::bail!(text);
    }
    client
        .publish_plan_version(PublishPlanVersionRequest {
            plan_version_id: draft.id.clone(),
        })
        .await
        .answer(&format!("PublishPlanVersion {}", draft.id))?
        .plan_version
        .context("PublishPlanVersion answered without a version")
}

fn print_rows(output: Output, rows: &[Row], planned_only: bool) -> anyhow::Result<()> {
    let described: Vec<(&str, String)> = rows
        .iter()
        .map(|row| match &row.change {
            Change::New if row.kind == "meter" => (
                "new",
                if planned_only {
                    "would be created"
                } else {
                    "created"
                }
                .to_owned(),
            ),
            Change::New => (
                "new",
                match row.version {
                    Some(version) => format!(
                        "created; version {version} published ({})",
                        row.plan_version_id
                    ),
                    None => "would be created with version 1".to_owned(),
                },
            ),
            Change::NewVersion { replaces } => (
                "new version",
                match (row.version, replaces) {
                    (Some(version), _) => {
                        format!("version {version} published ({})", row.plan_version_id)
                    }
                    (None, Some(replaces)) => format!("would replace version {replaces}"),
                    (None, None) => "would publish its first version".to_owned(),
                },
            ),
            Change::Unchanged {
                version: Some(version),
            } => (
                "unchanged",
                format!("version {version} ({})", row.plan_version_id),
            ),
            Change::Unchanged { version: None } => ("unchanged", String::new()),
            Change::Conflict(reason) => ("conflict", reason.clone()),
        })
        .collect();
    match output {
        Output::Json => print_json(&serde_json::Value::Array(
            rows.iter()
                .zip(&described)
                .map(|(row, (change, detail))| {
                    json!({
                        "kind": row.kind,
                        "code": row.code,
                        "change": change,
                        "detail": detail,
                        "applied": !planned_only,
                        "version": row.version,
                        "planVersionId": (!row.plan_version_id.is_empty()).then_some(&row.plan_version_id),
                    })
                })
                .collect(),
        )),
        Output::Table => {
            let mut table = Table::new(&["kind", "code", "change", "detail"]);
            for (row, (change, detail)) in rows.iter().zip(described) {
                table.row(vec![row.kind.to_owned(), row.code.clone(), change.to_owned(), detail]);
            }
            table.print();
            Ok(())
        }
    }
}
