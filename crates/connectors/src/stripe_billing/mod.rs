//! The Stripe Billing adapter: reads a Stripe Billing account — customers,
//! prices, subscriptions (for `tally migrate import`) and a customer's
//! invoices for a period (for parity) — with async-stripe, as payments
//! speaks to Stripe (the same pinned version and API version, strict
//! parsing with its own types). Stripe's types never leave this module:
//! what it answers is [`crate::import`]'s and [`crate::biller`]'s types.
//!
//! Read-only: it never creates, updates or cancels anything in Stripe, so
//! an import or a comparison cannot email or charge anybody there. As an
//! [`ExternalBiller`] it only lists invoices; mirroring and forwarding
//! usage are refused with the reason (Tally replaces Stripe Billing, it
//! does not feed it).

mod client;
mod convert;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use stripe_billing::invoice::ListInvoice;
use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};
use stripe_core::customer::ListCustomer;
use stripe_shared::{Customer, Invoice, InvoiceLineItem, Price, Subscription};
use stripe_types::{RangeBoundsTs, RangeQueryTs};

pub use client::{API_KEY_VARIABLE, StripeBillingKey, StripeBillingSettings};
use client::{Http, ListPage};

use crate::biller::{
    BillerCustomer, BillerError, CustomerMirror, ExternalBiller, ExternalInvoice,
    ExternalWebhookEvent, InvoiceQuery, Mirrored, NotSent, Sent, SubscriptionMirror, UsageRecord,
    WebhookDelivery, WebhookRefusal,
};
use crate::import::{ImportSource, SourceCustomer, SourceError, SourcePrice, SourceSubscription};

/// A Stripe Billing account, read.
#[derive(Debug, Clone)]
pub struct StripeBilling {
    http: Http,
}

impl StripeBilling {
    /// A reader of the account `key` opens.
    pub fn new(
        settings: StripeBillingSettings,
        key: &StripeBillingKey,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            http: Http::new(settings, key)?,
        })
    }

    /// A customer's invoices dated (finalized, else created) in `[from, to)`,
    /// every line included. Drafts have no date yet and are read by their
    /// creation.
    pub async fn customer_invoices(
        &self,
        stripe_customer_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ExternalInvoice>, SourceError> {
        let invoices: Vec<Invoice> = self
            .http
            .list_all(
                |after| {
                    let mut request = ListInvoice::new()
                        .customer(stripe_customer_id)
                        .created(RangeQueryTs::Bounds(RangeBoundsTs {
                            gt: None,
                            gte: Some(from.timestamp()),
                            lt: Some(to.timestamp()),
                            lte: None,
                        }))
                        .limit(100);
                    if let Some(after) = after {
                        request = request.starting_after(after);
                    }
                    request
                },
                |invoice: &Invoice| {
                    invoice
                        .id
                        .as_ref()
                        .map(|id| id.as_str().to_owned())
                        .unwrap_or_default()
                },
            )
            .await?;
        let mut read = Vec::with_capacity(invoices.len());
        for invoice in &invoices {
            let lines = self.all_lines(invoice).await?;
            read.push(convert::invoice(invoice, &lines)?);
        }
        read.sort_by(|a, b| (a.invoice_date, &a.id).cmp(&(b.invoice_date, &b.id)));
        Ok(read)
    }

    /// An invoice's lines: the first page comes with it; the rest from
    /// `/v1/invoices/{id}/lines`.
    async fn all_lines(&self, invoice: &Invoice) -> Result<Vec<InvoiceLineItem>, SourceError> {
        let mut lines = invoice.lines.data.clone();
        let Some(id) = invoice.id.as_ref().map(|id| id.as_str().to_owned()) else {
            return Ok(lines);
        };
        if invoice.lines.has_more {
            let path = format!("/invoices/{id}/lines");
            let after = lines.last().map(|line| line.id.as_str().to_owned());
            let mut rest: Vec<InvoiceLineItem> = Vec::new();
            let mut cursor = after;
            loop {
                let page = self
                    .http
                    .send(&ListPage::<InvoiceLineItem>::new(
                        path.clone(),
                        cursor.as_deref(),
                    ))
                    .await?;
                cursor = page.data.last().map(|line| line.id.as_str().to_owned());
                let more = page.has_more && cursor.is_some();
                rest.extend(page.data);
                if !more {
                    break;
                }
            }
            lines.extend(rest);
        }
        Ok(lines)
    }
}

#[async_trait]
impl ImportSource for StripeBilling {
    fn source_name(&self) -> &'static str {
        "stripe"
    }

    async fn list_customers(&self) -> Result<Vec<SourceCustomer>, SourceError> {
        let customers: Vec<Customer> = self
            .http
            .list_all(
                |after| {
                    let mut request = ListCustomer::new().limit(100);
                    if let Some(after) = after {
                        request = request.starting_after(after);
                    }
                    request
                },
                |customer: &Customer| customer.id.as_str().to_owned(),
            )
            .await?;
        customers.iter().map(convert::customer).collect()
    }

    async fn list_prices(&self) -> Result<Vec<SourcePrice>, SourceError> {
        let prices: Vec<Price> = self
            .http
            .list_all(
                |after| ListPage::<Price>::new("/prices", after),
                |price: &Price| price.id.as_str().to_owned(),
            )
            .await?;
        prices.iter().map(convert::price).collect()
    }

    async fn list_subscriptions(&self) -> Result<Vec<SourceSubscription>, SourceError> {
        let subscriptions: Vec<Subscription> = self
            .http
            .list_all(
                |after| {
                    // Without `status=all` Stripe leaves out canceled ones;
                    // the plan reports them as not imported.
                    let mut request = ListSubscription::new()
                        .status(ListSubscriptionStatus::All)
                        .limit(100);
                    if let Some(after) = after {
                        request = request.starting_after(after);
                    }
                    request
                },
                |subscription: &Subscription| subscription.id.as_str().to_owned(),
            )
            .await?;
        subscriptions.iter().map(convert::subscription).collect()
    }
}

/// What the adapter answers to the calls it does not make.
fn read_only(operation: &str) -> NotSent {
    NotSent {
        error: BillerError::Refused {
            status: 405,
            reason: format!(
                "the Stripe Billing adapter only reads (import and invoices); it does not {operation}"
            ),
        },
        attempts: 0,
    }
}

fn biller_error(error: SourceError) -> NotSent {
    let error = match error {
        SourceError::Unavailable { message, .. } => BillerError::Unavailable {
            message: format!("Stripe: {message}"),
            retry_after: None,
        },
        SourceError::Unauthorized { status, .. } => BillerError::Unauthorized { status },
        SourceError::Refused { status, reason, .. } => BillerError::Refused {
            status,
            reason: format!("Stripe: {reason}"),
        },
        SourceError::Unreadable { message, .. } => {
            BillerError::Unreadable(format!("Stripe: {message}"))
        }
    };
    NotSent { error, attempts: 1 }
}

#[async_trait]
impl ExternalBiller for StripeBilling {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn mirror_customer(&self, _customer: &CustomerMirror) -> Result<Sent<Mirrored>, NotSent> {
        Err(read_only("mirror customers"))
    }

    async fn mirror_subscription(
        &self,
        _subscription: &SubscriptionMirror,
    ) -> Result<Sent<Mirrored>, NotSent> {
        Err(read_only("mirror subscriptions"))
    }

    async fn forward_usage(&self, _events: &[UsageRecord]) -> Result<Sent, NotSent> {
        Err(read_only("forward usage"))
    }

    async fn list_invoices(&self, query: &InvoiceQuery) -> Result<Vec<ExternalInvoice>, NotSent> {
        let customer = match &query.customer {
            BillerCustomer::Id(id) | BillerCustomer::ExternalId(id) => id,
        };
        self.customer_invoices(customer, query.from, query.to)
            .await
            .map_err(biller_error)
    }

    fn verify_webhook(
        &self,
        _delivery: &WebhookDelivery<'_>,
        _now: DateTime<Utc>,
    ) -> Result<ExternalWebhookEvent, WebhookRefusal> {
        // Stripe's webhooks reach payments' endpoint; connectors receives Orb's.
        Err(WebhookRefusal::NoSecret)
    }
}
