//! `tally finance retention`: net and gross MRR retention of monthly cohorts
//! (`AnalyticsService.GetRetention`), one row per cohort and month end.

use clap::Args;
use tally_proto::common::TimeRange;
use tally_proto::finance::analytics_service_client::AnalyticsServiceClient;
use tally_proto::finance::{GetRetentionRequest, GetRetentionResponse};

use super::finance_mrr::{percent, shown};
use super::table::Table;
use super::{Call as _, Target, connect, parse_optional_time, parse_time, print_one};

/// `tally finance retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// ISO 4217 currency (no FX conversion), e.g. USD.
    #[arg(long)]
    currency: String,
    /// Cohorts whose month starts at or after this instant (RFC 3339), e.g. 2026-01-01T00:00:00Z.
    #[arg(long)]
    from: String,
    /// … and before this one (RFC 3339, exclusive).
    #[arg(long)]
    to: String,
    /// Measure month ends up to this instant (RFC 3339); default now (the service clock).
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Runs `tally finance retention`.
pub async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let target = &args.target;
    let response = AnalyticsServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    )
    .get_retention(GetRetentionRequest {
        currency: args.currency.clone(),
        cohorts: Some(TimeRange {
            start_time: Some(parse_time("--from", &args.from)?),
            end_time: Some(parse_time("--to", &args.to)?),
        }),
        as_of: parse_optional_time("--at", args.at.as_deref())?,
    })
    .await
    .answer("GetRetention")?;
    print_one(
        target.output,
        &response,
        "tally.finance.v1.GetRetentionResponse",
        print_retention,
    )
}

/// `2026-01` from a month's first instant.
fn month(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0))
        .map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m").to_string())
}

fn print_retention(response: &GetRetentionResponse) {
    let mut table = Table::new(&[
        "COHORT",
        "CUSTOMERS",
        "STARTING MRR",
        "MONTH",
        "+",
        "RETAINED",
        "MRR",
        "NET",
        "GROSS",
    ]);
    for cohort in &response.cohorts {
        for measured in &cohort.months {
            table.row(vec![
                month(cohort.month.as_ref()),
                cohort.customers.to_string(),
                shown(cohort.starting_mrr.as_ref()),
                month(measured.month.as_ref()),
                measured.offset.to_string(),
                measured.retained_customers.to_string(),
                shown(measured.mrr.as_ref()),
                percent(measured.net_retention.as_ref()),
                percent(measured.gross_retention.as_ref()),
            ]);
        }
    }
    table.print();
}
