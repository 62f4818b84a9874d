//! `tally migrate import --from stripe --mapping FILE [--dry-run]`: reads
//! the external billing system's customers, prices and subscriptions,
//! plans the import with the mapping file (`tally_connectors::import`),
//! prints the plan — every customer and subscription it creates, and
//! everything it does not import with the reason — and, without
//! `--dry-run`, creates them through invoicing's gRPC API.
//!
//! Once each: a customer is created by its external id (the source's id,
//! `CreateCustomer` is idempotent by it), a subscription with an
//! idempotency key derived from the source's id, after looking for one the
//! import made before (metadata `source_subscription_id`), so a rerun
//! creates nothing twice. The source is only read; nobody is emailed or
//! charged by the import itself. Every imported customer is to be enrolled
//! in the billing system of record as `external` before any subscription
//! of theirs exists: [`enroll_external`] is that hook (not wired yet).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use tally_connectors::import::ImportSource;
use tally_connectors::import::mapping::MappingFile;
use tally_connectors::import::plan::{
    ImportPlan, PlanContext, PlannedCustomer, PlannedSubscription, TallyPlan, plan,
};
use tally_connectors::stripe_billing::{
    API_KEY_VARIABLE, StripeBilling, StripeBillingKey, StripeBillingSettings,
};
use tally_proto::clock::GetTimeRequest;
use tally_proto::clock::clock_service_client::ClockServiceClient;
use tally_proto::convert;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    CreateCustomerRequest, CreateSubscriptionRequest, GetCustomerRequest, ListSubscriptionsRequest,
    get_customer_request,
};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::{self, GetPlanRequest, GetPlanVersionRequest, get_plan_request};

use crate::admin::{Authenticated, Call as _, Target, all_pages, connect, short, usage};

/// Which system to import from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Orb (not yet: use the Orb mirroring of `tally connectors` meanwhile).
    Orb,
    /// Stripe Billing (`STRIPE_BILLING_API_KEY`).
    Stripe,
}

/// `tally migrate import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The system the customers come from.
    #[arg(long, value_enum)]
    pub from: Source,
    /// The mapping file: source prices → Tally plans and charges (YAML).
    #[arg(long)]
    pub mapping: PathBuf,
    /// Only print what would be created and what would not, and why.
    #[arg(long)]
    pub dry_run: bool,
    /// Stripe's API base URL (a fake in tests).
    #[arg(
        long,
        env = "STRIPE_BILLING_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
    /// Rating's address, for the catalog (default: `--address`).
    #[arg(long, env = "TALLY_CATALOG_ADDRESS")]
    pub catalog_address: Option<String>,
    /// `invoicing.backdate_window_days` of the invoicing the import writes to.
    #[arg(long, default_value_t = 30)]
    pub backdate_window_days: u32,
    #[command(flatten)]
    pub target: Target,
}

/// Runs `tally migrate import`.
#[allow(clippy::print_stdout)]
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.mapping).map_err(|error| {
        usage(format!(
            "cannot read the mapping file {}: {error}",
            args.mapping.display()
        ))
    })?;
    let mapping = MappingFile::parse(&text).map_err(|error| usage(error.to_string()))?;
    let source = source(&args)?;
    let account = source.read_account().await?;
    let catalog = catalog(&args, &mapping).await?;
    let now = service_now(&args.target).await;
    let planned = plan(
        &account,
        &PlanContext {
            source: source.source_name(),
            mapping: &mapping,
            catalog: &catalog,
            now,
            backdate_window_days: args.backdate_window_days,
        },
    );
    print!("{}", planned.describe(source.source_name()));
    if args.dry_run {
        println!("dry run: nothing was created");
        return Ok(());
    }
    let done = Importer::connect(&args.target, source.source_name())
        .await?
        .carry_out(&planned)
        .await?;
    println!(
        "created {} customers ({} existed), {} subscriptions ({} existed)",
        done.customers_created,
        done.customers_existing,
        done.subscriptions_created,
        done.subscriptions_existing
    );
    Ok(())
}

fn source(args: &ImportArgs) -> anyhow::Result<Box<dyn ImportSource>> {
    match args.from {
        Source::Stripe => {
            let key = StripeBillingKey::from_env().ok_or_else(|| {
                usage(format!(
                    "{API_KEY_VARIABLE} is not set: the secret or restricted (read-only) key of the Stripe account to import from"
                ))
            })?;
            let settings = StripeBillingSettings {
                api_base_url: args.stripe_api_base.clone(),
                ..StripeBillingSettings::default()
            };
            Ok(Box::new(StripeBilling::new(settings, &key)?))
        }
        Source::Orb => Err(usage(
            "--from orb is not built yet: Orb customers and subscriptions are mirrored from Tally (tally connectors orb), not imported; see docs/migrations.md",
        )),
    }
}

/// The catalog's plans the mapping names (a plan not in the catalog is
/// absent: the plan reports the subscriptions that need it).
async fn catalog(
    args: &ImportArgs,
    mapping: &MappingFile,
) -> anyhow::Result<BTreeMap<String, TallyPlan>> {
    let address = args
        .catalog_address
        .as_deref()
        .unwrap_or(&args.target.address);
    let mut client = CatalogServiceClient::new(
        connect(
            address,
            &args.target.api_key,
            args.target.ca_file.as_deref(),
        )
        .await?,
    );
    let mut plans = BTreeMap::new();
    for code in mapping.plan_codes() {
        let answer = client
            .get_plan(GetPlanRequest {
                lookup: Some(get_plan_request::Lookup::Code(code.to_owned())),
            })
            .await;
        let plan = match answer {
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            other => other
                .answer(&format!("GetPlan {code}"))?
                .plan
                .unwrap_or_default(),
        };
        let mut found = TallyPlan {
            code: code.to_owned(),
            version_id: plan.latest_published_version_id.clone(),
            currency: String::new(),
            interval: String::new(),
            charge_keys: BTreeSet::new(),
        };
        if !found.version_id.is_empty() {
            let spec = client
                .get_plan_version(GetPlanVersionRequest {
                    plan_version_id: found.version_id.clone(),
                })
                .await
                .answer(&format!("GetPlanVersion {}", found.version_id))?
                .plan_version
                .and_then(|version| version.spec)
                .unwrap_or_default();
            found.currency = spec.currency.clone();
            found.interval = rating::BillingInterval::try_from(spec.billing_interval).map_or_else(
                |_| String::new(),
                |interval| short(interval.as_str_name(), "BILLING_INTERVAL_").to_lowercase(),
            );
            found.charge_keys = spec
                .charges
                .iter()
                .map(|charge| charge.key.clone())
                .collect();
        }
        plans.insert(code.to_owned(), found);
    }
    Ok(plans)
}

/// The service's clock (what backdating is measured against), or this
/// machine's when the key may not read it (`GetTime` needs `admin`).
async fn service_now(target: &Target) -> DateTime<Utc> {
    let answer = async {
        let mut clock = ClockServiceClient::new(
            connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
        );
        clock.get_time(GetTimeRequest {}).await.answer("GetTime")
    }
    .await;
    match answer
        .ok()
        .and_then(|time| convert::instant(time.now.as_ref()))
    {
        Some(now) => now,
        None => {
            eprintln!(
                "note: the service's clock could not be read (GetTime needs an admin key); using this machine's"
            );
            Utc::now()
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
struct Done {
    customers_created: usize,
    customers_existing: usize,
    subscriptions_created: usize,
    subscriptions_existing: usize,
}

struct Importer {
    customers: CustomerServiceClient<Authenticated>,
    subscriptions: SubscriptionServiceClient<Authenticated>,
    source: &'static str,
}

impl Importer {
    async fn connect(target: &Target, source: &'static str) -> anyhow::Result<Self> {
        let channel = connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?;
        Ok(Self {
            customers: CustomerServiceClient::new(channel.clone()),
            subscriptions: SubscriptionServiceClient::new(channel),
            source,
        })
    }

    /// Customers first (then the enrollment hook), then subscriptions.
    #[allow(clippy::print_stdout)]
    async fn carry_out(&mut self, planned: &ImportPlan) -> anyhow::Result<Done> {
        let mut done = Done::default();
        let mut tally_ids = BTreeMap::new();
        for customer in &planned.customers {
            let (id, created) = self.customer(customer).await?;
            if created {
                done.customers_created += 1;
                println!("created customer {} → {id}", customer.source_id);
            } else {
                done.customers_existing += 1;
                println!("customer {} exists: {id}", customer.source_id);
            }
            tally_ids.insert(customer.source_id.as_str(), id);
        }
        let enrolled: Vec<String> = tally_ids.values().cloned().collect();
        enroll_external(&enrolled, self.source)?;
        for subscription in &planned.subscriptions {
            let Some(customer_id) = tally_ids.get(subscription.customer_source_id.as_str()) else {
                continue;
            };
            match self
                .existing_subscription(customer_id, subscription)
                .await?
            {
                Some(id) => {
                    done.subscriptions_existing += 1;
                    println!("subscription {} exists: {id}", subscription.source_id);
                }
                None => {
                    let id = self.create_subscription(customer_id, subscription).await?;
                    done.subscriptions_created += 1;
                    println!("created subscription {} → {id}", subscription.source_id);
                }
            }
        }
        Ok(done)
    }

    /// The customer's Tally id, and whether this call created it.
    async fn customer(&mut self, customer: &PlannedCustomer) -> anyhow::Result<(String, bool)> {
        let request = CreateCustomerRequest {
            external_id: customer.source_id.clone(),
            name: customer.name.clone(),
            billing_email: customer.email.clone(),
            currency: customer.currency.clone(),
            metadata: [
                ("migrated_from".to_owned(), self.source.to_owned()),
                ("source_customer_id".to_owned(), customer.source_id.clone()),
            ]
            .into(),
            ..CreateCustomerRequest::default()
        };
        match self.customers.create_customer(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                Ok((answer.customer.unwrap_or_default().id, answer.created))
            }
            // The external id exists with other attributes (changed in the
            // source since, or made by hand): keep it as it is, and say so.
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                let existing = self
                    .customers
                    .get_customer(GetCustomerRequest {
                        lookup: Some(get_customer_request::Lookup::ExternalId(
                            customer.source_id.clone(),
                        )),
                    })
                    .await
                    .answer("GetCustomer")?
                    .customer
                    .unwrap_or_default();
                eprintln!(
                    "note: customer {} exists as {} with other attributes; kept as it is",
                    customer.source_id, existing.id
                );
                Ok((existing.id, false))
            }
            Err(status) => Err(crate::admin::refused(
                &format!("CreateCustomer {}", customer.source_id),
                &status,
            )),
        }
    }

    /// The subscription an earlier import made from the same source id.
    async fn existing_subscription(
        &mut self,
        customer_id: &str,
        subscription: &PlannedSubscription,
    ) -> anyhow::Result<Option<String>> {
        let client = &mut self.subscriptions;
        let theirs = all_pages(async |page_token| {
            let page = client
                .list_subscriptions(ListSubscriptionsRequest {
                    customer_id: customer_id.to_owned(),
                    page_size: 1000,
                    page_token,
                    ..ListSubscriptionsRequest::default()
                })
                .await
                .answer("ListSubscriptions")?;
            Ok((page.subscriptions, page.next_page_token))
        })
        .await?;
        Ok(theirs
            .into_iter()
            .find(|existing| {
                existing.metadata.get("source_subscription_id") == Some(&subscription.source_id)
            })
            .map(|existing| existing.id))
    }

    async fn create_subscription(
        &mut self,
        customer_id: &str,
        subscription: &PlannedSubscription,
    ) -> anyhow::Result<String> {
        let request = CreateSubscriptionRequest {
            idempotency_key: subscription.idempotency_key.clone(),
            customer_id: customer_id.to_owned(),
            plan_version_id: subscription.plan_version_id.clone(),
            start_at: Some(convert::timestamp(subscription.start_at)),
            billing_anchor_at: subscription.billing_anchor_at.map(convert::timestamp),
            // The source's trial is over by `start_at` (or it starts at its end).
            trial_days: Some(0),
            metadata: subscription.metadata.clone().into_iter().collect(),
            ..CreateSubscriptionRequest::default()
        };
        let created = tokio::time::timeout(
            Duration::from_secs(60),
            self.subscriptions.create_subscription(request),
        )
        .await
        .map_err(|_| anyhow::anyhow!("CreateSubscription {} timed out", subscription.source_id))?
        .answer(&format!("CreateSubscription {}", subscription.source_id))?;
        Ok(created.subscription.unwrap_or_default().id)
    }
}

/// THE HOOK into the billing system of record (issue 19, part A, not
/// wired yet): an imported customer is to be enrolled as `external` — the
/// source keeps billing, invoicing holds every invoice of theirs as a draft —
/// before any of their subscriptions exists in Tally, so that the import
/// never makes Tally bill, email or charge anybody. Until connectors serves
/// that enrollment over gRPC this only says, once per run, what the operator
/// must do before Tally's next bill run.
fn enroll_external(customer_ids: &[String], source: &str) -> anyhow::Result<()> {
    if !customer_ids.is_empty() {
        eprintln!(
            "warning: {} imported customers are not enrolled in the billing system of record yet \
             (the enrollment is not served yet): enroll them as `external` (or start shadow \
             billing) before Tally's next bill run, or Tally bills them as well as {source}",
            customer_ids.len()
        );
    }
    Ok(())
}
