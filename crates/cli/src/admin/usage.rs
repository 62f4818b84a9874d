//! `tally usage show|cost|unrated` over rating's `RatingService`: what a
//! customer used in the current period (`GetUsage`, every accepted event,
//! rated or not), what it costs so far (`GetCurrentCost`), and the accepted
//! usage rating holds back, with the reason and what to do
//! (`ListUnratedUsage`).

use clap::{Args, Subcommand, ValueEnum};
use tally_proto::common::TimeRange;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::{GetCustomerRequest, get_customer_request};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::{
    GetCurrentCostRequest, GetCurrentCostResponse, GetUsageRequest, ListMetersRequest,
    ListUnratedUsageRequest, UnratedReason, UnratedUsage, UsageCharge,
};

use super::table::Table;
use super::{
    Authenticated, Call as _, Output, Target, all_pages, connect, format_money, format_range,
    format_time, heading, parse_optional_time, print_json, print_many, print_one, short, usage,
};

/// `tally usage …`.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// A customer's usage per meter in the current billing period (every
    /// accepted event, rated or not), or between --from and --to.
    Show(ShowArgs),
    /// The live cost of the customer's open billing periods, charge by charge
    /// (usage only: `tally invoices upcoming` adds fees and credits).
    Cost(CostArgs),
    /// Accepted usage that is not billed (yet), with the reason and what to do.
    Unrated(UnratedArgs),
}

/// Options of `tally usage show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The customer: `cus_…` or the external id.
    #[arg(long)]
    customer: String,
    /// Only this subscription's current period (`sub_…`).
    #[arg(long)]
    subscription: Option<String>,
    /// Only these meters (repeatable); by default every meter with usage.
    #[arg(long = "meter")]
    meters: Vec<String>,
    /// Split by these event properties (each must be a group-by of the meter).
    #[arg(long = "group-by")]
    group_by: Vec<String>,
    /// Start of the range (RFC 3339) instead of the current period's; needs --to.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (RFC 3339); needs --from.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally usage cost`.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// The customer: `cus_…` or the external id.
    #[arg(long)]
    customer: String,
    /// Only this subscription (`sub_…`).
    #[arg(long)]
    subscription: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally usage unrated`.
#[derive(Debug, Args)]
pub struct UnratedArgs {
    /// Only this customer: `cus_…` or the external id.
    #[arg(long)]
    customer: Option<String>,
    /// Only this reason.
    #[arg(long, value_enum)]
    reason: Option<Reason>,
    /// At most this many events (oldest first); the total is always printed.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    target: Target,
}

/// Why accepted usage is not rated.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Reason {
    /// No subscription of the customer was ever seen by rating.
    UnknownCustomer,
    /// No subscription covers the event's timestamp.
    NoSubscription,
    /// The plan has no charge for the event type.
    NoMatchingCharge,
    /// The meter's property is missing or not a decimal.
    InvalidProperty,
    /// A matrix price has no cell for the event's group values.
    NoMatchingPrice,
    /// The event would take an aggregate or a line out of range.
    OutOfRange,
}

impl Reason {
    fn wire(self) -> UnratedReason {
        match self {
            Self::UnknownCustomer => UnratedReason::UnknownCustomer,
            Self::NoSubscription => UnratedReason::NoSubscription,
            Self::NoMatchingCharge => UnratedReason::NoMatchingCharge,
            Self::InvalidProperty => UnratedReason::InvalidProperty,
            Self::NoMatchingPrice => UnratedReason::NoMatchingPrice,
            Self::OutOfRange => UnratedReason::OutOfRange,
        }
    }
}

/// Runs `tally usage`.
pub async fn run(command: UsageCommand) -> anyhow::Result<()> {
    match command {
        UsageCommand::Show(args) => show(args).await,
        UsageCommand::Cost(args) => cost(args).await,
        UsageCommand::Unrated(args) => unrated(args).await,
    }
}

async fn channel(target: &Target) -> anyhow::Result<Authenticated> {
    connect(&target.address, &target.api_key, target.ca_file.as_deref()).await
}

/// The customer id of `given`: a `cus_…` id as is, anything else looked up
/// as an external id.
pub async fn customer_id(channel: &Authenticated, given: &str) -> anyhow::Result<String> {
    if given.starts_with("cus_") {
        return Ok(given.to_owned());
    }
    let customer = CustomerServiceClient::new(channel.clone())
        .get_customer(GetCustomerRequest {
            lookup: Some(get_customer_request::Lookup::ExternalId(given.to_owned())),
        })
        .await
        .answer(&format!("GetCustomer (external id {given})"))?
        .customer
        .unwrap_or_default();
    Ok(customer.id)
}

async fn current_cost(
    channel: &Authenticated,
    customer_id: &str,
    subscription: Option<&str>,
) -> anyhow::Result<GetCurrentCostResponse> {
    RatingServiceClient::new(channel.clone())
        .get_current_cost(GetCurrentCostRequest {
            customer_id: customer_id.to_owned(),
            subscription_id: subscription.unwrap_or_default().to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| {
            let error = super::refused(&format!("GetCurrentCost {customer_id}"), &status);
            if status.code() == tonic::Code::NotFound {
                error.context(format!(
                    "{customer_id} has no subscription known to rating, so no open period \
                     (`tally subscriptions create`; `tally usage show --from … --to …` shows usage of any range)"
                ))
            } else {
                error
            }
        })
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let ranges: Vec<TimeRange> = match (args.from.as_deref(), args.to.as_deref()) {
        (Some(from), Some(to)) => vec![TimeRange {
            start_time: parse_optional_time("--from", Some(from))?,
            end_time: parse_optional_time("--to", Some(to))?,
        }],
        (None, None) => Vec::new(),
        _ => return Err(usage("--from and --to go together")),
    };
    let channel = channel(&args.target).await?;
    let customer = customer_id(&channel, &args.customer).await?;
    let ranges = if ranges.is_empty() {
        let mut periods: Vec<TimeRange> = Vec::new();
        let costs = current_cost(&channel, &customer, args.subscription.as_deref()).await?;
        for cost in costs.costs {
            if let Some(period) = cost.period
                && !periods.contains(&period)
            {
                periods.push(period);
            }
        }
        periods
    } else {
        ranges
    };
    let chosen = !args.meters.is_empty();
    let meters = if chosen {
        args.meters.clone()
    } else {
        let mut catalog = CatalogServiceClient::new(channel.clone());
        all_pages(async |page_token| {
            let page = catalog
                .list_meters(ListMetersRequest {
                    page_size: 1000,
                    page_token,
                })
                .await
                .answer("ListMeters")?;
            Ok((
                page.meters.into_iter().map(|meter| meter.code).collect(),
                page.next_page_token,
            ))
        })
        .await?
    };
    let mut rating = RatingServiceClient::new(channel);
    let mut json = Vec::new();
    let mut table = Table::new(&["meter", "group", "period", "quantity", "events"]);
    for range in &ranges {
        for meter in &meters {
            let answer = rating
                .get_usage(GetUsageRequest {
                    customer_id: customer.clone(),
                    time_range: Some(*range),
                    meter_code: meter.clone(),
                    group_by: args.group_by.clone(),
                    bucket_size: None,
                })
                .await
                .answer(&format!("GetUsage {meter}"))?;
            let used = answer.values.iter().any(|value| value.event_count > 0);
            if !chosen && !used {
                continue; // every meter of the catalog is asked: show those with usage
            }
            for value in &answer.values {
                table.row(vec![
                    meter.clone(),
                    group(&value.group),
                    format_range(value.time_range.as_ref()),
                    decimal(value.quantity.as_ref()),
                    value.event_count.to_string(),
                ]);
            }
            if args.target.output == Output::Json {
                let mut value = super::json::to_value(&answer, "tally.rating.v1.GetUsageResponse")?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("meterCode".into(), meter.clone().into());
                    object.insert(
                        "timeRange".into(),
                        super::json::to_value(range, "tally.common.v1.TimeRange")?,
                    );
                }
                json.push(value);
            }
        }
    }
    match args.target.output {
        Output::Json => print_json(&serde_json::Value::Array(json)),
        Output::Table => {
            if table.is_empty() {
                print_line(&format!(
                    "no usage for {customer} in {}",
                    ranges
                        .iter()
                        .map(|range| format_range(Some(range)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else {
                table.print();
            }
            Ok(())
        }
    }
}

async fn cost(args: CostArgs) -> anyhow::Result<()> {
    let channel = channel(&args.target).await?;
    let customer = customer_id(&channel, &args.customer).await?;
    let costs = current_cost(&channel, &customer, args.subscription.as_deref()).await?;
    print_one(
        args.target.output,
        &costs,
        "tally.rating.v1.GetCurrentCostResponse",
        |costs| {
            for (index, cost) in costs.costs.iter().enumerate() {
                if index > 0 {
                    print_line("");
                }
                Table::fields(&[
                    ("subscription", cost.subscription_id.clone()),
                    ("period", format_range(cost.period.as_ref())),
                    ("usage so far", format_money(cost.usage_total.as_ref())),
                ])
                .print();
                heading("charges");
                charges_table(&cost.charges).print();
            }
            print_line(&format!(
                "\ncomputed at {} (usage only: `tally invoices upcoming` adds fees and credits)",
                format_time(costs.computed_at.as_ref())
            ));
        },
    )
}

fn charges_table(charges: &[UsageCharge]) -> Table {
    let mut table = Table::new(&[
        "charge", "meter", "group", "quantity", "billable", "events", "amount",
    ]);
    for charge in charges {
        table.row(vec![
            charge.charge_key.clone(),
            charge.meter_code.clone(),
            group(&charge.group),
            decimal(charge.quantity.as_ref()),
            decimal(charge.billable_quantity.as_ref()),
            charge.event_count.to_string(),
            format_money(charge.amount.as_ref()),
        ]);
    }
    table
}

async fn unrated(args: UnratedArgs) -> anyhow::Result<()> {
    let channel = channel(&args.target).await?;
    let customer = match &args.customer {
        Some(given) => customer_id(&channel, given).await?,
        None => String::new(),
    };
    let mut rating = RatingServiceClient::new(channel);
    let mut listed: Vec<UnratedUsage> = Vec::new();
    let mut page_token = String::new();
    let total = loop {
        let page_size = args.limit.saturating_sub(listed.len()).clamp(1, 1000);
        let page = rating
            .list_unrated_usage(ListUnratedUsageRequest {
                customer_id: customer.clone(),
                reason: args.reason.map_or(0, |reason| reason.wire() as i32),
                page_size: i32::try_from(page_size).unwrap_or(1000),
                page_token,
            })
            .await
            .answer("ListUnratedUsage")?;
        listed.extend(page.unrated_usage);
        if page.next_page_token.is_empty() || listed.len() >= args.limit {
            break page.total_count;
        }
        page_token = page.next_page_token;
    };
    listed.truncate(args.limit);
    print_many(
        args.target.output,
        &listed,
        "tally.rating.v1.UnratedUsage",
        |listed| {
            if total == 0 {
                print_line("no unrated usage: every accepted event rating has seen is billed");
                return;
            }
            unrated_table(listed).print();
            print_line(&format!("\n{} of {total} unrated events", listed.len()));
            for hint in hints(listed.iter().map(|event| event.reason)) {
                print_line(&hint);
            }
        },
    )
}

/// Unrated events as a table: event, customer, type, time, reason, detail.
pub fn unrated_table(listed: &[UnratedUsage]) -> Table {
    let mut table = Table::new(&["event", "customer", "type", "timestamp", "reason", "detail"]);
    for event in listed {
        table.row(vec![
            event.event_id.clone(),
            event.customer_id.clone(),
            event.event_type.clone(),
            format_time(event.timestamp.as_ref()),
            reason_name(event.reason),
            event.detail.clone(),
        ]);
    }
    table
}

/// What to do, once per reason among `reasons`: `reason: hint` lines.
pub fn hints(reasons: impl Iterator<Item = i32>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    reasons
        .filter(|reason| seen.insert(*reason))
        .map(|reason| format!("{}: {}", reason_name(reason), reason_hint(reason)))
        .collect()
}

/// An unrated reason's name without its prefix, e.g. `no subscription`.
pub fn reason_name(reason: i32) -> String {
    UnratedReason::try_from(reason).map_or_else(
        |_| reason.to_string(),
        |reason| short(reason.as_str_name(), "UNRATED_REASON_").replace('_', " "),
    )
}

/// What an operator can do about a reason.
fn reason_hint(reason: i32) -> &'static str {
    match UnratedReason::try_from(reason) {
        Ok(UnratedReason::UnknownCustomer) => {
            "the customer has no subscription: create one covering the events' time \
             (`tally subscriptions create --start-at …`) and they are rated then"
        }
        Ok(UnratedReason::NoSubscription) => {
            "no subscription covers the event's time: check the timestamp, or backdate a \
             subscription (`--start-at`) and they are rated then"
        }
        Ok(UnratedReason::NoMatchingCharge) => {
            "the plan has no charge for this event type: check its spelling, or add a charge \
             with this meter (`tally catalog apply`)"
        }
        Ok(UnratedReason::InvalidProperty) => {
            "the meter's property is missing or not a decimal: send a corrected event with a new id"
        }
        Ok(UnratedReason::NoMatchingPrice) => {
            "the matrix price has no cell for these values: add the cell or a default price"
        }
        Ok(UnratedReason::OutOfRange) => {
            "the value would take a total out of range: correct the usage with a new event"
        }
        Ok(UnratedReason::Unspecified) | Err(_) => "see the detail",
    }
}

fn group(values: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = values
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".to_owned()
    } else {
        pairs.join(",")
    }
}

fn decimal(value: Option<&tally_proto::common::Decimal>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.value.clone())
}

#[allow(clippy::print_stdout)]
fn print_line(text: &str) {
    println!("{text}");
}
