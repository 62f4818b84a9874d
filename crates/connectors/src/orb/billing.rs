//! Orb as an [`ExternalBiller`]: customers and subscriptions mirrored with
//! an `Idempotency-Key` derived from Tally's id (so a retry after a 500, or
//! a redelivered fact, is the same Orb object), invoices read page by page
//! over Orb's cursor, webhooks verified ([`super::webhook`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::wire_billing::{Created, InvoicePage, NewCustomer, NewSubscription};
use super::{OrbClient, OrbError, object, webhook};
use crate::biller::{
    BillerCustomer, CustomerMirror, ExternalBiller, ExternalInvoice, ExternalWebhookEvent,
    InvoiceQuery, Mirrored, NotSent, Sent, SubscriptionMirror, UsageRecord, WebhookDelivery,
    WebhookRefusal,
};

/// Invoices asked for per page (Orb's maximum).
const INVOICE_PAGE_LIMIT: u32 = 100;

/// The `Idempotency-Key` of mirroring the customer `customer_id`.
pub fn customer_idempotency_key(customer_id: &str) -> String {
    format!("tally-customer-{customer_id}")
}

/// The `Idempotency-Key` of mirroring the subscription `subscription_id`.
pub fn subscription_idempotency_key(subscription_id: &str) -> String {
    format!("tally-subscription-{subscription_id}")
}

/// Orb's date filters: ISO 8601 in UTC.
fn iso(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn encoding_failed(error: &serde_json::Error) -> NotSent {
    NotSent {
        error: OrbError::Unreadable(format!("cannot encode the request: {error}")),
        attempts: 0,
    }
}

impl OrbClient {
    /// `POST path` with `body` and `Idempotency-Key: key`, retried with the
    /// same key; the created object's id.
    async fn create(
        &self,
        what: &str,
        path: &str,
        body: Vec<u8>,
        key: &str,
    ) -> Result<Sent<Mirrored>, NotSent> {
        let url = self.url(path, &[])?;
        let sent = self
            .retrying(what, || async {
                let reply = self
                    .send_once(reqwest::Method::POST, url.clone(), Some(&body), Some(key))
                    .await?;
                object::<Created>(&reply)
            })
            .await?;
        Ok(Sent {
            answer: Mirrored {
                biller_id: sent.answer.id,
            },
            attempts: sent.attempts,
        })
    }

    /// Creates the Orb customer of a Tally customer.
    pub async fn create_customer(
        &self,
        customer: &CustomerMirror,
    ) -> Result<Sent<Mirrored>, NotSent> {
        let body = serde_json::to_vec(&NewCustomer::from_mirror(customer))
            .map_err(|error| encoding_failed(&error))?;
        let key = customer_idempotency_key(&customer.customer_id);
        self.create("create customer", "/v1/customers", body, &key)
            .await
    }

    /// Creates the Orb subscription of a Tally subscription.
    pub async fn create_subscription(
        &self,
        subscription: &SubscriptionMirror,
    ) -> Result<Sent<Mirrored>, NotSent> {
        let body = serde_json::to_vec(&NewSubscription::from_mirror(subscription))
            .map_err(|error| encoding_failed(&error))?;
        let key = subscription_idempotency_key(&subscription.subscription_id);
        self.create("create subscription", "/v1/subscriptions", body, &key)
            .await
    }

    /// Every invoice of `query`, following `next_cursor` while `has_more`.
    pub async fn invoices(&self, query: &InvoiceQuery) -> Result<Vec<ExternalInvoice>, NotSent> {
        let (customer_field, customer) = match &query.customer {
            BillerCustomer::Id(id) => ("customer_id", id.clone()),
            BillerCustomer::ExternalId(id) => ("external_customer_id", id.clone()),
        };
        let mut invoices = Vec::new();
        let mut cursor: Option<String> = None;
        let mut attempts = 0;
        loop {
            let mut parameters = vec![
                (customer_field, customer.clone()),
                ("invoice_date[gte]", iso(query.from)),
                ("invoice_date[lt]", iso(query.to)),
                ("limit", INVOICE_PAGE_LIMIT.to_string()),
            ];
            if let Some(cursor) = &cursor {
                parameters.push(("cursor", cursor.clone()));
            }
            let url = self.url("/v1/invoices", &parameters)?;
            let page = self
                .retrying("list invoices", || async {
                    let reply = self
                        .send_once(reqwest::Method::GET, url.clone(), None, None)
                        .await?;
                    object::<InvoicePage>(&reply)
                })
                .await
                .map_err(|not_sent| NotSent {
                    attempts: not_sent.attempts + attempts,
                    ..not_sent
                })?;
            attempts += page.attempts;
            for invoice in page.answer.data {
                invoices.push(invoice.into_external().map_err(|reason| NotSent {
                    error: OrbError::Unreadable(reason),
                    attempts,
                })?);
            }
            let metadata = page.answer.pagination_metadata;
            match metadata.next_cursor {
                Some(next) if metadata.has_more && !next.is_empty() => cursor = Some(next),
                _ => return Ok(invoices),
            }
        }
    }
}

#[async_trait]
impl ExternalBiller for OrbClient {
    fn name(&self) -> &'static str {
        "orb"
    }

    async fn mirror_customer(&self, customer: &CustomerMirror) -> Result<Sent<Mirrored>, NotSent> {
        self.create_customer(customer).await
    }

    async fn mirror_subscription(
        &self,
        subscription: &SubscriptionMirror,
    ) -> Result<Sent<Mirrored>, NotSent> {
        self.create_subscription(subscription).await
    }

    async fn forward_usage(&self, events: &[UsageRecord]) -> Result<Sent, NotSent> {
        self.ingest(events).await
    }

    async fn list_invoices(&self, query: &InvoiceQuery) -> Result<Vec<ExternalInvoice>, NotSent> {
        self.invoices(query).await
    }

    fn verify_webhook(
        &self,
        delivery: &WebhookDelivery<'_>,
        now: DateTime<Utc>,
    ) -> Result<ExternalWebhookEvent, WebhookRefusal> {
        webhook::verify(self.webhook_secret.as_ref(), delivery, now)
    }
}
