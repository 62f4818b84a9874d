//! What the scenario is written with: time and money helpers, a wait with a
//! deadline, usage events, and gRPC clients of the services carrying the
//! admin key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tally_bus::Message;
use tally_proto::common::{Money, TimeRange};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};
use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::{
    Address, CollectionMode, CreateCustomerRequest, CreateSubscriptionRequest, Invoice,
    InvoiceStatus, ListInvoicesRequest,
};
use tally_proto::payments::payment_service_client::PaymentServiceClient;
use tally_proto::rating::GetUsageChargesRequest;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tonic::transport::Channel;

use crate::cluster::{self, Cluster};

/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(60);

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

pub fn timestamp(text: &str) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at(text).timestamp(),
        nanos: 0,
    }
}

pub fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        currency: "USD".into(),
        amount: amount.into(),
    })
}

pub fn amount(money: Option<&Money>) -> String {
    money.map(|money| money.amount.clone()).unwrap_or_default()
}

/// Cents of a decimal string such as `"436.98"` (exact: no floats).
pub fn cents(amount: &str) -> i64 {
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
pub struct Waiting<'a> {
    cluster: &'a Cluster,
    what: String,
    started: Instant,
}

impl<'a> Waiting<'a> {
    pub fn new(cluster: &'a Cluster, what: impl Into<String>) -> Self {
        Self {
            cluster,
            what: what.into(),
            started: Instant::now(),
        }
    }

    pub async fn tick(&self, last_seen: impl std::fmt::Debug) {
        assert!(
            self.started.elapsed() < DEADLINE,
            "timed out waiting for {}; last seen: {last_seen:?}\n{}",
            self.what,
            self.cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gRPC request carrying `key`.
pub fn call<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

pub fn event(
    id: &str,
    customer: &str,
    meter: &str,
    at: &str,
    properties: &[(&str, &str)],
) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        customer_id: customer.into(),
        event_type: meter.into(),
        timestamp: Some(timestamp(at)),
        properties: properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        source: "e2e".into(),
    }
}

/// The event in the proto3 JSON mapping, as a foreign publisher puts it on
/// the `usage-events` topic: no tally-* attributes, only the content type.
pub fn pubsub_message(event: &UsageEvent) -> Message {
    let time = event.timestamp.unwrap_or_default();
    let body = serde_json::json!({
        "id": event.id,
        "customerId": event.customer_id,
        "eventType": event.event_type,
        "timestamp": DateTime::from_timestamp(time.seconds, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "properties": event.properties,
    });
    let mut message = Message::new("", 1, body.to_string().into_bytes())
        .with_attribute("content-type", "application/json")
        .with_ordering_key(event.customer_id.clone());
    message.message_type = String::new();
    message
}

/// Posts a webhook delivery; returns the HTTP status and body.
pub async fn post_webhook(url: &str, payload: &str, signature: &str) -> (u16, String) {
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

/// The services' gRPC clients, each call with the admin key.
pub struct Clients {
    pub key: String,
    pub ingest: IngestServiceClient<Channel>,
    pub rating: RatingServiceClient<Channel>,
    pub customers: CustomerServiceClient<Channel>,
    pub subscriptions: SubscriptionServiceClient<Channel>,
    pub invoices: InvoiceServiceClient<Channel>,
    pub credits: CreditServiceClient<Channel>,
    pub payments: PaymentServiceClient<Channel>,
}

impl Clients {
    pub async fn new(cluster: &Cluster) -> Self {
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

    /// A customer in Berlin paying in USD; returns its id.
    pub async fn customer(
        &mut self,
        external_id: &str,
        name: &str,
        mode: CollectionMode,
    ) -> String {
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

    /// A subscription from the start of the month, without a trial; returns its id.
    pub async fn subscribe(&mut self, customer: &str, plan_version: &str) -> String {
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
    pub async fn ingest(&mut self, events: Vec<UsageEvent>) -> Vec<EventOutcome> {
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

    /// Waits until rating prices the subscription's November usage at `total`.
    pub async fn wait_for_november_usage(
        &mut self,
        cluster: &Cluster,
        subscription: &str,
        total: &str,
    ) {
        let waiting = Waiting::new(
            cluster,
            format!("November usage of {subscription} = {total}"),
        );
        loop {
            let request = GetUsageChargesRequest {
                subscription_id: subscription.into(),
                period: Some(TimeRange {
                    start_time: Some(timestamp("2026-11-01T00:00:00Z")),
                    end_time: Some(timestamp("2026-12-01T00:00:00Z")),
                }),
            };
            let seen = self
                .rating
                .get_usage_charges(call(&self.key, request))
                .await
                .map(|response| amount(response.into_inner().total.as_ref()))
                .map_err(|status| status.to_string());
            if seen.as_deref() == Ok(total) {
                return;
            }
            waiting.tick(seen).await;
        }
    }

    /// The customer's invoices with their lines, in number order (numbers
    /// are gapless and given at finalization).
    pub async fn invoices_of(&mut self, customer: &str) -> Vec<Invoice> {
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
        invoices.sort_by(|a, b| a.number.cmp(&b.number));
        invoices
    }

    /// Waits until each customer has `count` invoices, all in its status;
    /// returns them by customer name.
    pub async fn settled_invoices<'a>(
        &mut self,
        cluster: &Cluster,
        customers: &[(&'a str, String, InvoiceStatus)],
        count: usize,
    ) -> BTreeMap<&'a str, Vec<Invoice>> {
        let mut settled = BTreeMap::new();
        for (name, customer, status) in customers {
            let waiting = Waiting::new(cluster, format!("{name}: {count} {status:?} invoices"));
            let found = loop {
                let invoices = self.invoices_of(customer).await;
                if invoices.len() == count
                    && invoices
                        .iter()
                        .all(|invoice| invoice.status == *status as i32)
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
            settled.insert(*name, found);
        }
        settled
    }
}
