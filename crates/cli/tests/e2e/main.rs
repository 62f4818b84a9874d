//! The end-to-end test: the four services as separate `tally serve`
//! processes on one PostgreSQL database, the real Pub/Sub emulator as the bus,
//! gRPC between them, a fake Stripe, and a month of billing for three
//! customers driven from outside — usage over gRPC and over Pub/Sub with
//! duplicates and a late event, a mid-period upgrade, prepaid credits — to
//! the exact invoice totals in cents, the matching Stripe invoice items, a
//! signed `invoice.paid` webhook and a partial refund's credit note.
//!
//! Nothing here sleeps a fixed time: every wait polls for its condition
//! until a deadline. A missing PostgreSQL or Pub/Sub emulator fails the test
//! with what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Complete Stripe objects are large `json!` literals.
#![recursion_limit = "256"]

mod cluster;
mod stripe;
mod stripe_objects;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tally_bus::{Bus as _, Message, PubSubBus, topics};
use tally_proto::common::{Money, TimeRange};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};
use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_line::Detail;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    Address, ChangePlanRequest, ChangeTiming, CollectionMode, CreateCustomerRequest,
    CreateSubscriptionRequest, CreditGrantKind, CreditNoteReason, GrantCreditRequest, Invoice,
    InvoiceStatus, ListCreditNotesRequest, ListInvoicesRequest, ProrationPolicy,
};
use tally_proto::payments::payment_service_client::PaymentServiceClient;
use tally_proto::payments::{ListPaymentsRequest, RefundReason, RefundRequest};
use tally_proto::rating::GetUsageChargesRequest;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tonic::transport::Channel;

use crate::cluster::Cluster;
use crate::stripe::FakeStripe;

/// The price book `tally dev --demo` loads: the test bills the demo's file.
const CATALOG: &str = include_str!("../../demo/catalog.yaml");

/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(60);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn timestamp(text: &str) -> prost_types::Timestamp {
    let instant = at(text);
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: 0,
    }
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

fn amount(money: Option<&Money>) -> String {
    money.map(|money| money.amount.clone()).unwrap_or_default()
}

/// Cents of a decimal string such as `"436.98"` (exact: no floats).
fn cents(amount: &str) -> i64 {
    let (units, fraction) = amount.split_once('.').unwrap_or((amount, "0"));
    let fraction = format!("{fraction:0<2}");
    assert_eq!(fraction.len(), 2, "{amount} is not in whole cents");
    let negative = units.starts_with('-');
    let value = units.trim_start_matches('-').parse::<i64>().unwrap() * 100
        + fraction.parse::<i64>().unwrap();
    if negative { -value } else { value }
}

/// A wait for a condition: [`Waiting::tick`] fails the test after
/// [`DEADLINE`] with what was awaited, the last value seen and the services'
/// logs, and otherwise pauses briefly before the next look.
struct Waiting<'a> {
    cluster: &'a Cluster,
    what: String,
    started: Instant,
}

impl<'a> Waiting<'a> {
    fn new(cluster: &'a Cluster, what: impl Into<String>) -> Self {
        Self {
            cluster,
            what: what.into(),
            started: Instant::now(),
        }
    }

    async fn tick(&self, last_seen: impl std::fmt::Debug) {
        assert!(
            self.started.elapsed() < DEADLINE,
            "timed out waiting for {}; last seen: {last_seen:?}\n{}",
            self.what,
            self.cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts a webhook delivery; returns the HTTP status and body.
async fn post_webhook(url: &str, payload: &str, signature: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", signature)
        .body(payload.to_owned())
        .send()
        .await
        .expect("the webhook endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A gRPC request carrying the admin key.
fn call<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn event(
    id: &str,
    customer: &str,
    kind: &str,
    at: &str,
    properties: &[(&str, &str)],
) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        customer_id: customer.into(),
        event_type: kind.into(),
        timestamp: Some(timestamp(at)),
        properties: properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        source: "e2e".into(),
    }
}

/// The same event in the proto3 JSON mapping, as a publisher would put it on
/// the `usage-events` topic.
fn pubsub_message(event: &UsageEvent, at: &str) -> Message {
    let properties: serde_json::Map<String, serde_json::Value> = event
        .properties
        .iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
        .collect();
    let body = serde_json::json!({
        "id": event.id,
        "customerId": event.customer_id,
        "eventType": event.event_type,
        "timestamp": at,
        "properties": properties,
    });
    // A foreign publisher: no tally-* attributes, only the content type.
    let mut message = Message::new("", 1, body.to_string().into_bytes())
        .with_attribute("content-type", "application/json")
        .with_ordering_key(event.customer_id.clone());
    message.message_type = String::new();
    message
}

struct Clients {
    key: String,
    ingest: IngestServiceClient<Channel>,
    rating: RatingServiceClient<Channel>,
    customers: CustomerServiceClient<Channel>,
    subscriptions: SubscriptionServiceClient<Channel>,
    invoices: InvoiceServiceClient<Channel>,
    credits: CreditServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
}

impl Clients {
    async fn new(cluster: &Cluster) -> Self {
        let invoicing = cluster.channel("invoicing").await;
        Self {
            key: cluster.admin_key.clone(),
            ingest: IngestServiceClient::new(cluster.channel("ingest").await),
            rating: RatingServiceClient::new(cluster.channel("rating").await),
            customers: CustomerServiceClient::new(invoicing.clone()),
            subscriptions: SubscriptionServiceClient::new(invoicing.clone()),
            invoices: InvoiceServiceClient::new(invoicing.clone()),
            credits: CreditServiceClient::new(invoicing),
            payments: PaymentServiceClient::new(cluster.channel("payments").await),
        }
    }

    async fn customer(&mut self, external_id: &str, name: &str, mode: CollectionMode) -> String {
        let request = CreateCustomerRequest {
            external_id: external_id.into(),
            name: name.into(),
            billing_email: format!("billing@{external_id}.test"),
            billing_address: Some(Address {
                line1: "Torstraße 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                ..Address::default()
            }),
            currency: "USD".into(),
            collection_mode: mode as i32,
            net_terms_days: if mode == CollectionMode::SendInvoice {
                30
            } else {
                0
            },
            ..CreateCustomerRequest::default()
        };
        let created = self
            .customers
            .create_customer(call(&self.key, request))
            .await
            .unwrap()
            .into_inner();
        created.customer.unwrap().id
    }

    async fn subscribe(&mut self, customer: &str, plan_version: &str) -> String {
        let request = CreateSubscriptionRequest {
            idempotency_key: format!("e2e-{customer}"),
            customer_id: customer.into(),
            plan_version_id: plan_version.into(),
            start_at: Some(timestamp(cluster::START)),
            trial_days: Some(0),
            ..CreateSubscriptionRequest::default()
        };
        let created = self
            .subscriptions
            .create_subscription(call(&self.key, request))
            .await
            .unwrap()
            .into_inner();
        created.subscription.unwrap().id
    }

    /// Sends `events` over gRPC and returns each outcome.
    async fn ingest(&mut self, events: Vec<UsageEvent>) -> Vec<EventOutcome> {
        let response = self
            .ingest
            .ingest_batch(call(&self.key, IngestBatchRequest { events }))
            .await
            .unwrap()
            .into_inner();
        response
            .results
            .iter()
            .map(|result| EventOutcome::try_from(result.outcome).unwrap())
            .collect()
    }

    /// Rating's usage total for November.
    async fn november_usage(&mut self, subscription: &str) -> Result<String, String> {
        let request = GetUsageChargesRequest {
            subscription_id: subscription.into(),
            period: Some(TimeRange {
                start_time: Some(timestamp("2026-11-01T00:00:00Z")),
                end_time: Some(timestamp("2026-12-01T00:00:00Z")),
            }),
        };
        match self
            .rating
            .get_usage_charges(call(&self.key, request))
            .await
        {
            Ok(response) => Ok(amount(response.into_inner().total.as_ref())),
            Err(status) => Err(status.to_string()),
        }
    }

    async fn invoices_of(&mut self, customer: &str) -> Vec<Invoice> {
        let request = ListInvoicesRequest {
            customer_id: customer.into(),
            include_lines: true,
            page_size: 100,
            ..ListInvoicesRequest::default()
        };
        let mut invoices = self
            .invoices
            .list_invoices(call(&self.key, request))
            .await
            .unwrap()
            .into_inner()
            .invoices;
        // Numbers are gapless and in finalization order.
        invoices.sort_by(|a, b| a.number.cmp(&b.number));
        invoices
    }
}

/// Waits until each customer has `count` invoices, all with the customer's
/// expected status; returns them by customer name.
async fn settled_invoices<'a>(
    api: &mut Clients,
    cluster: &Cluster,
    customers: [(&'a str, &str, &Expected); 3],
    count: usize,
) -> BTreeMap<&'a str, Vec<Invoice>> {
    let mut settled = BTreeMap::new();
    for (name, customer, expected) in customers {
        let waiting = Waiting::new(
            cluster,
            format!("{name}: {count} {:?} invoices", expected.status),
        );
        let found = loop {
            let invoices = api.invoices_of(customer).await;
            if invoices.len() == count
                && invoices
                    .iter()
                    .all(|invoice| invoice.status == expected.status as i32)
            {
                break invoices;
            }
            let seen: Vec<String> = invoices
                .iter()
                .map(|invoice| {
                    format!(
                        "{:?} {}",
                        InvoiceStatus::try_from(invoice.status),
                        amount(invoice.total.as_ref())
                    )
                })
                .collect();
            waiting.tick(seen).await;
        };
        settled.insert(name, found);
    }
    settled
}

/// What one customer's two invoices must come to, worked out by hand from
/// the price book (crates/cli/demo/catalog.yaml).
struct Expected {
    /// `SUBSCRIPTION_CREATE` at 1 November: the platform fee in advance.
    opening: &'static str,
    /// The boundary at 1 December: November's usage (and proration), the
    /// December fee in advance, minus credits.
    december: &'static str,
    /// Status both end in: paid by card, or finalized (sent, awaiting a transfer).
    status: InvoiceStatus,
}

// | customer | November 1 | December 1 invoice, line by line | total |
// |---|---|---|---|
// | acme (Pro, card) | fee 499.00 | fee 499.00; GPU h100 3,600 s × 0.00125 = 4.50, a100 7,200 s × 0.00080 = 5.76, l4 10,000 s × 0.00022 = 2.20; images sdxl 5 × 0.004 = 0.02; tokens 13,000,000 (12,000,000 on time + 1,000,000 late; duplicates not counted): 10,000,000 × 0.0000021 = 21.00 + 3,000,000 × 0.0000015 = 4.50 → 25.50; requests 3 of 100,000 included → 0.00; subtotal 536.98; credits −100.00 | 436.98 |
// | globex (Starter → Pro on the 16th, card) | fee 49.00 | Starter tokens 2,000,000 × 0.0000025 = 5.00; Pro (tiers restart) tokens 4,000,000 × 0.0000021 = 8.40, GPU h100 1,800 s × 0.00125 = 2.25; proration: Starter fee back for 15 of 30 days −24.50, Pro fee for them +249.50; December fee 499.00 | 739.65 |
// | initech (Pro, invoice sent, net 30) | fee 499.00 | fee 499.00; images sdxl 250 × 0.004 = 1.00, flux_pro 20 × 0.03 = 0.60; GPU l4 36,000 s × 0.00022 = 7.92; tokens 500,000 × 0.0000021 = 1.05 | 509.57 |
const ACME: Expected = Expected {
    opening: "499.00",
    december: "436.98",
    status: InvoiceStatus::Paid,
};
const GLOBEX: Expected = Expected {
    opening: "49.00",
    december: "739.65",
    status: InvoiceStatus::Paid,
};
const INITECH: Expected = Expected {
    opening: "499.00",
    december: "509.57",
    status: InvoiceStatus::Finalized,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_billing_across_four_processes() {
    let test_started = Instant::now();
    let database = tally_testkit::postgres::database().await;
    let emulator = tally_testkit::pubsub::emulator_host().await;
    let stripe = FakeStripe::start(at(cluster::START).timestamp()).await;
    let cluster = Cluster::start(&database.url, &emulator, &stripe.uri()).await;
    let mut api = Clients::new(&cluster).await;
    let set_clock = |instant: &str| {
        cluster.set_clock(instant);
        stripe.set_now(at(instant).timestamp());
    };

    // The price book, applied with the CLI against rating.
    cluster.cli(
        &[
            "catalog",
            "apply",
            "-f",
            "-",
            "--address",
            cluster.address("rating"),
        ],
        Some(CATALOG),
    );
    let shown: serde_json::Value = serde_json::from_str(&cluster.cli(
        &[
            "catalog",
            "show",
            "--output",
            "json",
            "--address",
            cluster.address("rating"),
        ],
        None,
    ))
    .unwrap();
    let version_of = |code: &str| {
        shown["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|plan| plan["code"] == code)
            .and_then(|plan| plan["latestPublishedVersionId"].as_str())
            .unwrap()
            .to_owned()
    };
    let (pro, starter) = (version_of("inference_pro"), version_of("inference_starter"));

    // Three customers, subscribed from the first of the month.
    let acme = api
        .customer("acme", "Acme AI", CollectionMode::ChargeAutomatically)
        .await;
    let globex = api
        .customer("globex", "Globex Labs", CollectionMode::ChargeAutomatically)
        .await;
    let initech = api
        .customer("initech", "Initech", CollectionMode::SendInvoice)
        .await;
    let acme_sub = api.subscribe(&acme, &pro).await;
    let globex_sub = api.subscribe(&globex, &starter).await;
    let initech_sub = api.subscribe(&initech, &pro).await;

    // The 10th: the opening invoices are past their grace period, finalized
    // and collected (the card customers' are paid). Credits granted now go
    // to December's invoice.
    set_clock("2026-11-10T00:00:00Z");
    let customers = [
        ("acme", acme.as_str(), &ACME),
        ("globex", globex.as_str(), &GLOBEX),
        ("initech", initech.as_str(), &INITECH),
    ];
    settled_invoices(&mut api, &cluster, customers, 1).await;
    api.credits
        .grant_credit(call(
            &api.key,
            GrantCreditRequest {
                idempotency_key: "e2e-acme-prepaid".into(),
                customer_id: acme.clone(),
                kind: CreditGrantKind::Prepaid as i32,
                amount: usd("100.00"),
                description: "prepaid".into(),
                ..GrantCreditRequest::default()
            },
        ))
        .await
        .unwrap();

    // Usage over gRPC, with a duplicate (same id and payload: counted once).
    let mut batch = vec![
        event(
            "a-gpu-1",
            &acme,
            "gpu_seconds",
            "2026-11-03T10:00:00Z",
            &[("seconds", "3600"), ("gpu_type", "h100")],
        ),
        event(
            "a-gpu-2",
            &acme,
            "gpu_seconds",
            "2026-11-04T10:00:00Z",
            &[("seconds", "7200"), ("gpu_type", "a100")],
        ),
        event(
            "a-gpu-3",
            &acme,
            "gpu_seconds",
            "2026-11-05T10:00:00Z",
            &[("seconds", "10000"), ("gpu_type", "l4")],
        ),
        event(
            "g-tok-1",
            &globex,
            "llm_tokens",
            "2026-11-05T12:00:00Z",
            &[("tokens", "2000000")],
        ),
        event(
            "i-gpu-1",
            &initech,
            "gpu_seconds",
            "2026-11-06T08:00:00Z",
            &[("seconds", "36000"), ("gpu_type", "l4")],
        ),
    ];
    for n in 1..=5 {
        batch.push(event(
            &format!("a-img-{n}"),
            &acme,
            "images",
            "2026-11-07T09:00:00Z",
            &[("model", "sdxl")],
        ));
    }
    for n in 1..=3 {
        batch.push(event(
            &format!("a-req-{n}"),
            &acme,
            "api_requests",
            "2026-11-07T09:30:00Z",
            &[],
        ));
    }
    for n in 1..=250 {
        batch.push(event(
            &format!("i-img-sdxl-{n}"),
            &initech,
            "images",
            "2026-11-08T09:00:00Z",
            &[("model", "sdxl")],
        ));
    }
    for n in 1..=20 {
        batch.push(event(
            &format!("i-img-flux-{n}"),
            &initech,
            "images",
            "2026-11-08T10:00:00Z",
            &[("model", "flux_pro")],
        ));
    }
    let count = batch.len();
    let outcomes = api.ingest(batch.clone()).await;
    assert_eq!(outcomes, vec![EventOutcome::Accepted; count]);
    let again = api.ingest(batch[..1].to_vec()).await;
    assert_eq!(
        again,
        vec![EventOutcome::Duplicate],
        "a re-sent event is a duplicate"
    );

    // Usage published on Pub/Sub, one message twice (at-least-once publishers).
    let publisher = PubSubBus::connect(
        tally_testkit::pubsub::TEST_PROJECT,
        Some(&cluster.emulator_host),
        &cluster.name_prefix,
    )
    .await
    .unwrap();
    let published = [
        ("a-tok-1", &acme, "2026-11-06T10:00:00Z", "4000000"),
        ("a-tok-2", &acme, "2026-11-07T10:00:00Z", "4000000"),
        ("a-tok-3", &acme, "2026-11-08T10:00:00Z", "4000000"),
        ("a-tok-2", &acme, "2026-11-07T10:00:00Z", "4000000"),
        ("i-tok-1", &initech, "2026-11-09T10:00:00Z", "500000"),
    ];
    for (id, customer, at, tokens) in published {
        let usage = event(id, customer, "llm_tokens", at, &[("tokens", tokens)]);
        publisher
            .publish(topics::USAGE_EVENTS, pubsub_message(&usage, at))
            .await
            .unwrap();
    }

    // The 16th: Globex upgrades to Pro at once, prorated by the second.
    set_clock("2026-11-16T00:00:00Z");
    api.subscriptions
        .change_plan(call(
            &api.key,
            ChangePlanRequest {
                idempotency_key: "e2e-globex-upgrade".into(),
                subscription_id: globex_sub.clone(),
                plan_version_id: pro.clone(),
                timing: ChangeTiming::Immediately as i32,
                proration_policy: ProrationPolicy::Prorate as i32,
                ..ChangePlanRequest::default()
            },
        ))
        .await
        .unwrap();

    // The rest of November's usage, after the upgrade (Pro's tiers restart).
    set_clock("2026-11-30T12:00:00Z");
    let later = vec![event(
        "g-gpu-1",
        &globex,
        "gpu_seconds",
        "2026-11-21T08:00:00Z",
        &[("seconds", "1800"), ("gpu_type", "h100")],
    )];
    assert_eq!(api.ingest(later).await, vec![EventOutcome::Accepted]);
    let upgraded = event(
        "g-tok-2",
        &globex,
        "llm_tokens",
        "2026-11-20T10:00:00Z",
        &[("tokens", "4000000")],
    );
    publisher
        .publish(
            topics::USAGE_EVENTS,
            pubsub_message(&upgraded, "2026-11-20T10:00:00Z"),
        )
        .await
        .unwrap();

    // Everything sent so far is rated before the month ends (it travels
    // ingest → Pub/Sub → rating; the late event is still to come).
    for (subscription, total) in [
        (&acme_sub, "36.48"),
        (&globex_sub, "15.65"),
        (&initech_sub, "10.57"),
    ] {
        let waiting = Waiting::new(
            &cluster,
            format!("November usage of {subscription} = {total}"),
        );
        loop {
            let seen = api.november_usage(subscription).await;
            if seen.as_deref() == Ok(total) {
                break;
            }
            waiting.tick(seen).await;
        }
    }

    // December 1st, 01:00: the bill run drafts December's invoices; their
    // grace period (24 h) is still running when a late event arrives.
    set_clock("2026-12-01T01:00:00Z");
    let late = event(
        "a-tok-late",
        &acme,
        "llm_tokens",
        "2026-11-30T23:00:00Z",
        &[("tokens", "1000000")],
    );
    assert_eq!(api.ingest(vec![late]).await, vec![EventOutcome::Accepted]);
    let waiting = Waiting::new(&cluster, "the late event rated: 37.98");
    loop {
        let seen = api.november_usage(&acme_sub).await;
        if seen.as_deref() == Ok("37.98") {
            break;
        }
        waiting.tick(seen).await;
    }

    // December 2nd: grace over, the bill run finalizes; payments mirrors each
    // invoice to Stripe and charges the card customers.
    set_clock("2026-12-02T01:00:00Z");
    let customers = [
        ("acme", acme.as_str(), &ACME),
        ("globex", globex.as_str(), &GLOBEX),
        ("initech", initech.as_str(), &INITECH),
    ];
    let finals = settled_invoices(&mut api, &cluster, customers, 2).await;

    // The exact totals, and what Stripe was sent for each invoice.
    for (name, expected) in [("acme", &ACME), ("globex", &GLOBEX), ("initech", &INITECH)] {
        let invoices = &finals[name];
        let totals: Vec<String> = invoices
            .iter()
            .map(|invoice| amount(invoice.total.as_ref()))
            .collect();
        assert_eq!(
            totals,
            [expected.opening, expected.december],
            "{name}: invoice totals"
        );
        for invoice in invoices {
            let lines: i64 = invoice
                .lines
                .iter()
                .map(|line| cents(&amount(line.amount.as_ref())))
                .sum();
            assert_eq!(
                lines,
                cents(&amount(invoice.total.as_ref())),
                "{name}: lines add up to the total"
            );
            let mirrored = stripe
                .invoice_of(&invoice.id)
                .unwrap_or_else(|| panic!("{name}: no Stripe invoice for {}", invoice.id));
            let items = stripe.items_of(mirrored["id"].as_str().unwrap());
            let due = cents(&amount(invoice.total.as_ref()));
            assert_eq!(
                items.iter().map(|item| item.amount).sum::<i64>(),
                due,
                "{name}: Stripe items"
            );
            assert_eq!(mirrored["amount_due"], due, "{name}: Stripe's amount due");
            for item in &items {
                let line = invoice
                    .lines
                    .iter()
                    .find(|line| line.id == item.tally_line_id)
                    .unwrap_or_else(|| {
                        panic!("{name}: item for unknown line {}", item.tally_line_id)
                    });
                assert_eq!(
                    item.amount,
                    cents(&amount(line.amount.as_ref())),
                    "{name}: item of {}",
                    line.description
                );
            }
        }
    }
    assert_eq!(
        stripe.posts_without_key(),
        Vec::<String>::new(),
        "every Stripe call carries an idempotency key"
    );
    assert!(stripe.keyed_posts() > 0);
    // Globex's upgrade explains itself: Starter's unused half month credited,
    // Pro's half month charged, both for 16 November → 1 December.
    let prorations: Vec<(String, String, String, String)> = finals["globex"][1]
        .lines
        .iter()
        .filter_map(|line| match &line.detail {
            Some(Detail::Proration(detail)) => {
                let range = detail.prorated_period.as_ref().unwrap();
                Some((
                    amount(line.amount.as_ref()),
                    range.start_time.unwrap().seconds.to_string(),
                    range.end_time.unwrap().seconds.to_string(),
                    detail.factor.as_ref().unwrap().value.clone(),
                ))
            }
            _ => None,
        })
        .collect();
    let (half, end) = (
        at("2026-11-16T00:00:00Z").timestamp().to_string(),
        at("2026-12-01T00:00:00Z").timestamp().to_string(),
    );
    let mut expected = vec![
        (
            "-24.50".to_owned(),
            half.clone(),
            end.clone(),
            "0.5".to_owned(),
        ),
        ("249.50".to_owned(), half, end, "0.5".to_owned()),
    ];
    expected.sort();
    let mut seen = prorations;
    seen.sort();
    assert_eq!(
        seen, expected,
        "globex: proration lines and their explanation"
    );
    let acme_december = &finals["acme"][1];
    assert_eq!(amount(acme_december.credits_applied.as_ref()), "-100.00");
    assert_eq!(amount(acme_december.subtotal.as_ref()), "536.98");

    // Initech pays December's invoice by bank transfer: Stripe marks it paid
    // and posts a signed `invoice.paid` to payments' webhook endpoint.
    let initech_december = finals["initech"][1].clone();
    let stripe_invoice = stripe.invoice_of(&initech_december.id).unwrap();
    let stripe_invoice_id = stripe_invoice["id"].as_str().unwrap().to_owned();
    let paid = stripe.pay_out_of_band(&stripe_invoice_id);
    let now = at("2026-12-02T01:00:00Z").timestamp();
    let payload = stripe::event("evt_1E2eInvoicePaid", "invoice.paid", now, paid).to_string();
    let http = post_webhook(
        &cluster.webhook_url,
        &payload,
        &stripe::signature(&payload, now),
    )
    .await;
    assert_eq!(http.0, 200, "webhook answer: {}", http.1);
    // Stripe delivers at least once: a redelivery changes nothing.
    let again = post_webhook(
        &cluster.webhook_url,
        &payload,
        &stripe::signature(&payload, now),
    )
    .await;
    assert_eq!(again, (200, "duplicate".to_owned()));
    // A body that does not match its signature is refused.
    let forged = payload.replace("evt_1E2eInvoicePaid", "evt_1E2eForged");
    let refused = post_webhook(
        &cluster.webhook_url,
        &forged,
        &stripe::signature(&payload, now),
    )
    .await;
    assert_eq!(
        refused.0, 400,
        "a forged delivery is refused: {}",
        refused.1
    );
    let waiting = Waiting::new(&cluster, "the webhook marks the invoice paid");
    let paid_invoice = loop {
        let invoices = api.invoices_of(&initech).await;
        let december = invoices
            .into_iter()
            .find(|invoice| invoice.id == initech_december.id)
            .unwrap();
        if december.status == InvoiceStatus::Paid as i32 {
            break december;
        }
        waiting.tick(december.status).await;
    };
    assert_eq!(amount(paid_invoice.amount_paid.as_ref()), INITECH.december);

    // A partial refund through payments becomes a credit note in invoicing.
    let payment = api
        .payments
        .list_payments(call(
            &api.key,
            ListPaymentsRequest {
                invoice_id: initech_december.id.clone(),
                ..ListPaymentsRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .payments
        .into_iter()
        .next()
        .expect("a payment of the paid invoice");
    let refund = api
        .payments
        .refund(call(
            &api.key,
            RefundRequest {
                idempotency_key: "e2e-initech-refund".into(),
                payment_id: payment.id.clone(),
                amount: usd("100.00"),
                reason: RefundReason::RequestedByCustomer as i32,
                memo: "goodwill".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let refund_id = refund.refund.unwrap().id;
    let waiting = Waiting::new(&cluster, "the refund's credit note");
    let note = loop {
        let notes = api
            .invoices
            .list_credit_notes(call(
                &api.key,
                ListCreditNotesRequest {
                    invoice_id: initech_december.id.clone(),
                    ..ListCreditNotesRequest::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .credit_notes;
        if let Some(note) = notes.into_iter().next() {
            break note;
        }
        waiting.tick("none").await;
    };
    assert_eq!(amount(note.total.as_ref()), "100.00");
    assert_eq!(note.reason, CreditNoteReason::Refund as i32);
    assert_eq!(note.refund_id, refund_id);
    let charge = stripe.charge_of(&stripe_invoice_id).unwrap();
    assert_eq!(charge["amount_refunded"], 10_000, "Stripe refunded 100.00");

    // Finance's check: Tally and Stripe agree on every invoice, charge, refund
    // and balance transaction of the month (`tally reconcile` exits 1
    // otherwise). The window must have ended: an hour later, it has.
    set_clock("2026-12-02T02:00:00Z");
    let reconciled: serde_json::Value = serde_json::from_str(&cluster.cli(
        &[
            "reconcile",
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-12-02T02:00:00Z",
            "--address",
            cluster.address("payments"),
            "--output",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(
        reconciled["findings"],
        serde_json::json!([]),
        "{reconciled}"
    );
    let matched: u64 = reconciled["report"]["summary"]["matched"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    // 6 invoices, 5 charges, 1 refund and their 6 balance transactions.
    assert_eq!(matched, 18, "{reconciled}");

    let elapsed = test_started.elapsed();
    eprintln!("end-to-end test took {elapsed:?}");
}
