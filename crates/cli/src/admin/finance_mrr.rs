//! `tally finance mrr` and `tally finance movements`: revenue analytics
//! (`AnalyticsService`) in the currency asked for. Tables round amounts
//! half-even to its minor units and show churn rates as percentages; `--output json`
//! prints the responses as sent (movements at full precision).

use clap::Args;
use tally_proto::common::{Decimal, Money, TimeRange};
use tally_proto::finance::analytics_service_client::AnalyticsServiceClient;
use tally_proto::finance::{
    GetMrrRequest, GetMrrResponse, ListMrrMovementsRequest, ListMrrMovementsResponse, MovementKind,
};

use super::table::Table;
use super::{
    Authenticated, Call as _, Target, connect, format_time, parse_optional_time, parse_time,
    print_one,
};

/// `tally finance mrr`.
#[derive(Debug, Args)]
pub struct MrrArgs {
    /// ISO 4217 currency (no FX conversion), e.g. USD.
    #[arg(long)]
    currency: String,
    /// The instant (RFC 3339); default now (the service clock).
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `tally finance movements`.
#[derive(Debug, Args)]
pub struct MovementsArgs {
    /// ISO 4217 currency, e.g. USD.
    #[arg(long)]
    currency: String,
    /// Start of the range (RFC 3339, inclusive), e.g. 2026-11-01T00:00:00Z.
    #[arg(long)]
    from: String,
    /// End of the range (RFC 3339, exclusive).
    #[arg(long)]
    to: String,
    #[command(flatten)]
    target: Target,
}

async fn client(target: &Target) -> anyhow::Result<AnalyticsServiceClient<Authenticated>> {
    Ok(AnalyticsServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Runs `tally finance mrr`.
pub async fn mrr(args: MrrArgs) -> anyhow::Result<()> {
    let response = client(&args.target)
        .await?
        .get_mrr(GetMrrRequest {
            currency: args.currency,
            as_of: parse_optional_time("--at", args.at.as_deref())?,
        })
        .await
        .answer("GetMrr")?;
    print_one(
        args.target.output,
        &response,
        "tally.finance.v1.GetMrrResponse",
        print_mrr,
    )
}

fn print_mrr(response: &GetMrrResponse) {
    let mut table = Table::new(&["CURRENCY", "MRR", "ARR", "PAYING CUSTOMERS", "ARPA"]);
    table.row(vec![
        response.currency.clone(),
        shown(response.mrr.as_ref()),
        shown(response.arr.as_ref()),
        response.paying_customers.to_string(),
        shown(response.arpa.as_ref()),
    ]);
    table.print();
}

/// Runs `tally finance movements`.
pub async fn movements(args: MovementsArgs) -> anyhow::Result<()> {
    let range = TimeRange {
        start_time: Some(parse_time("--from", &args.from)?),
        end_time: Some(parse_time("--to", &args.to)?),
    };
    let response = client(&args.target)
        .await?
        .list_mrr_movements(ListMrrMovementsRequest {
            currency: args.currency,
            range: Some(range),
        })
        .await
        .answer("ListMrrMovements")?;
    print_one(
        args.target.output,
        &response,
        "tally.finance.v1.ListMrrMovementsResponse",
        print_movements,
    )
}

fn kind_name(kind: i32) -> &'static str {
    match MovementKind::try_from(kind) {
        Ok(MovementKind::New) => "new",
        Ok(MovementKind::Expansion) => "expansion",
        Ok(MovementKind::Contraction) => "contraction",
        Ok(MovementKind::Churn) => "churn",
        Ok(MovementKind::Reactivation) => "reactivation",
        Ok(MovementKind::Unspecified) | Err(_) => "?",
    }
}

fn print_movements(response: &ListMrrMovementsResponse) {
    let mut table = Table::new(&["OCCURRED", "CUSTOMER", "KIND", "FROM", "TO", "CHANGE"]);
    for movement in &response.movements {
        table.row(vec![
            format_time(movement.occurred_at.as_ref()),
            movement.customer_id.clone(),
            kind_name(movement.kind).to_owned(),
            shown(movement.from_mrr.as_ref()),
            shown(movement.to_mrr.as_ref()),
            shown(movement.change.as_ref()),
        ]);
    }
    table.print();
    let mut summary = Table::new(&["", ""]);
    for (label, value) in [
        ("starting MRR", shown(response.starting_mrr.as_ref())),
        ("new", shown(response.new_mrr.as_ref())),
        ("expansion", shown(response.expansion_mrr.as_ref())),
        ("reactivation", shown(response.reactivation_mrr.as_ref())),
        ("contraction", shown(response.contraction_mrr.as_ref())),
        ("churn", shown(response.churned_mrr.as_ref())),
        ("ending MRR", shown(response.ending_mrr.as_ref())),
        (
            "gross MRR churn",
            percent(response.gross_mrr_churn_rate.as_ref()),
        ),
        (
            "net MRR churn",
            percent(response.net_mrr_churn_rate.as_ref()),
        ),
        ("quick ratio", ratio(response.quick_ratio.as_ref())),
    ] {
        summary.row(vec![label.to_owned(), value]);
    }
    summary.print();
}

/// An amount rounded half-even to its currency's minor units (the currency
/// was asked for); the text as sent when it cannot be read.
pub(super) fn shown(money: Option<&Money>) -> String {
    let Some(money) = money else {
        return "-".to_owned();
    };
    match tally_proto::convert::money(Some(money), "amount") {
        Ok(value) => {
            let places = value.currency().minor_units();
            let mut amount = value.amount().round_dp(places);
            amount.rescale(places);
            amount.to_string()
        }
        Err(_) => money.amount.clone(),
    }
}

/// A fraction as a percentage with two decimals (half-even), e.g. `20.00 %`.
pub(super) fn percent(value: Option<&Decimal>) -> String {
    let Some(value) = value else {
        return "-".to_owned();
    };
    let (Ok(fraction), Ok(hundred)) = (
        tally_proto::convert::decimal(&value.value),
        tally_proto::convert::decimal("100"),
    ) else {
        return value.value.clone();
    };
    let mut shown = (fraction * hundred).round_dp(2);
    shown.rescale(2);
    format!("{shown} %")
}

/// A ratio with two decimals (half-even).
fn ratio(value: Option<&Decimal>) -> String {
    let Some(value) = value else {
        return "-".to_owned();
    };
    match tally_proto::convert::decimal(&value.value) {
        Ok(ratio) => {
            let mut shown = ratio.round_dp(2);
            shown.rescale(2);
            shown.to_string()
        }
        Err(_) => value.value.clone(),
    }
}
