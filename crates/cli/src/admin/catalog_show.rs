//! `tally catalog show [--plan CODE]`: the catalog as rating serves it.
//!
//! Without `--plan`: every meter, and every plan with its latest published
//! version. With `--plan`: that plan's versions (number, status, dates) and
//! the charges of its latest published version, each price summarised.

use clap::Args;
use serde_json::json;
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::price::Model;
use tally_proto::rating::{
    self, Charge, GetPlanRequest, GetPlanVersionRequest, ListMetersRequest,
    ListPlanVersionsRequest, ListPlansRequest, PlanVersionSpec, PlanVersionStatus,
    get_plan_request,
};

use super::table::Table;
use super::{
    Authenticated, Call as _, Output, Target, all_pages, connect, format_money, format_time,
    heading, print_json, short,
};

/// Options of `tally catalog show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Show this plan (by code): its versions and its latest published charges.
    #[arg(long)]
    plan: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Runs `tally catalog show`.
pub async fn run(args: ShowArgs) -> anyhow::Result<()> {
    match &args.plan {
        None => show_all(&args.target).await,
        Some(code) => show_plan(&args.target, code).await,
    }
}

async fn client(target: &Target) -> anyhow::Result<CatalogServiceClient<Authenticated>> {
    Ok(CatalogServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

fn interval_name(spec: &PlanVersionSpec) -> String {
    rating::BillingInterval::try_from(spec.billing_interval).map_or_else(
        |_| "-".to_owned(),
        |interval| short(interval.as_str_name(), "BILLING_INTERVAL_"),
    )
}

async fn show_plan(target: &Target, code: &str) -> anyhow::Result<()> {
    let mut client = client(target).await?;
    let plan = client
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code(code.to_owned())),
        })
        .await
        .answer(&format!("GetPlan {code}"))?
        .plan
        .unwrap_or_default();
    let mut versions = all_pages(async |page_token| {
        let page = client
            .list_plan_versions(ListPlanVersionsRequest {
                plan_id: plan.id.clone(),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .answer("ListPlanVersions")?;
        Ok((page.plan_versions, page.next_page_token))
    })
    .await?;
    versions.sort_by_key(|version| version.version);
    if target.output == Output::Json {
        let mut values = Vec::new();
        for version in &versions {
            values.push(super::json::to_value(
                version,
                "tally.rating.v1.PlanVersion",
            )?);
        }
        return print_json(&json!({
            "plan": super::json::to_value(&plan, "tally.rating.v1.Plan")?,
            "versions": values,
        }));
    }
    Table::fields(&[
        ("plan", format!("{} ({})", plan.code, plan.id)),
        ("name", plan.name.clone()),
        ("description", plan.description.clone()),
    ])
    .print();
    heading("versions");
    let mut table = Table::new(&["version", "status", "id", "created", "published"]);
    for version in &versions {
        table.row(vec![
            version.version.to_string(),
            PlanVersionStatus::try_from(version.status).map_or_else(
                |_| version.status.to_string(),
                |status| short(status.as_str_name(), "PLAN_VERSION_STATUS_"),
            ),
            version.id.clone(),
            format_time(version.created_at.as_ref()),
            format_time(version.published_at.as_ref()),
        ]);
    }
    table.print();
    let Some(latest) = versions
        .iter()
        .find(|version| version.id == plan.latest_published_version_id)
    else {
        return Ok(());
    };
    let spec = latest.spec.clone().unwrap_or_default();
    heading(&format!(
        "charges of version {} ({}, {}, trial {} days)",
        latest.version,
        spec.currency,
        interval_name(&spec),
        spec.trial_days
    ));
    let mut table = Table::new(&["key", "name", "meter", "timing", "price", "included"]);
    for charge in &spec.charges {
        table.row(vec![
            charge.key.clone(),
            charge.name.clone(),
            charge.meter_code.clone(),
            rating::BillingTiming::try_from(charge.billing_timing).map_or_else(
                |_| "-".to_owned(),
                |timing| short(timing.as_str_name(), "BILLING_TIMING_"),
            ),
            price_summary(charge),
            charge
                .included_quantity
                .as_ref()
                .map_or_else(String::new, |quantity| quantity.value.clone()),
        ]);
    }
    table.print();
    Ok(())
}

/// One line describing a charge's price, e.g. `graduated: ≤10000000 × 0.0000021; above × 0.0000009`.
fn price_summary(charge: &Charge) -> String {
    let decimal = |value: Option<&tally_proto::common::Decimal>| {
        value.map_or_else(|| "-".to_owned(), |value| value.value.clone())
    };
    let tiers = |tiers: &[rating::PriceTier]| {
        tiers
            .iter()
            .map(|tier| {
                let bound = tier
                    .up_to
                    .as_ref()
                    .map_or_else(|| "above".to_owned(), |up_to| format!("≤{}", up_to.value));
                let mut text = format!("{bound} × {}", decimal(tier.unit_price.as_ref()));
                if tier.flat_amount.is_some() {
                    text.push_str(&format!(" + {}", format_money(tier.flat_amount.as_ref())));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let Some(model) = charge.price.as_ref().and_then(|price| price.model.as_ref()) else {
        return "-".to_owned();
    };
    match model {
        Model::PerUnit(price) => format!("per unit × {}", decimal(price.unit_price.as_ref())),
        Model::Package(price) => format!(
            "{} per package of {}",
            format_money(price.package_price.as_ref()),
            decimal(price.package_size.as_ref())
        ),
        Model::Graduated(price) => format!("graduated: {}", tiers(&price.tiers)),
        Model::Volume(price) => format!("volume: {}", tiers(&price.tiers)),
        Model::Bulk(price) => format!(
            "bulk: {}",
            price
                .brackets
                .iter()
                .map(|bracket| format!(
                    "{} → {}",
                    bracket
                        .up_to
                        .as_ref()
                        .map_or_else(|| "above".to_owned(), |up_to| format!("≤{}", up_to.value)),
                    format_money(bracket.amount.as_ref())
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Model::Percentage(price) => format!(
            "{}% + {} per event",
            decimal(price.rate_percent.as_ref()),
            format_money(price.fixed_fee_per_event.as_ref())
        ),
        Model::Matrix(price) => {
            let mut cells: Vec<String> = price
                .cells
                .iter()
                .map(|cell| {
                    let mut group: Vec<String> = cell
                        .dimension_values
                        .iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect();
                    group.sort();
                    format!(
                        "{} × {}",
                        group.join(","),
                        decimal(cell.unit_price.as_ref())
                    )
                })
                .collect();
            cells.sort();
            if price.default_unit_price.is_some() {
                cells.push(format!(
                    "other × {}",
                    decimal(price.default_unit_price.as_ref())
                ));
            }
            format!("matrix: {}", cells.join("; "))
        }
        Model::FlatFee(price) => format!("flat fee {}", format_money(price.amount.as_ref())),
    }
}

async fn show_all(target: &Target) -> anyhow::Result<()> {
    let mut client = client(target).await?;
    let meters = all_pages(async |page_token| {
        let page = client
            .list_meters(ListMetersRequest {
                page_size: 100,
                page_token,
            })
            .await
            .answer("ListMeters")?;
        Ok((page.meters, page.next_page_token))
    })
    .await?;
    let plans = all_pages(async |page_token| {
        let page = client
            .list_plans(ListPlansRequest {
                page_size: 100,
                page_token,
            })
            .await
            .answer("ListPlans")?;
        Ok((page.plans, page.next_page_token))
    })
    .await?;
    let mut latest = Vec::new();
    for plan in &plans {
        if plan.latest_published_version_id.is_empty() {
            latest.push(None);
            continue;
        }
        latest.push(
            client
                .get_plan_version(GetPlanVersionRequest {
                    plan_version_id: plan.latest_published_version_id.clone(),
                })
                .await
                .answer(&format!(
                    "GetPlanVersion {}",
                    plan.latest_published_version_id
                ))?
                .plan_version,
        );
    }
    match target.output {
        Output::Json => {
            let mut meter_values = Vec::new();
            for meter in &meters {
                meter_values.push(super::json::to_value(meter, "tally.rating.v1.Meter")?);
            }
            let mut plan_values = Vec::new();
            for (plan, version) in plans.iter().zip(&latest) {
                let mut value = super::json::to_value(plan, "tally.rating.v1.Plan")?;
                if let (Some(object), Some(version)) = (value.as_object_mut(), version) {
                    object.insert(
                        "latestPublishedVersion".into(),
                        super::json::to_value(version, "tally.rating.v1.PlanVersion")?,
                    );
                }
                plan_values.push(value);
            }
            print_json(&json!({"meters": meter_values, "plans": plan_values}))
        }
        Output::Table => {
            let mut table = Table::new(&[
                "meter",
                "aggregation",
                "property",
                "group by",
                "unit",
                "name",
            ]);
            for meter in &meters {
                let aggregation = rating::Aggregation::try_from(meter.aggregation).map_or_else(
                    |_| meter.aggregation.to_string(),
                    |a| short(a.as_str_name(), "AGGREGATION_"),
                );
                table.row(vec![
                    meter.code.clone(),
                    aggregation,
                    meter.property.clone(),
                    meter.group_by.join(","),
                    meter.unit.clone(),
                    meter.name.clone(),
                ]);
            }
            table.print();
            heading("plans");
            let mut table = Table::new(&[
                "plan",
                "name",
                "version",
                "currency",
                "interval",
                "charges",
                "version id",
            ]);
            for (plan, version) in plans.iter().zip(&latest) {
                let (number, currency, interval, charges) = match version {
                    Some(version) => {
                        let spec = version.spec.clone().unwrap_or_default();
                        let interval = interval_name(&spec);
                        let charges: Vec<String> =
                            spec.charges.iter().map(|c| c.key.clone()).collect();
                        (
                            version.version.to_string(),
                            spec.currency,
                            interval,
                            charges.join(","),
                        )
                    }
                    None => (
                        "none published".to_owned(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ),
                };
                table.row(vec![
                    plan.code.clone(),
                    plan.name.clone(),
                    number,
                    currency,
                    interval,
                    charges,
                    plan.latest_published_version_id.clone(),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}
