//! Stripe invoices: the draft, its items, finalization, collection, void,
//! uncollectible and the current state.

use stripe_billing::InvoiceCollectionMethod;
use stripe_billing::invoice::{
    CreateInvoice, CreateInvoicePendingInvoiceItemsBehavior, FinalizeInvoiceInvoice,
    MarkUncollectibleInvoice, PayInvoice, RetrieveInvoice, SendInvoiceInvoice, VoidInvoiceInvoice,
};
use stripe_billing::invoice_item::CreateInvoiceItem;
use tally_domain::money::{Currency, Money};

use super::{RemoteInvoice, Stripe, StripeError, metadata, to_minor_units, typed_currency};

/// One invoice item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceItem {
    /// The Tally line, `il_…` (metadata `tally_line_id`).
    pub tally_line_id: String,
    /// Printed text.
    pub description: String,
    /// Amount (rounded; negative for credits).
    pub amount: Money,
}

/// How Stripe collects an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Payments charges the default payment method (`/pay`).
    ChargeAutomatically,
    /// Stripe emails the invoice, due after `days_until_due`.
    SendInvoice {
        /// Net terms.
        days_until_due: u32,
    },
}

impl Stripe {
    /// Creates an empty draft invoice that takes no pending items and does
    /// not advance by itself (payments drives collection and dunning).
    pub async fn create_invoice(
        &self,
        tally_invoice_id: &str,
        tally_invoice_number: &str,
        stripe_customer_id: &str,
        currency: Currency,
        collection: Collection,
    ) -> Result<RemoteInvoice, StripeError> {
        let mut metadata = metadata("tally_invoice_id", tally_invoice_id);
        if !tally_invoice_number.is_empty() {
            metadata.insert(
                "tally_invoice_number".into(),
                tally_invoice_number.to_owned(),
            );
        }
        let mut request = CreateInvoice::new()
            .customer(stripe_customer_id)
            .currency(typed_currency(currency))
            .auto_advance(false)
            .pending_invoice_items_behavior(CreateInvoicePendingInvoiceItemsBehavior::Exclude)
            .metadata(metadata);
        request = match collection {
            Collection::ChargeAutomatically => {
                request.collection_method(InvoiceCollectionMethod::ChargeAutomatically)
            }
            Collection::SendInvoice { days_until_due } => request
                .collection_method(InvoiceCollectionMethod::SendInvoice)
                .days_until_due(days_until_due),
        };
        let key = format!("tally:invoice:{tally_invoice_id}:create");
        let invoice = self.http.send(&request, Some(&key)).await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// Adds one line to a draft invoice; returns the invoice item id.
    pub async fn create_invoice_item(
        &self,
        stripe_customer_id: &str,
        stripe_invoice_id: &str,
        item: &InvoiceItem,
    ) -> Result<String, StripeError> {
        let request = CreateInvoiceItem::new()
            .customer(stripe_customer_id)
            .invoice(stripe_invoice_id)
            .amount(to_minor_units(&item.amount)?)
            .currency(typed_currency(item.amount.currency()))
            .description(item.description.as_str())
            .metadata(metadata("tally_line_id", &item.tally_line_id));
        let key = format!("tally:invoice_item:{}:create", item.tally_line_id);
        let created = self.http.send(&request, Some(&key)).await?;
        Ok(created.id.as_str().to_owned())
    }

    /// Finalizes a draft invoice (still without auto-advance).
    pub async fn finalize_invoice(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
    ) -> Result<RemoteInvoice, StripeError> {
        let request = FinalizeInvoiceInvoice::new(stripe_invoice_id).auto_advance(false);
        let key = format!("tally:invoice:{tally_invoice_id}:finalize");
        let invoice = self.http.send(&request, Some(&key)).await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// Charges the invoice now; attempt `attempt` of the payment (part of
    /// the idempotency key, so a retry of the same attempt is one charge).
    pub async fn pay_invoice(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
        attempt: u32,
    ) -> Result<RemoteInvoice, StripeError> {
        let request = PayInvoice::new(stripe_invoice_id).expand(with_payments());
        let key = format!("tally:invoice:{tally_invoice_id}:pay:{attempt}");
        let invoice = self.http.send(&request, Some(&key)).await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// Emails the invoice to the customer.
    pub async fn send_invoice(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
    ) -> Result<RemoteInvoice, StripeError> {
        let key = format!("tally:invoice:{tally_invoice_id}:send");
        let invoice = self
            .http
            .send(&SendInvoiceInvoice::new(stripe_invoice_id), Some(&key))
            .await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// Voids a finalized invoice.
    pub async fn void_invoice(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
    ) -> Result<RemoteInvoice, StripeError> {
        let key = format!("tally:invoice:{tally_invoice_id}:void");
        let invoice = self
            .http
            .send(&VoidInvoiceInvoice::new(stripe_invoice_id), Some(&key))
            .await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// Marks an open invoice uncollectible (the end of dunning).
    pub async fn mark_uncollectible(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
    ) -> Result<RemoteInvoice, StripeError> {
        let request = MarkUncollectibleInvoice::new(stripe_invoice_id).expand(with_payments());
        let key = format!("tally:invoice:{tally_invoice_id}:mark_uncollectible");
        let invoice = self.http.send(&request, Some(&key)).await?;
        RemoteInvoice::from_stripe(&invoice)
    }

    /// The invoice as Stripe has it now.
    pub async fn get_invoice(&self, stripe_invoice_id: &str) -> Result<RemoteInvoice, StripeError> {
        let request = RetrieveInvoice::new(stripe_invoice_id).expand(with_payments());
        let invoice = self.http.send(&request, None).await?;
        RemoteInvoice::from_stripe(&invoice)
    }
}

/// Expansions that make an invoice answer carry its payments with their
/// PaymentIntents (whose latest charge is the invoice's charge): in
/// async-stripe's API version these replace the invoice's own `charge` and
/// `payment_intent`.
fn with_payments() -> Vec<String> {
    vec![
        "payments".to_owned(),
        "payments.data.payment.payment_intent".to_owned(),
    ]
}
