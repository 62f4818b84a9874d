//! The plan of an import: every customer and subscription it creates, and
//! everything it does not import with the reason. Pure: the dry run prints
//! it; the import carries it out and a rerun plans the same objects (what
//! already exists is skipped by the importer, not here).
//!
//! Start dates: Tally backdates a subscription at most
//! `invoicing.backdate_window_days`. A subscription starts at its
//! historical start when that is inside the window, else at the start of
//! its current period when that is, else at its next period boundary (a
//! period Tally has not seen would otherwise be billed by nobody or twice);
//! a subscription in trial starts when the trial ends. The historical start
//! is always kept in the subscription's metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use super::mapping::{MappingFile, PriceTarget};
use super::{SourceAccount, SourceCustomer, SourcePrice, SourcePriceKind, SourceSubscription};

/// A Tally plan as the catalog has it (its latest published version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyPlan {
    /// The plan's code.
    pub code: String,
    /// `pv_…` of its latest published version; empty when none is published.
    pub version_id: String,
    /// ISO 4217.
    pub currency: String,
    /// `day`, `week`, `month`, `quarter`, `year`.
    pub interval: String,
    /// The version's charge keys.
    pub charge_keys: BTreeSet<String>,
}

/// What the planner needs besides the source and the mapping.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    /// `stripe`, `orb`: part of ids and keys.
    pub source: &'a str,
    /// The mapping file.
    pub mapping: &'a MappingFile,
    /// The catalog's plans the mapping names, by code (absent: not in Tally).
    pub catalog: &'a BTreeMap<String, TallyPlan>,
    /// Now (the service clock).
    pub now: DateTime<Utc>,
    /// `invoicing.backdate_window_days`.
    pub backdate_window_days: u32,
}

/// A customer the import creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCustomer {
    /// The source's id: the Tally customer's external id.
    pub source_id: String,
    /// Name.
    pub name: String,
    /// Billing email.
    pub email: String,
    /// ISO 4217.
    pub currency: String,
}

/// Where a subscription's Tally life starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartChoice {
    /// At its historical start (inside the backdating window).
    Historical,
    /// At its current period's start.
    CurrentPeriod,
    /// At its next period boundary.
    NextPeriod,
    /// When its trial in the source ends.
    TrialEnd,
}

impl StartChoice {
    /// How the dry run says it.
    pub fn describe(self) -> &'static str {
        match self {
            StartChoice::Historical => "its historical start",
            StartChoice::CurrentPeriod => {
                "its current period's start (the historical start is before the backdating window)"
            }
            StartChoice::NextPeriod => {
                "its next period (its current period started before the backdating window)"
            }
            StartChoice::TrialEnd => "the end of its trial in the source",
        }
    }
}

/// A subscription the import creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSubscription {
    /// The source's id.
    pub source_id: String,
    /// The source's customer id (the Tally customer's external id).
    pub customer_source_id: String,
    /// The Tally plan's code.
    pub plan_code: String,
    /// Its published version, `pv_…`.
    pub plan_version_id: String,
    /// When it starts in Tally.
    pub start_at: DateTime<Utc>,
    /// Its billing anchor when it differs from `start_at`.
    pub billing_anchor_at: Option<DateTime<Utc>>,
    /// Why it starts then.
    pub start: StartChoice,
    /// When it started in the source.
    pub started_at: DateTime<Utc>,
    /// Source price → Tally charge key.
    pub charges: Vec<(String, String)>,
    /// Source prices left behind on purpose, with the mapping's reason.
    pub ignored: Vec<(String, String)>,
    /// `CreateSubscription`'s idempotency key (from the source id).
    pub idempotency_key: String,
    /// Metadata written on the Tally subscription.
    pub metadata: BTreeMap<String, String>,
}

/// What is not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotImported {
    /// `customer` or `subscription`.
    pub kind: &'static str,
    /// The source's id.
    pub source_id: String,
    /// Why, in words an operator acts on.
    pub reason: String,
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPlan {
    /// Customers to create, by source id.
    pub customers: Vec<PlannedCustomer>,
    /// Subscriptions to create, by source id.
    pub subscriptions: Vec<PlannedSubscription>,
    /// Everything left out, customers first.
    pub not_imported: Vec<NotImported>,
}

/// The idempotency key of the Tally subscription made from `source_id`.
pub fn subscription_key(source: &str, source_id: &str) -> String {
    format!("migrate-import:{source}:{source_id}")
}

/// Plans the import of `account`.
pub fn plan(account: &SourceAccount, context: &PlanContext<'_>) -> ImportPlan {
    let mut out = ImportPlan::default();
    let prices: BTreeMap<&str, &SourcePrice> = account
        .prices
        .iter()
        .map(|price| (price.id.as_str(), price))
        .collect();
    let live: Vec<&SourceSubscription> = account
        .subscriptions
        .iter()
        .filter(|subscription| ended(subscription).is_none())
        .collect();
    let mut customers: BTreeMap<&str, &SourceCustomer> = BTreeMap::new();
    for customer in &account.customers {
        customers.insert(customer.id.as_str(), customer);
    }
    let mut currencies: BTreeMap<&str, String> = BTreeMap::new();
    for customer in customers.values() {
        match customer_currency(customer, &live) {
            Ok(currency) => {
                currencies.insert(customer.id.as_str(), currency.clone());
                out.customers.push(PlannedCustomer {
                    source_id: customer.id.clone(),
                    name: customer.name.clone(),
                    email: customer.email.clone(),
                    currency,
                });
            }
            Err(reason) => out.not_imported.push(NotImported {
                kind: "customer",
                source_id: customer.id.clone(),
                reason,
            }),
        }
    }
    let mut subscriptions: Vec<&SourceSubscription> = account.subscriptions.iter().collect();
    subscriptions.sort_by(|a, b| a.id.cmp(&b.id));
    for subscription in subscriptions {
        let planned = ended(subscription).map_or_else(
            || plan_subscription(subscription, &prices, &currencies, &customers, context),
            Err,
        );
        match planned {
            Ok(planned) => out.subscriptions.push(planned),
            Err(reason) => out.not_imported.push(NotImported {
                kind: "subscription",
                source_id: subscription.id.clone(),
                reason,
            }),
        }
    }
    out
}

/// Why a subscription is over (or never began), if it is.
fn ended(subscription: &SourceSubscription) -> Option<String> {
    match subscription.status.as_str() {
        "active" | "trialing" | "past_due" | "unpaid" => None,
        "canceled" | "incomplete_expired" | "ended" => Some(format!(
            "it has ended in the source (status {})",
            subscription.status
        )),
        "incomplete" => Some("its first payment never succeeded (status incomplete)".to_owned()),
        other => Some(format!(
            "status {other} is not imported: only active, trialing, past_due and unpaid subscriptions are; create it by hand"
        )),
    }
}

fn customer_currency(
    customer: &SourceCustomer,
    live: &[&SourceSubscription],
) -> Result<String, String> {
    if let Some(currency) = &customer.currency {
        return Ok(currency.clone());
    }
    let theirs: BTreeSet<&str> = live
        .iter()
        .filter(|subscription| subscription.customer_id == customer.id)
        .map(|subscription| subscription.currency.as_str())
        .collect();
    match theirs.len() {
        1 => Ok(theirs.into_iter().next().unwrap_or_default().to_owned()),
        0 => Err("it has no currency in the source and no live subscription to take one from; create it by hand".to_owned()),
        _ => Err(format!(
            "it has no currency in the source and live subscriptions in {}; a Tally customer bills in one currency",
            theirs.into_iter().collect::<Vec<_>>().join(" and ")
        )),
    }
}

fn describe_price(price_id: &str, prices: &BTreeMap<&str, &SourcePrice>) -> String {
    match prices.get(price_id) {
        Some(price) => {
            let kind = match price.kind {
                SourcePriceKind::Licensed => "licensed",
                SourcePriceKind::Metered => "metered",
                SourcePriceKind::OneTime => "one-time",
            };
            let every = if price.interval.is_empty() {
                String::new()
            } else if price.interval_count == 1 {
                format!(" per {}", price.interval)
            } else {
                format!(" every {} {}s", price.interval_count, price.interval)
            };
            format!(
                "{price_id} ({}, {}, {kind}{every})",
                price.name, price.currency
            )
        }
        None => format!("{price_id} (not among the account's prices)"),
    }
}

/// The Tally interval of a source price (`month` × 3 is a quarter).
fn tally_interval(price: &SourcePrice) -> Option<&'static str> {
    match (price.interval.as_str(), price.interval_count) {
        ("day", 1) => Some("day"),
        ("week", 1) => Some("week"),
        ("month", 1) => Some("month"),
        ("month", 3) => Some("quarter"),
        ("year", 1) => Some("year"),
        _ => None,
    }
}

fn plan_subscription(
    subscription: &SourceSubscription,
    prices: &BTreeMap<&str, &SourcePrice>,
    currencies: &BTreeMap<&str, String>,
    customers: &BTreeMap<&str, &SourceCustomer>,
    context: &PlanContext<'_>,
) -> Result<PlannedSubscription, String> {
    let customer_currency = match currencies.get(subscription.customer_id.as_str()) {
        Some(currency) => currency,
        None if customers.contains_key(subscription.customer_id.as_str()) => {
            return Err(format!(
                "its customer {} is not imported (see above)",
                subscription.customer_id
            ));
        }
        None => {
            return Err(format!(
                "its customer {} is not among the account's customers",
                subscription.customer_id
            ));
        }
    };
    let (plan_code, charges, ignored) = mapped_items(subscription, prices, context.mapping)?;
    let plan = check_plan(subscription, &plan_code, &charges, prices, context)?;
    if &subscription.currency != customer_currency {
        return Err(format!(
            "it bills in {} but its customer in {customer_currency}; a Tally customer bills in one currency",
            subscription.currency
        ));
    }
    let (start_at, billing_anchor_at, start) = start_of(subscription, context);
    let mut metadata = BTreeMap::new();
    metadata.insert("migrated_from".to_owned(), context.source.to_owned());
    metadata.insert("source_subscription_id".to_owned(), subscription.id.clone());
    metadata.insert(
        "source_started_at".to_owned(),
        subscription.started_at.to_rfc3339(),
    );
    Ok(PlannedSubscription {
        source_id: subscription.id.clone(),
        customer_source_id: subscription.customer_id.clone(),
        plan_code,
        plan_version_id: plan.version_id.clone(),
        start_at,
        billing_anchor_at,
        start,
        started_at: subscription.started_at,
        charges,
        ignored,
        idempotency_key: subscription_key(context.source, &subscription.id),
        metadata,
    })
}

type MappedItems = (String, Vec<(String, String)>, Vec<(String, String)>);

/// The one plan a subscription's prices map to, each price's charge, and
/// the prices ignored; or why not.
fn mapped_items(
    subscription: &SourceSubscription,
    prices: &BTreeMap<&str, &SourcePrice>,
    mapping: &MappingFile,
) -> Result<MappedItems, String> {
    let mut plans = BTreeSet::new();
    let mut charges = Vec::new();
    let mut ignored = Vec::new();
    let mut unmapped = Vec::new();
    let mut quantities = Vec::new();
    for item in &subscription.items {
        match mapping.target(&item.price_id) {
            PriceTarget::Charge { plan, charge } => {
                plans.insert(plan.to_owned());
                charges.push((item.price_id.clone(), charge.to_owned()));
                if let Some(quantity) = item.quantity.filter(|quantity| *quantity != 1) {
                    quantities.push(format!("{} × {quantity}", item.price_id));
                }
            }
            PriceTarget::Ignored { reason } => {
                ignored.push((item.price_id.clone(), reason.to_owned()));
            }
            PriceTarget::Unmapped => unmapped.push(describe_price(&item.price_id, prices)),
        }
    }
    if !unmapped.is_empty() {
        return Err(format!(
            "not in the mapping: {}; add each under a plan's prices, or under ignore with the reason",
            unmapped.join(", ")
        ));
    }
    if !quantities.is_empty() {
        return Err(format!(
            "quantities other than 1 ({}): a Tally subscription carries no quantity; price the seats in the plan or create it by hand",
            quantities.join(", ")
        ));
    }
    let mut plans = plans.into_iter();
    match (plans.next(), plans.next()) {
        (Some(plan), None) => Ok((plan, charges, ignored)),
        (None, _) => {
            Err("every one of its prices is ignored in the mapping: nothing to bill".to_owned())
        }
        (Some(first), Some(second)) => Err(format!(
            "its prices map to different Tally plans ({first}, {second}, …); a Tally subscription has one plan"
        )),
    }
}

fn check_plan<'a>(
    subscription: &SourceSubscription,
    plan_code: &str,
    charges: &[(String, String)],
    prices: &BTreeMap<&str, &SourcePrice>,
    context: &PlanContext<'a>,
) -> Result<&'a TallyPlan, String> {
    let Some(plan) = context.catalog.get(plan_code) else {
        return Err(format!(
            "the mapping names plan {plan_code}, which is not in Tally's catalog (tally catalog apply)"
        ));
    };
    if plan.version_id.is_empty() {
        return Err(format!("plan {plan_code} has no published version"));
    }
    for (price_id, charge) in charges {
        if !plan.charge_keys.contains(charge) {
            return Err(format!(
                "price {price_id} maps to charge {charge}, which plan {plan_code} ({}) does not have (it has {})",
                plan.version_id,
                plan.charge_keys
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let Some(price) = prices.get(price_id.as_str()) else {
            continue;
        };
        if price.currency != plan.currency {
            return Err(format!(
                "{} bills in {}, plan {plan_code} in {}",
                describe_price(price_id, prices),
                price.currency,
                plan.currency
            ));
        }
        if tally_interval(price) != Some(plan.interval.as_str()) {
            return Err(format!(
                "{} does not bill per {} as plan {plan_code} does",
                describe_price(price_id, prices),
                plan.interval
            ));
        }
    }
    if subscription.currency != plan.currency {
        return Err(format!(
            "it bills in {}, plan {plan_code} in {}",
            subscription.currency, plan.currency
        ));
    }
    Ok(plan)
}

fn start_of(
    subscription: &SourceSubscription,
    context: &PlanContext<'_>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>, StartChoice) {
    let limit = context.now - Duration::days(i64::from(context.backdate_window_days));
    if let Some(trial_end) = subscription.trial_end.filter(|end| *end > context.now) {
        return (trial_end, None, StartChoice::TrialEnd);
    }
    if subscription.started_at >= limit {
        // Stripe's anchor may differ from the start (a prorated first
        // period): anchoring on the current period keeps the periods equal.
        let anchor = (subscription.current_period_start > subscription.started_at)
            .then_some(subscription.current_period_start);
        return (subscription.started_at, anchor, StartChoice::Historical);
    }
    if subscription.current_period_start >= limit {
        return (
            subscription.current_period_start,
            None,
            StartChoice::CurrentPeriod,
        );
    }
    (
        subscription.current_period_end,
        None,
        StartChoice::NextPeriod,
    )
}

impl ImportPlan {
    /// The dry run's report: what would be created, then what would not and why.
    pub fn describe(&self, source: &str) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "import from {source}: {} customers, {} subscriptions; {} not imported",
            self.customers.len(),
            self.subscriptions.len(),
            self.not_imported.len()
        );
        for customer in &self.customers {
            let _ = writeln!(
                text,
                "create customer {} {:?} <{}> {}",
                customer.source_id, customer.name, customer.email, customer.currency
            );
        }
        for subscription in &self.subscriptions {
            let charges: Vec<String> = subscription
                .charges
                .iter()
                .map(|(price, charge)| format!("{price}→{charge}"))
                .collect();
            let _ = writeln!(
                text,
                "create subscription {} for {} on plan {} ({}) from {} ({}); started {}; charges {}",
                subscription.source_id,
                subscription.customer_source_id,
                subscription.plan_code,
                subscription.plan_version_id,
                subscription.start_at.to_rfc3339(),
                subscription.start.describe(),
                subscription.started_at.to_rfc3339(),
                charges.join(", ")
            );
            for (price, reason) in &subscription.ignored {
                let _ = writeln!(text, "  ignore price {price}: {reason}");
            }
        }
        for item in &self.not_imported {
            let _ = writeln!(
                text,
                "not imported: {} {}: {}",
                item.kind, item.source_id, item.reason
            );
        }
        text
    }
}
