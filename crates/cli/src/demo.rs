//! `tally dev --demo`: a month of an AI-inference platform's billing in
//! under a minute, against the `tally dev` it runs in.
//!
//! It talks to the services over gRPC exactly as a platform would (with the
//! admin key `tally dev` printed): it applies the price book in
//! `crates/cli/demo/catalog.yaml`, creates four customers with
//! subscriptions and prepaid credits, streams a month of usage day by day
//! while moving the manual clock, upgrades one customer mid-month, then moves
//! the clock past the period end and the grace period so the bill run
//! finalizes the invoices, and prints them with the commands to look further.
//!
//! Usage amounts come from a fixed pseudo-random sequence, so every run
//! bills the same amounts; running it again on the same data directory finds
//! the customers and events already there (duplicates are billed once). Its
//! customers' external ids start with `demo-`, so the README's example
//! customer (`acme`) never collides with them.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Months, TimeZone as _, Utc};
use tally_proto::clock::SetTimeRequest;
use tally_proto::clock::clock_service_client::ClockServiceClient;
use tally_proto::common::{Money, TimeRange};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::IngestBatchRequest;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    Address, BillingReason, ChangePlanRequest, ChangeTiming, CollectionMode, CreateCustomerRequest,
    CreateSubscriptionRequest, CreditGrantKind, GrantCreditRequest, Invoice, InvoiceStatus,
    ListInvoicesRequest, ProrationPolicy,
};
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::{GetPlanRequest, GetUsageChargesRequest, get_plan_request};

use crate::admin::table::Table;
use crate::admin::{Authenticated, Call as _, Output, Target, connect, short};

/// The demo's price book; docs/operations.md documents the format.
pub const CATALOG: &str = include_str!("../demo/catalog.yaml");

/// How long the bill run may take to finalize the month's invoices.
const FINALIZE_DEADLINE: Duration = Duration::from_secs(60);

/// A demo customer: who, on which plan, paying how.
struct Persona {
    external_id: &'static str,
    name: &'static str,
    plan: &'static str,
    collection: CollectionMode,
    /// Prepaid credits granted on the first day, in USD.
    prepaid: Option<&'static str>,
    /// Usage per day: (meter, how many events, property, range of its value).
    usage: &'static [Usage],
}

struct Usage {
    event_type: &'static str,
    events: u64,
    /// A property drawn from `low..=high`, or none (counted meters).
    amount: Option<(&'static str, u64, u64)>,
    /// The group property and its values, one picked per event.
    group: Option<(&'static str, &'static [&'static str])>,
}

const GPU: Usage = Usage {
    event_type: "gpu_seconds",
    events: 3,
    amount: Some(("seconds", 300, 7_200)),
    group: Some(("gpu_type", &["h100", "a100", "l4"])),
};
const IMAGES: Usage = Usage {
    event_type: "images",
    events: 12,
    amount: None,
    group: Some(("model", &["sdxl", "sdxl", "sdxl", "flux_pro"])),
};
const TOKENS: Usage = Usage {
    event_type: "llm_tokens",
    events: 4,
    amount: Some(("tokens", 20_000, 400_000)),
    group: None,
};
const REQUESTS: Usage = Usage {
    event_type: "api_requests",
    events: 5,
    amount: None,
    group: None,
};

const PERSONAS: [Persona; 4] = [
    Persona {
        external_id: "demo-acme",
        name: "Acme AI",
        plan: "inference_pro",
        collection: CollectionMode::ChargeAutomatically,
        prepaid: Some("250.00"),
        usage: &[GPU, IMAGES, TOKENS, REQUESTS],
    },
    Persona {
        external_id: "demo-globex",
        name: "Globex Labs",
        // Upgraded to inference_pro half-way through the month.
        plan: "inference_starter",
        collection: CollectionMode::ChargeAutomatically,
        prepaid: None,
        usage: &[TOKENS],
    },
    Persona {
        external_id: "demo-initech",
        name: "Initech",
        plan: "inference_pro",
        collection: CollectionMode::SendInvoice,
        prepaid: None,
        usage: &[GPU, IMAGES, TOKENS],
    },
    Persona {
        external_id: "demo-hooli",
        name: "Hooli Vision",
        plan: "inference_starter",
        collection: CollectionMode::ChargeAutomatically,
        prepaid: Some("20.00"),
        usage: &[TOKENS],
    },
];

/// Where the demo drives Tally.
#[derive(Debug, Clone)]
pub struct DemoTarget {
    /// `http://host:port` of `tally dev`.
    pub address: String,
    /// The admin key `tally dev` created.
    pub api_key: String,
    /// Where the month starts (the manual clock's start).
    pub start: DateTime<Utc>,
    /// `invoicing.grace_period_hours`: how long after the month's end drafts stay open.
    pub grace_period_hours: u32,
}

/// The first instant of the month of `now`: the demo bills that month.
pub fn start_of_month(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// A small deterministic generator (a 64-bit LCG): the same amounts every run.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        low + (self.0 >> 33) % (high - low + 1)
    }
}

struct Clients {
    clock: ClockServiceClient<Authenticated>,
    catalog: CatalogServiceClient<Authenticated>,
    ingest: IngestServiceClient<Authenticated>,
    rating: RatingServiceClient<Authenticated>,
    customers: CustomerServiceClient<Authenticated>,
    subscriptions: SubscriptionServiceClient<Authenticated>,
    credits: CreditServiceClient<Authenticated>,
    invoices: InvoiceServiceClient<Authenticated>,
}

/// A customer as the demo created it.
struct Subscribed {
    persona: &'static Persona,
    customer_id: String,
    subscription_id: String,
}

fn stamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("  demo  {line}");
}

/// Runs the demo; the services must be starting or serving at `target.address`.
#[allow(clippy::print_stdout)]
pub async fn run(target: DemoTarget) -> anyhow::Result<()> {
    let channel = connect(&target.address, &target.api_key, None).await?;
    let mut api = Clients {
        clock: ClockServiceClient::new(channel.clone()),
        catalog: CatalogServiceClient::new(channel.clone()),
        ingest: IngestServiceClient::new(channel.clone()),
        rating: RatingServiceClient::new(channel.clone()),
        customers: CustomerServiceClient::new(channel.clone()),
        subscriptions: SubscriptionServiceClient::new(channel.clone()),
        credits: CreditServiceClient::new(channel.clone()),
        invoices: InvoiceServiceClient::new(channel),
    };
    let start = target.start;
    let end = start + Months::new(1);

    say("loading the AI-inference price book (crates/cli/demo/catalog.yaml):");
    let admin = Target {
        address: target.address.clone(),
        api_key: target.api_key.clone(),
        // `tally dev` serves plaintext on loopback.
        ca_file: None,
        output: Output::Table,
    };
    crate::admin::catalog::apply_text(CATALOG, &admin).await?;
    let pro = latest_version(&mut api, "inference_pro").await?;
    let starter = latest_version(&mut api, "inference_starter").await?;

    say(&format!(
        "customers and subscriptions from {}:",
        start.format("%Y-%m-%d")
    ));
    let mut customers = Vec::new();
    for persona in &PERSONAS {
        let version = if persona.plan == "inference_pro" {
            &pro
        } else {
            &starter
        };
        let subscribed = subscribe(&mut api, persona, version, start).await?;
        say(&format!(
            "  {:<13} {:<18} {}  {}",
            persona.name, persona.plan, subscribed.customer_id, subscribed.subscription_id
        ));
        if let Some(amount) = persona.prepaid {
            grant(&mut api, &subscribed.customer_id, persona, amount).await?;
            say(&format!(
                "  {:<13} prepaid credits {amount} USD",
                persona.name
            ));
        }
        customers.push(subscribed);
    }
    // Subscriptions reach rating over the bus; a bill run before that would
    // only be retried (with a warning), so wait for rating to know them.
    wait_until_rated(&mut api, &customers, start, end).await?;

    say("streaming usage day by day (GPU seconds, images, tokens, requests):");
    let days = (end - start).num_days();
    let mut sequence = Sequence(0x7a11_7d3e);
    let mut sent = 0usize;
    let upgrade_day = days / 2;
    for day in 0..days {
        let day_start = start + chrono::Duration::days(day);
        if day == upgrade_day {
            // The clock is at the start of this day: the change is immediate.
            upgrade(&mut api, &customers[1], &pro).await?;
            say(&format!(
                "  {} upgrades to inference_pro on {} (prorated by the second)",
                customers[1].persona.name,
                day_start.format("%Y-%m-%d")
            ));
        }
        // The clock to the day's end first: ingest refuses events from its future.
        set_clock(&mut api, day_start + chrono::Duration::days(1)).await?;
        let events = day_of_usage(&customers, day_start, &mut sequence);
        sent += events.len();
        api.ingest
            .ingest_batch(IngestBatchRequest { events })
            .await
            .answer("IngestBatch")?;
        if (day + 1) % 7 == 0 || day + 1 == days {
            say(&format!(
                "  {} … {sent} events",
                day_start.format("%Y-%m-%d")
            ));
        }
    }

    say("waiting for rating to price every event …");
    wait_until_rated(&mut api, &customers, start, end).await?;
    let close = end + chrono::Duration::hours(i64::from(target.grace_period_hours) + 1);
    say(&format!(
        "moving the clock to {} (period end + {} h grace): the bill run finalizes",
        close.to_rfc3339(),
        target.grace_period_hours
    ));
    set_clock(&mut api, close).await?;
    let invoices = wait_for_invoices(&mut api, &customers).await?;

    println!();
    let mut table = Table::new(&["customer", "invoice", "billed", "status", "total"]);
    for (subscribed, invoice) in &invoices {
        table.row(vec![
            subscribed.persona.name.to_owned(),
            if invoice.number.is_empty() {
                invoice.id.clone()
            } else {
                invoice.number.clone()
            },
            what_it_bills(invoice),
            short(
                InvoiceStatus::try_from(invoice.status)
                    .unwrap_or(InvoiceStatus::Unspecified)
                    .as_str_name(),
                "INVOICE_STATUS_",
            ),
            invoice
                .total
                .as_ref()
                .map(|total| format!("{} {}", total.amount, total.currency))
                .unwrap_or_default(),
        ]);
    }
    for line in table.render().lines() {
        println!("  {line}");
    }
    let example = invoices
        .last()
        .map_or_else(String::new, |(_, invoice)| invoice.id.clone());
    let acme = &customers[0].customer_id;
    println!();
    println!("  Look further (in another terminal):");
    println!(
        "    export TALLY_ADDRESS={} TALLY_API_KEY={}",
        target.address, target.api_key
    );
    println!("    tally invoices list");
    println!("    tally invoices show {example}     # every line and its price breakdown");
    println!("    tally customers list");
    println!("    tally credits balance --customer {acme}");
    println!("    tally catalog show --plan inference_pro");
    println!("    tally clock advance 30d                # and bill another month");
    println!();
    say("done (ctrl-c stops tally dev; the data stays for the next run)");
    Ok(())
}

async fn latest_version(api: &mut Clients, code: &str) -> anyhow::Result<String> {
    let plan = api
        .catalog
        .get_plan(GetPlanRequest {
            lookup: Some(get_plan_request::Lookup::Code(code.into())),
        })
        .await
        .answer(&format!("GetPlan {code}"))?
        .plan
        .with_context(|| format!("GetPlan {code} answered without a plan"))?;
    anyhow::ensure!(
        !plan.latest_published_version_id.is_empty(),
        "plan {code} has no published version"
    );
    Ok(plan.latest_published_version_id)
}

async fn subscribe(
    api: &mut Clients,
    persona: &'static Persona,
    plan_version: &str,
    start: DateTime<Utc>,
) -> anyhow::Result<Subscribed> {
    let customer = api
        .customers
        .create_customer(CreateCustomerRequest {
            external_id: persona.external_id.into(),
            name: persona.name.into(),
            billing_email: format!("billing@{}.example", persona.external_id),
            billing_address: Some(Address {
                line1: "1 Demo Street".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                ..Address::default()
            }),
            currency: "USD".into(),
            collection_mode: persona.collection as i32,
            net_terms_days: if persona.collection == CollectionMode::SendInvoice {
                30
            } else {
                0
            },
            ..CreateCustomerRequest::default()
        })
        .await
        .map_err(|status| {
            let error =
                crate::admin::refused(&format!("CreateCustomer {}", persona.external_id), &status);
            if status.code() == tonic::Code::AlreadyExists {
                error.context(format!(
                    "the demo's customer {} exists with other attributes in this database: \
                     start afresh with `tally dev --demo --reset` (or another --data-dir)",
                    persona.external_id
                ))
            } else {
                error
            }
        })?
        .into_inner()
        .customer
        .context("CreateCustomer answered without a customer")?;
    let subscription = api
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            // The key makes a second demo run find the first run's subscription.
            idempotency_key: format!("{}-{}", persona.external_id, start.timestamp()),
            customer_id: customer.id.clone(),
            plan_version_id: plan_version.into(),
            start_at: Some(stamp(start)),
            // No trial: the demo shows money.
            trial_days: Some(0),
            ..CreateSubscriptionRequest::default()
        })
        .await
        .answer(&format!("CreateSubscription {}", persona.external_id))?
        .subscription
        .context("CreateSubscription answered without a subscription")?;
    Ok(Subscribed {
        persona,
        customer_id: customer.id,
        subscription_id: subscription.id,
    })
}

async fn grant(
    api: &mut Clients,
    customer_id: &str,
    persona: &Persona,
    amount: &str,
) -> anyhow::Result<()> {
    api.credits
        .grant_credit(GrantCreditRequest {
            idempotency_key: format!("demo-prepaid-{}", persona.external_id),
            customer_id: customer_id.into(),
            kind: CreditGrantKind::Prepaid as i32,
            amount: usd(amount),
            description: "prepaid credits (demo)".into(),
            ..GrantCreditRequest::default()
        })
        .await
        .answer("GrantCredit")?;
    Ok(())
}

async fn upgrade(
    api: &mut Clients,
    subscribed: &Subscribed,
    plan_version: &str,
) -> anyhow::Result<()> {
    api.subscriptions
        .change_plan(ChangePlanRequest {
            idempotency_key: format!("demo-upgrade-{}", subscribed.subscription_id),
            subscription_id: subscribed.subscription_id.clone(),
            plan_version_id: plan_version.into(),
            timing: ChangeTiming::Immediately as i32,
            effective_at: None,
            proration_policy: ProrationPolicy::Prorate as i32,
            reason: "the demo's mid-month upgrade".into(),
        })
        .await
        .answer("ChangePlan")?;
    Ok(())
}

async fn set_clock(api: &mut Clients, at: DateTime<Utc>) -> anyhow::Result<()> {
    api.clock
        .set_time(SetTimeRequest {
            time: Some(stamp(at)),
        })
        .await
        .answer("ClockService.SetTime")?;
    Ok(())
}

/// One day's events of every customer, stamped across the day.
fn day_of_usage(
    customers: &[Subscribed],
    day_start: DateTime<Utc>,
    sequence: &mut Sequence,
) -> Vec<UsageEvent> {
    let mut events = Vec::new();
    for subscribed in customers {
        for usage in subscribed.persona.usage {
            for n in 0..usage.events {
                let mut properties = std::collections::HashMap::new();
                if let Some((property, low, high)) = usage.amount {
                    properties.insert(property.to_owned(), sequence.next(low, high).to_string());
                }
                if let Some((property, values)) = usage.group {
                    let index = sequence.next(0, values.len() as u64 - 1) as usize;
                    properties.insert(property.to_owned(), values[index].to_owned());
                }
                let second = sequence.next(0, 86_399);
                events.push(UsageEvent {
                    id: format!(
                        "demo-{}-{}-{}-{n}",
                        subscribed.persona.external_id,
                        usage.event_type,
                        day_start.format("%Y%m%d")
                    ),
                    customer_id: subscribed.customer_id.clone(),
                    event_type: usage.event_type.into(),
                    timestamp: Some(stamp(day_start + chrono::Duration::seconds(second as i64))),
                    properties,
                    source: "tally-dev-demo".into(),
                });
            }
        }
    }
    events
}

/// Waits until rating prices every subscription's month and the totals stop
/// moving (subscriptions and usage reach rating through the bus, a moment
/// after invoicing or ingest accepted them).
async fn wait_until_rated(
    api: &mut Clients,
    customers: &[Subscribed],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut previous = Vec::new();
    loop {
        let mut totals = Vec::new();
        for subscribed in customers {
            let charges = api
                .rating
                .get_usage_charges(GetUsageChargesRequest {
                    subscription_id: subscribed.subscription_id.clone(),
                    period: Some(TimeRange {
                        start_time: Some(stamp(start)),
                        end_time: Some(stamp(end)),
                    }),
                })
                .await;
            // Not known to rating yet: NOT_FOUND until its snapshot arrives.
            totals.push(match charges {
                Ok(charges) => charges.into_inner().total.map(|total| total.amount),
                Err(status) if status.code() == tonic::Code::NotFound => None,
                Err(status) => return Err(crate::admin::refused("GetUsageCharges", &status)),
            });
        }
        if totals == previous && totals.iter().all(Option::is_some) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < FINALIZE_DEADLINE,
            "usage was still being rated after {FINALIZE_DEADLINE:?}"
        );
        previous = totals;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Waits until each subscription has its opening invoice and the one at the
/// month's end, none of them a draft; returns them all.
async fn wait_for_invoices<'a>(
    api: &mut Clients,
    customers: &'a [Subscribed],
) -> anyhow::Result<Vec<(&'a Subscribed, Invoice)>> {
    let started = Instant::now();
    loop {
        let mut all = Vec::new();
        let mut closed = 0;
        for subscribed in customers {
            let mut invoices = api
                .invoices
                .list_invoices(ListInvoicesRequest {
                    subscription_id: subscribed.subscription_id.clone(),
                    page_size: 100,
                    ..ListInvoicesRequest::default()
                })
                .await
                .answer("ListInvoices")?
                .invoices;
            // Numbers are gapless in finalization order: the opening invoice first.
            invoices.sort_by(|a, b| a.number.cmp(&b.number));
            let finished = invoices.len() >= 2
                && invoices
                    .iter()
                    .all(|invoice| invoice.status != InvoiceStatus::Draft as i32);
            if finished {
                closed += 1;
            }
            all.extend(invoices.into_iter().map(|invoice| (subscribed, invoice)));
        }
        if closed == customers.len() {
            return Ok(all);
        }
        anyhow::ensure!(
            started.elapsed() < FINALIZE_DEADLINE,
            "the month's invoices were not finalized within {FINALIZE_DEADLINE:?} ({closed} of {} were)",
            customers.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A few words on what an invoice is for.
fn what_it_bills(invoice: &Invoice) -> String {
    match BillingReason::try_from(invoice.billing_reason) {
        Ok(BillingReason::SubscriptionCreate) => "fees in advance".to_owned(),
        Ok(BillingReason::SubscriptionCycle) => "the month's usage, next month's fees".to_owned(),
        Ok(other) => short(other.as_str_name(), "BILLING_REASON_"),
        Err(_) => String::new(),
    }
}
