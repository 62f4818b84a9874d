//! `tally migrate status|shadow|compare|cutover|rollback --customer …`:
//! the billing system of record over connectors' `MigrationService`
//! (docs/migrations.md). A cutover writes its evidence bundle (JSON + CSV)
//! to `--evidence-dir`.

use clap::Args;
use tally_proto::connectors::migration_service_client::MigrationServiceClient;
use tally_proto::connectors::{
    BillingSystem, BillingSystemChange, BillingSystemChanged, ComparePeriodRequest, CutoverRequest,
    GetMigrationStatusRequest, ParityReport, RollbackRequest, StartShadowRequest,
};

use crate::admin::table::Table;
use crate::admin::{
    Authenticated, Call as _, Target, connect, format_time, parse_time, print_one, short,
};

/// Whose record to read.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The Tally customer, `cus_…`.
    #[arg(long)]
    customer: String,
    #[command(flatten)]
    target: Target,
}

/// A change of a customer's billing system of record.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The Tally customer, `cus_…`.
    #[arg(long)]
    customer: String,
    /// Why (kept in connectors' audit chain).
    #[arg(long, default_value = "")]
    reason: String,
    /// Decide and print; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where a cutover writes `<customer>-cutover.json` and `.csv`.
    #[arg(long)]
    evidence_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// A parity comparison.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The Tally customer, `cus_…`.
    #[arg(long)]
    customer: String,
    /// The boundary ending the period (RFC 3339); default: the start of the current period.
    #[arg(long)]
    period_end: Option<String>,
    /// Compare, store nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

/// Which change.
#[derive(Debug, Clone, Copy)]
pub enum Move {
    /// external or rolled_back → shadow.
    Shadow,
    /// shadow → cutover.
    Cutover,
    /// shadow or cutover → rolled_back.
    Rollback,
}

async fn client(target: &Target) -> anyhow::Result<MigrationServiceClient<Authenticated>> {
    Ok(MigrationServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// `tally migrate status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let response = client(&args.target)
        .await?
        .get_migration_status(GetMigrationStatusRequest {
            customer_id: args.customer.clone(),
        })
        .await
        .answer("GetMigrationStatus")?;
    print_one(
        args.target.output,
        &response,
        "tally.connectors.v1.GetMigrationStatusResponse",
        |status| {
            print_system(&args.customer, status.billing_system.as_ref());
            print_reports(&status.reports);
        },
    )
}

/// `tally migrate compare`.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let period_end = match &args.period_end {
        Some(text) => Some(parse_time("--period-end", text)?),
        None => None,
    };
    let response = client(&args.target)
        .await?
        .compare_period(ComparePeriodRequest {
            customer_id: args.customer,
            period_end,
            dry_run: args.dry_run,
        })
        .await
        .answer("ComparePeriod")?;
    print_one(
        args.target.output,
        &response,
        "tally.connectors.v1.ComparePeriodResponse",
        |response| print_reports(response.report.as_slice()),
    )
}

/// `tally migrate shadow|cutover|rollback`.
pub async fn change(kind: Move, args: ChangeArgs) -> anyhow::Result<()> {
    let change = Some(BillingSystemChange {
        customer_id: args.customer.clone(),
        reason: args.reason,
        dry_run: args.dry_run,
    });
    let mut client = client(&args.target).await?;
    let result = match kind {
        Move::Shadow => {
            let request = StartShadowRequest { change };
            client
                .start_shadow(request)
                .await
                .answer("StartShadow")?
                .result
        }
        Move::Cutover => {
            let request = CutoverRequest { change };
            client.cutover(request).await.answer("Cutover")?.result
        }
        Move::Rollback => {
            let request = RollbackRequest { change };
            client.rollback(request).await.answer("Rollback")?.result
        }
    };
    let response: BillingSystemChanged = result.unwrap_or_default();
    if let Some(directory) = &args.evidence_dir
        && !response.evidence_json.is_empty()
    {
        std::fs::create_dir_all(directory)?;
        let stem = directory.join(format!("{}-cutover", args.customer));
        std::fs::write(stem.with_extension("json"), &response.evidence_json)?;
        std::fs::write(stem.with_extension("csv"), &response.evidence_csv)?;
    }
    print_one(
        args.target.output,
        &response,
        "tally.connectors.v1.BillingSystemChanged",
        |response| {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{}{} → {}",
                    if response.dry_run { "(dry run) " } else { "" },
                    response
                        .before
                        .as_ref()
                        .map_or("not enrolled".to_owned(), state),
                    response.after.as_ref().map_or("-".to_owned(), state),
                );
            }
        },
    )
}

fn state(system: &BillingSystem) -> String {
    short(system.state().as_str_name(), "BILLING_SYSTEM_STATE_").to_lowercase()
}

#[allow(clippy::print_stdout)]
fn print_system(customer: &str, system: Option<&BillingSystem>) {
    let Some(system) = system else {
        println!("{customer}: not enrolled (the external biller bills)");
        return;
    };
    let table = Table::fields(&[
        ("customer", system.customer_id.clone()),
        ("biller", system.biller.clone()),
        ("state", state(system)),
        ("cutover at", format_time(system.cutover_at.as_ref())),
        ("version", system.version.to_string()),
        ("updated", format_time(system.updated_at.as_ref())),
    ]);
    print!("{}", table.render());
}

#[allow(clippy::print_stdout)]
fn print_reports(reports: &[ParityReport]) {
    let mut table = Table::new(&[
        "period end",
        "subject",
        "tally",
        "external",
        "difference",
        "matches",
        "note",
    ]);
    for report in reports {
        let end = format_time(
            report
                .period
                .as_ref()
                .and_then(|period| period.end_time.as_ref()),
        );
        for finding in &report.findings {
            table.row(vec![
                end.clone(),
                finding.subject.clone(),
                finding.tally_amount.clone(),
                finding.external_amount.clone(),
                finding.difference.clone(),
                finding.matches.to_string(),
                finding.note.clone(),
            ]);
        }
    }
    print!("{}", table.render());
}
