//! `tally subscriptions create|list|show|change-plan|cancel|pause|resume` over invoicing's
//! `SubscriptionService`.
//!
//! Every change carries an idempotency key: `--idempotency-key` when given
//! (retrying the same command is then safe), else a fresh one per run.

use clap::{Args, Subcommand, ValueEnum};
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    CancelSubscriptionRequest, ChangePlanRequest, ChangeTiming, CreateSubscriptionRequest,
    GetSubscriptionRequest, ListSubscriptionsRequest, PauseSubscriptionRequest, PauseWindow,
    ProrationPolicy, ResumeSubscriptionRequest, Subscription, SubscriptionStatus,
};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::{GetPlanRequest, get_plan_request};

use super::table::Table;
use super::{
    Call as _, Output, Target, all_pages, connect, format_range, format_time, heading,
    idempotency_key, parse_metadata, parse_optional_time, print_many, print_one, short, usage,
};

/// `tally subscriptions …`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Subscribes a customer to a published plan version.
    Create(CreateArgs),
    /// Lists subscriptions, of one customer or plan if given.
    List {
        /// Only this customer's (`cus_…` or the external id).
        #[arg(long)]
        customer: Option<String>,
        /// Only subscriptions on this plan (`plan_…`).
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Shows a subscription with its phases.
    Show {
        /// `sub_…`.
        subscription: String,
        #[command(flatten)]
        target: Target,
    },
    /// Moves a subscription to another published plan version.
    ChangePlan(ChangeArgs),
    /// Cancels a subscription now, at the period's end or at an instant.
    Cancel(CancelArgs),
    /// Pauses a subscription (no recurring fees, usage not billed) now or at
    /// an instant, until `resume` or `--resume-at`.
    Pause(PauseArgs),
    /// Resumes a paused subscription now or at an instant, or withdraws a
    /// scheduled cancellation.
    Resume(ResumeArgs),
}

/// Options of `tally subscriptions pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// `sub_…`.
    subscription: String,
    /// When the pause starts (RFC 3339; default: now on the service's clock).
    #[arg(long)]
    at: Option<String>,
    /// When it resumes by itself (RFC 3339; default: not until `resume`).
    #[arg(long)]
    resume_at: Option<String>,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally subscriptions resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// `sub_…`.
    subscription: String,
    /// When it resumes (RFC 3339; default: now on the service's clock).
    #[arg(long)]
    at: Option<String>,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally subscriptions create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The customer: `cus_…`, or the external id.
    #[arg(long)]
    customer: String,
    #[command(flatten)]
    plan: PlanChoice,
    /// When it starts (RFC 3339; default: now on the service's clock).
    #[arg(long)]
    start_at: Option<String>,
    /// The billing anchor (RFC 3339; default: the start).
    #[arg(long)]
    billing_anchor_at: Option<String>,
    /// Trial days, overriding the plan's.
    #[arg(long)]
    trial_days: Option<u32>,
    /// Metadata, key=value (repeatable).
    #[arg(long)]
    metadata: Vec<String>,
    /// Negotiated contract terms: a YAML file shaped as a quote file's `terms:` (the
    /// domain's terms spec: base, added_charges, removed_charges, ramp,
    /// invoicing_threshold; docs/operations.md, "Contract terms").
    #[arg(long, value_name = "FILE")]
    terms: Option<std::path::PathBuf>,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    catalog: CatalogAddress,
    #[command(flatten)]
    target: Target,
}

/// Which plan version: given, or the latest published version of a plan.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PlanChoice {
    /// A published plan version, `pv_…` (`tally catalog show` lists them).
    #[arg(long)]
    plan_version: Option<String>,
    /// A plan's code: its latest published version, read from rating's catalog
    /// (at --catalog-address, else --address).
    #[arg(long)]
    plan: Option<String>,
}

/// Where rating's catalog is served, for `--plan`.
#[derive(Debug, Args)]
pub struct CatalogAddress {
    /// Rating's gRPC address for `--plan` (default: --address, as `tally dev` serves all).
    #[arg(long)]
    catalog_address: Option<String>,
}

impl PlanChoice {
    /// The plan version id: `--plan-version`, or the latest published version of `--plan`.
    async fn resolve(&self, catalog: &CatalogAddress, target: &Target) -> anyhow::Result<String> {
        if let Some(version) = &self.plan_version {
            return Ok(version.clone());
        }
        let code = self.plan.clone().unwrap_or_default();
        let address = catalog
            .catalog_address
            .as_deref()
            .unwrap_or(&target.address);
        latest_published_version(&code, address, target).await
    }
}

/// The wire terms of the `--terms` file, with the amounts of its prices in the plan
/// version's currency (read from rating's catalog). The service checks them against the
/// plan version and names a broken term by its path.
async fn terms_of(
    path: &std::path::Path,
    plan_version_id: &str,
    catalog: &CatalogAddress,
    target: &Target,
) -> anyhow::Result<tally_proto::invoicing::SubscriptionTerms> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|error| usage(format!("--terms {shown}: {error}")))?;
    let file: super::quote_file::TermsFile = serde_norway::from_str(&text)
        .map_err(|error| usage(format!("--terms {shown} is not a terms file: {error}")))?;
    let address = catalog
        .catalog_address
        .as_deref()
        .unwrap_or(&target.address);
    let version = CatalogServiceClient::new(
        connect(address, &target.api_key, target.ca_file.as_deref()).await?,
    )
    .get_plan_version(tally_proto::rating::GetPlanVersionRequest {
        plan_version_id: plan_version_id.to_owned(),
    })
    .await
    .answer(&format!(
        "GetPlanVersion {plan_version_id} (rating's catalog at {address})"
    ))?
    .plan_version
    .unwrap_or_default();
    let code = version.spec.map(|spec| spec.currency).unwrap_or_default();
    let currency = tally_domain::money::Currency::from_code(&code).map_err(|_| {
        anyhow::anyhow!("plan version {plan_version_id} has no currency in rating's answer")
    })?;
    // The contract start is the subscription's: the wire terms do not carry it.
    file.wire(currency, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
}

/// The latest published version of the plan `code`, read from rating's catalog at
/// `address`.
pub(super) async fn latest_published_version(
    code: &str,
    address: &str,
    target: &Target,
) -> anyhow::Result<String> {
    let plan = CatalogServiceClient::new(
        connect(address, &target.api_key, target.ca_file.as_deref()).await?,
    )
    .get_plan(GetPlanRequest {
        lookup: Some(get_plan_request::Lookup::Code(code.to_owned())),
    })
    .await
    .answer(&format!("GetPlan {code} (rating's catalog at {address})"))?
    .plan
    .unwrap_or_default();
    anyhow::ensure!(
        !plan.latest_published_version_id.is_empty(),
        "plan {code} has no published version yet: publish one with `tally catalog apply`"
    );
    Ok(plan.latest_published_version_id)
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Timing {
    /// Now (on the service's clock).
    Immediately,
    /// At the end of the current billing period.
    AtPeriodEnd,
    /// At `--at`.
    AtTime,
}

/// How the period's fees are split at the change.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Proration {
    /// By the second.
    Prorate,
    /// By whole days.
    ProrateByDay,
    /// No proration.
    None,
}

/// When and how a change applies.
#[derive(Debug, Args)]
pub struct Change {
    /// When the change takes effect.
    #[arg(long, value_enum, default_value_t = Timing::Immediately)]
    timing: Timing,
    /// The instant, with `--timing at-time` (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// Proration of the fees (default: the service's policy).
    #[arg(long, value_enum)]
    proration: Option<Proration>,
    /// Makes a retry of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Options of `tally subscriptions change-plan`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// `sub_…`.
    subscription: String,
    /// Why (kept in the audit log).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    plan: PlanChoice,
    #[command(flatten)]
    change: Change,
    #[command(flatten)]
    catalog: CatalogAddress,
    #[command(flatten)]
    target: Target,
}

/// Options of `tally subscriptions cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// `sub_…`.
    subscription: String,
    /// Why (kept on the subscription).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    change: Change,
    #[command(flatten)]
    target: Target,
}

impl Change {
    fn wire(
        &self,
    ) -> anyhow::Result<(
        String,
        ChangeTiming,
        Option<prost_types::Timestamp>,
        ProrationPolicy,
    )> {
        let timing = match self.timing {
            Timing::Immediately => ChangeTiming::Immediately,
            Timing::AtPeriodEnd => ChangeTiming::AtPeriodEnd,
            Timing::AtTime => ChangeTiming::AtTime,
        };
        let at = parse_optional_time("--at", self.at.as_deref())?;
        if matches!(self.timing, Timing::AtTime) != at.is_some() {
            return Err(usage("--at goes with --timing at-time, and only with it"));
        }
        let proration = match self.proration {
            None => ProrationPolicy::Unspecified,
            Some(Proration::Prorate) => ProrationPolicy::Prorate,
            Some(Proration::ProrateByDay) => ProrationPolicy::ProrateByDay,
            Some(Proration::None) => ProrationPolicy::None,
        };
        Ok((
            idempotency_key(self.idempotency_key.as_deref(), "subscription-change"),
            timing,
            at,
            proration,
        ))
    }
}

type Client = SubscriptionServiceClient<super::Authenticated>;

/// Runs `tally subscriptions`.
pub async fn run(command: SubscriptionsCommand) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::Create(args) => {
            let customer_id = customer_id_of(&args.target, &args.customer).await?;
            let plan_version_id = args.plan.resolve(&args.catalog, &args.target).await?;
            let terms = match &args.terms {
                Some(path) => {
                    Some(terms_of(path, &plan_version_id, &args.catalog, &args.target).await?)
                }
                None => None,
            };
            let request = CreateSubscriptionRequest {
                idempotency_key: idempotency_key(
                    args.idempotency_key.as_deref(),
                    "subscription-create",
                ),
                customer_id,
                plan_version_id,
                start_at: parse_optional_time("--start-at", args.start_at.as_deref())?,
                billing_anchor_at: parse_optional_time(
                    "--billing-anchor-at",
                    args.billing_anchor_at.as_deref(),
                )?,
                trial_days: args.trial_days,
                metadata: parse_metadata(&args.metadata)?,
                terms,
            };
            let created = client(&args.target)
                .await?
                .create_subscription(request)
                .await
                .answer("CreateSubscription")?
                .subscription
                .unwrap_or_default();
            print_subscription(args.target.output, &created)
        }
        SubscriptionsCommand::List {
            customer,
            plan,
            target,
        } => {
            let customer_id = match &customer {
                Some(customer) => customer_id_of(&target, customer).await?,
                None => String::new(),
            };
            let subscriptions =
                list_subscriptions(&target, &customer_id, plan.as_deref().unwrap_or_default())
                    .await?;
            print_many(
                target.output,
                &subscriptions,
                "tally.invoicing.v1.Subscription",
                |subscriptions| subscriptions_table(subscriptions).print(),
            )
        }
        SubscriptionsCommand::Show {
            subscription,
            target,
        } => {
            let found = client(&target)
                .await?
                .get_subscription(GetSubscriptionRequest {
                    subscription_id: subscription.clone(),
                })
                .await
                .answer(&format!("GetSubscription {subscription}"))?
                .subscription
                .unwrap_or_default();
            print_subscription(target.output, &found)
        }
        SubscriptionsCommand::ChangePlan(args) => {
            let (key, timing, at, proration) = args.change.wire()?;
            let changed = client(&args.target)
                .await?
                .change_plan(ChangePlanRequest {
                    idempotency_key: key,
                    subscription_id: args.subscription.clone(),
                    plan_version_id: args.plan.resolve(&args.catalog, &args.target).await?,
                    timing: timing as i32,
                    effective_at: at,
                    proration_policy: proration as i32,
                    reason: args.reason.clone(),
                })
                .await
                .answer(&format!("ChangePlan {}", args.subscription))?
                .subscription
                .unwrap_or_default();
            print_subscription(args.target.output, &changed)
        }
        SubscriptionsCommand::Cancel(args) => {
            let (key, timing, at, proration) = args.change.wire()?;
            let canceled = client(&args.target)
                .await?
                .cancel_subscription(CancelSubscriptionRequest {
                    idempotency_key: key,
                    subscription_id: args.subscription.clone(),
                    timing: timing as i32,
                    effective_at: at,
                    proration_policy: proration as i32,
                    reason: args.reason.clone(),
                })
                .await
                .answer(&format!("CancelSubscription {}", args.subscription))?
                .subscription
                .unwrap_or_default();
            print_subscription(args.target.output, &canceled)
        }
        SubscriptionsCommand::Pause(args) => {
            let request = PauseSubscriptionRequest {
                idempotency_key: idempotency_key(
                    args.idempotency_key.as_deref(),
                    "subscription-pause",
                ),
                subscription_id: args.subscription.clone(),
                pause_at: parse_optional_time("--at", args.at.as_deref())?,
                resume_at: parse_optional_time("--resume-at", args.resume_at.as_deref())?,
            };
            let paused = client(&args.target)
                .await?
                .pause_subscription(request)
                .await
                .answer(&format!("PauseSubscription {}", args.subscription))?
                .subscription
                .unwrap_or_default();
            print_subscription(args.target.output, &paused)
        }
        SubscriptionsCommand::Resume(args) => {
            let request = ResumeSubscriptionRequest {
                idempotency_key: idempotency_key(
                    args.idempotency_key.as_deref(),
                    "subscription-resume",
                ),
                subscription_id: args.subscription.clone(),
                resume_at: parse_optional_time("--at", args.at.as_deref())?,
            };
            let resumed = client(&args.target)
                .await?
                .resume_subscription(request)
                .await
                .answer(&format!("ResumeSubscription {}", args.subscription))?
                .subscription
                .unwrap_or_default();
            print_subscription(args.target.output, &resumed)
        }
    }
}

/// Every subscription, of one customer and/or plan when not empty.
pub async fn list_subscriptions(
    target: &Target,
    customer_id: &str,
    plan_id: &str,
) -> anyhow::Result<Vec<Subscription>> {
    let mut client = client(target).await?;
    all_pages(async |page_token| {
        let page = client
            .list_subscriptions(ListSubscriptionsRequest {
                customer_id: customer_id.to_owned(),
                plan_id: plan_id.to_owned(),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .answer("ListSubscriptions")?;
        Ok((page.subscriptions, page.next_page_token))
    })
    .await
}

/// A `cus_…` id as is; anything else looked up as an external id.
pub(super) async fn customer_id_of(target: &Target, customer: &str) -> anyhow::Result<String> {
    if customer.starts_with("cus_") {
        return Ok(customer.to_owned());
    }
    let channel = connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?;
    super::usage::customer_id(&channel, customer).await
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(SubscriptionServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

fn status_name(subscription: &Subscription) -> String {
    SubscriptionStatus::try_from(subscription.status).map_or_else(
        |_| subscription.status.to_string(),
        |status| short(status.as_str_name(), "SUBSCRIPTION_STATUS_"),
    )
}

/// One row per subscription.
pub fn subscriptions_table(subscriptions: &[Subscription]) -> Table {
    let mut table = Table::new(&[
        "id",
        "customer",
        "status",
        "plan version",
        "current period",
        "cancel at",
    ]);
    for subscription in subscriptions {
        table.row(vec![
            subscription.id.clone(),
            subscription.customer_id.clone(),
            status_name(subscription),
            subscription.plan_version_id.clone(),
            format_range(subscription.current_period.as_ref()),
            format_time(subscription.cancel_at.as_ref()),
        ]);
    }
    table
}

/// A pause window as `start → end`, `start → (until resumed)`, or `-`.
fn format_pause(pause: Option<&PauseWindow>) -> String {
    pause.map_or_else(
        || "-".to_owned(),
        |pause| {
            let until = pause.resume_at.as_ref().map_or_else(
                || "(until resumed)".to_owned(),
                |resume_at| format_time(Some(resume_at)),
            );
            format!("{} → {until}", format_time(pause.pause_at.as_ref()))
        },
    )
}

fn print_subscription(output: Output, subscription: &Subscription) -> anyhow::Result<()> {
    print_one(
        output,
        subscription,
        "tally.invoicing.v1.Subscription",
        |subscription| {
            Table::fields(&[
                ("id", subscription.id.clone()),
                ("customer", subscription.customer_id.clone()),
                ("status", status_name(subscription)),
                ("plan", subscription.plan_id.clone()),
                ("plan version", subscription.plan_version_id.clone()),
                ("currency", subscription.currency.clone()),
                ("start", format_time(subscription.start_at.as_ref())),
                (
                    "billing anchor",
                    format_time(subscription.billing_anchor_at.as_ref()),
                ),
                ("trial end", format_time(subscription.trial_end_at.as_ref())),
                (
                    "current period",
                    format_range(subscription.current_period.as_ref()),
                ),
                ("cancel at", format_time(subscription.cancel_at.as_ref())),
                ("ended", format_time(subscription.ended_at.as_ref())),
                ("pause", format_pause(subscription.pause.as_ref())),
                ("version", subscription.version.to_string()),
            ])
            .print();
            heading("phases");
            let mut phases = Table::new(&["plan version", "start", "end", "proration"]);
            for phase in &subscription.phases {
                phases.row(vec![
                    phase.plan_version_id.clone(),
                    format_time(phase.start_at.as_ref()),
                    format_time(phase.end_at.as_ref()),
                    ProrationPolicy::try_from(phase.proration_policy).map_or_else(
                        |_| "-".to_owned(),
                        |policy| short(policy.as_str_name(), "PRORATION_POLICY_"),
                    ),
                ]);
            }
            phases.print();
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::quote_file::TermsFile;

    #[test]
    fn the_documented_terms_file_reads_into_wire_terms() {
        let file: TermsFile = serde_norway::from_str(include_str!("terms_example.yaml")).unwrap();
        let terms = file
            .wire(
                tally_domain::money::Currency::USD,
                chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(terms.overrides.len(), 1);
        assert_eq!(terms.overrides[0].charge_key, "input_tokens");
        assert_eq!(terms.discounts[0].name, "Launch discount");
        assert_eq!(terms.usage_discounts[0].meter_code, "input_tokens");
        assert_eq!(terms.ramp.len(), 2);
        assert_eq!(
            terms.ramp[1]
                .minimum
                .as_ref()
                .map(|minimum| minimum.amount.as_str()),
            Some("20000.00")
        );
    }
}
