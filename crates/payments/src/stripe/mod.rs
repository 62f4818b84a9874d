//! The Stripe adapter: the only code that knows Stripe's wire format.
//!
//! Payments talks to Stripe through [`Stripe`], whose methods are the calls
//! payments makes, built on async-stripe 1.0 (`=1.0.0-rc.10`): its typed
//! requests (`CreateCustomer`, `PayInvoice`, `CreateCreditNote`, …), sent by
//! its client (hyper, rustls with aws-lc-rs) with our retry loop around each
//! (`client`), and its types converted into payments' views ([`objects`]),
//! so nothing outside this module sees a Stripe shape.
//!
//! async-stripe sends the API version its types are generated for
//! (`2026-09-30.endive`; `payments.stripe_api_version` must name it). In that
//! version an invoice no longer carries `charge` / `payment_intent`, nor a
//! charge or PaymentIntent `invoice`: invoice answers expand `payments` and
//! their PaymentIntents ([`RemoteInvoice::from_stripe`] reads the default
//! payment), and the invoice of a PaymentIntent (or of a charge's) is found
//! through `/v1/invoice_payments`.
//!
//! Keys: `tally:<object>:<tally id>:<action>` — the same logical call always
//! carries the same key, across retries, redeliveries and restarts.

mod client;
pub mod objects;
pub mod signature;

use std::collections::HashMap;

use stripe_billing::credit_note::{CreateCreditNote, CreateCreditNoteRefunds};
use stripe_billing::invoice::{
    CreateInvoice, CreateInvoicePendingInvoiceItemsBehavior, FinalizeInvoiceInvoice, ListInvoice,
    MarkUncollectibleInvoice, PayInvoice, RetrieveInvoice, SendInvoiceInvoice, VoidInvoiceInvoice,
};
use stripe_billing::invoice_item::CreateInvoiceItem;
use stripe_billing::invoice_payment::{
    ListInvoicePayment, ListInvoicePaymentPayment, ListInvoicePaymentPaymentType,
};
use stripe_billing::{CreditNoteReason, InvoiceCollectionMethod};
use stripe_core::balance_transaction::ListBalanceTransaction;
use stripe_core::charge::{ListCharge, RetrieveCharge};
use stripe_core::customer::{
    CreateCustomer, CreateCustomerTaxIdData, CreateCustomerTaxIdDataType,
    OptionalFieldsCustomerAddress, RetrieveCustomer, RetrieveCustomerReturned, UpdateCustomer,
};
use stripe_core::payment_intent::RetrievePaymentIntent;
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund, RetrieveRefund};
use stripe_types::{RangeBoundsTs, RangeQueryTs};
use tally_domain::money::{Currency, Money};

pub use client::{HttpStripe, RetryPolicy, SecretKey};
pub use objects::{
    RemoteBalanceTransaction, RemoteCharge, RemoteCreditNote, RemoteCustomer, RemoteDispute,
    RemoteInvoice, RemoteInvoiceStatus, RemotePaymentIntent, RemoteRefund, RemoteRefundStatus,
};

/// Why a Stripe call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// `STRIPE_API_KEY` is not set.
    #[error("Stripe is not configured (STRIPE_API_KEY is not set)")]
    NotConfigured,
    /// 429, 5xx, timeouts or connection failures on every try.
    #[error("Stripe unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        /// Tries made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The payment method was declined (`card_error`, HTTP 402): a failed
    /// attempt, never retried by the client.
    #[error("payment declined: {code} {decline_code} ({message})")]
    Declined {
        /// Stripe's error code, e.g. `card_declined`.
        code: String,
        /// The issuer's decline code, e.g. `insufficient_funds`.
        decline_code: String,
        /// Stripe's message, safe to show (never card data).
        message: String,
        /// The PaymentIntent of the attempt.
        payment_intent: Option<String>,
        /// The charge of the attempt.
        charge: Option<String>,
    },
    /// Stripe refused the request (4xx other than 402, 409 and 429): permanent.
    #[error(
        "Stripe refused the request (HTTP {status} {error_type} {code}: {message}; param `{param}`, request {request_id})"
    )]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Stripe's error type, e.g. `invalid_request_error`.
        error_type: String,
        /// Stripe's error code.
        code: String,
        /// Stripe's message.
        message: String,
        /// The parameter at fault.
        param: String,
        /// Stripe's `Request-Id`.
        request_id: String,
    },
    /// A network-level failure building the client.
    #[error("Stripe transport: {0}")]
    Transport(String),
    /// An answer payments cannot read.
    #[error("unexpected Stripe response: {0}")]
    Malformed(String),
}

impl StripeError {
    /// Whether Stripe answered that the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Rejected { status: 404, .. })
    }

    /// Whether trying again later (same idempotency key) may succeed.
    /// A missing key counts: once it is configured the same call can succeed,
    /// so nothing is recorded as refused by Stripe.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StripeError::Unavailable { .. }
                | StripeError::Transport(_)
                | StripeError::NotConfigured
        )
    }

    /// A short code for a failed attempt: the decline code, else Stripe's
    /// code, else a name for the kind of failure.
    pub fn failure_code(&self) -> String {
        match self {
            StripeError::Declined {
                code, decline_code, ..
            } => {
                if decline_code.is_empty() {
                    code.clone()
                } else {
                    decline_code.clone()
                }
            }
            StripeError::Rejected { code, .. } if !code.is_empty() => code.clone(),
            StripeError::Rejected { .. } => "stripe_rejected".into(),
            StripeError::NotConfigured => "stripe_not_configured".into(),
            StripeError::Unavailable { .. } | StripeError::Transport(_) => {
                "stripe_unavailable".into()
            }
            StripeError::Malformed(_) => "stripe_malformed_response".into(),
        }
    }

    /// A message safe to show and store (Stripe's own, never card data).
    pub fn failure_message(&self) -> String {
        match self {
            StripeError::Declined { message, .. } | StripeError::Rejected { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}

/// What payments sends Stripe about a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDetails {
    /// The Tally customer, `cus_…` (metadata `tally_customer_id`).
    pub tally_customer_id: String,
    /// Name.
    pub name: String,
    /// Billing email.
    pub email: String,
    /// Address lines: line1, line2, city, state, postal code, country.
    pub address: Option<[String; 6]>,
    /// Tax id (Stripe type, value); sent on creation only.
    pub tax_id: Option<(String, String)>,
}

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

/// Stripe's refund reasons (ours map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeRefundReason {
    /// `duplicate`
    Duplicate,
    /// `fraudulent`
    Fraudulent,
    /// `requested_by_customer`
    RequestedByCustomer,
}

/// Stripe's credit note reasons (Tally's billing error has none: no reason
/// is sent and Tally's own reason travels in metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeCreditNoteReason {
    /// `duplicate`
    Duplicate,
    /// `fraudulent`
    Fraudulent,
    /// `order_change`
    OrderChange,
    /// `product_unsatisfactory`
    ProductUnsatisfactory,
}

/// A credit note payments asks Stripe to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditNoteRequest {
    /// The Tally credit note, `cn_…` (metadata `tally_credit_note_id`).
    pub tally_credit_note_id: String,
    /// The Stripe invoice credited, `in_…`.
    pub stripe_invoice_id: String,
    /// Total credited (rounded).
    pub amount: Money,
    /// Stripe's reason, when Tally's has one.
    pub reason: Option<StripeCreditNoteReason>,
    /// Tally's reason name (metadata `tally_reason`).
    pub tally_reason: String,
    /// Printed memo (may be empty).
    pub memo: String,
    /// The part credited outside Stripe (`out_of_band_amount`; zero for
    /// none). Stripe first lowers what the invoice still asks for and needs
    /// the rest settled: payments never refunds through a credit note nor
    /// credits the Stripe customer balance (invoicing keeps such credit in
    /// its own wallet).
    pub out_of_band: Money,
    /// A refund payments already made for this note, linked to it
    /// (`refunds[0][refund]`, `refunds[0][amount_refunded]`): the Stripe
    /// credit note becomes that refund, as a note created with
    /// `refund_amount` would, without Stripe making a second one.
    pub linked_refund: Option<(String, Money)>,
}

/// A page of a list call.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The objects.
    pub items: Vec<T>,
    /// Whether more follow (ask again `starting_after` the last id).
    pub has_more: bool,
}

/// The Stripe operations payments uses.
#[derive(Debug, Clone)]
pub struct Stripe {
    http: HttpStripe,
}

/// An amount as Stripe's integer minor units (the amount must be rounded).
pub fn to_minor_units(amount: &Money) -> Result<i64, StripeError> {
    amount
        .to_minor_units()
        .ok()
        .and_then(|minor| i64::try_from(minor).ok())
        .ok_or_else(|| {
            StripeError::Malformed(format!("{amount} is not a whole number of minor units"))
        })
}

fn stripe_currency(currency: Currency) -> String {
    currency.code().to_ascii_lowercase()
}

fn typed_currency(currency: Currency) -> stripe_types::Currency {
    stripe_currency(currency)
        .parse()
        .unwrap_or_else(|never| match never {})
}

impl Stripe {
    /// The adapter over an HTTP client.
    pub fn new(http: HttpStripe) -> Self {
        Self { http }
    }

    /// Creates the Stripe customer of a Tally customer (key
    /// `tally:customer:<cus>:create`).
    pub async fn create_customer(
        &self,
        details: &CustomerDetails,
    ) -> Result<RemoteCustomer, StripeError> {
        let mut request = CreateCustomer::new()
            .name(details.name.as_str())
            .metadata(metadata("tally_customer_id", &details.tally_customer_id));
        if !details.email.is_empty() {
            request = request.email(details.email.as_str());
        }
        if let Some(address) = address(details) {
            request = request.address(address);
        }
        if let Some((kind, value)) = &details.tax_id {
            let kind = kind
                .parse::<CreateCustomerTaxIdDataType>()
                .unwrap_or_else(|never| match never {});
            request = request.tax_id_data(vec![CreateCustomerTaxIdData::new(kind, value.as_str())]);
        }
        let key = format!("tally:customer:{}:create", details.tally_customer_id);
        let customer = self.http.send(&request, Some(&key)).await?;
        Ok(RemoteCustomer::from_stripe(&customer))
    }

    /// Updates name, email and address of a Stripe customer; `revision`
    /// names the snapshot (it is part of the idempotency key).
    pub async fn update_customer(
        &self,
        stripe_customer_id: &str,
        details: &CustomerDetails,
        revision: &str,
    ) -> Result<RemoteCustomer, StripeError> {
        let mut request = UpdateCustomer::new(stripe_customer_id)
            .name(details.name.as_str())
            .metadata(metadata("tally_customer_id", &details.tally_customer_id));
        if !details.email.is_empty() {
            request = request.email(details.email.as_str());
        }
        if let Some(address) = address(details) {
            request = request.address(address);
        }
        let key = format!(
            "tally:customer:{}:update:{revision}",
            details.tally_customer_id
        );
        let customer = self.http.send(&request, Some(&key)).await?;
        Ok(RemoteCustomer::from_stripe(&customer))
    }

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

    /// The charge as Stripe has it now, with its refunds and its invoice.
    pub async fn get_charge(&self, stripe_charge_id: &str) -> Result<RemoteCharge, StripeError> {
        let request = RetrieveCharge::new(stripe_charge_id).expand(vec!["refunds".to_owned()]);
        let charge = self.http.send(&request, None).await?;
        let invoice = match &charge.payment_intent {
            Some(intent) => self.invoice_of_payment_intent(intent.id().as_str()).await?,
            None => None,
        };
        RemoteCharge::from_stripe(&charge, invoice)
    }

    /// The PaymentIntent as Stripe has it now, with its invoice.
    pub async fn get_payment_intent(
        &self,
        stripe_payment_intent_id: &str,
    ) -> Result<RemotePaymentIntent, StripeError> {
        let request = RetrievePaymentIntent::new(stripe_payment_intent_id);
        let intent = self.http.send(&request, None).await?;
        let invoice = self
            .invoice_of_payment_intent(stripe_payment_intent_id)
            .await?;
        Ok(RemotePaymentIntent::from_stripe(&intent, invoice))
    }

    /// The invoice a PaymentIntent pays: async-stripe's API version no longer
    /// puts it on the PaymentIntent or the charge, only on the invoice
    /// payment that links them.
    async fn invoice_of_payment_intent(
        &self,
        stripe_payment_intent_id: &str,
    ) -> Result<Option<String>, StripeError> {
        let mut payment =
            ListInvoicePaymentPayment::new(ListInvoicePaymentPaymentType::PaymentIntent);
        payment.payment_intent = Some(stripe_payment_intent_id.to_owned());
        let request = ListInvoicePayment::new().payment(payment).limit(1);
        let page = self.http.send(&request, None).await?;
        Ok(page.data.first().and_then(|payment| {
            payment
                .invoice
                .id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
        }))
    }

    /// The customer as Stripe has it now.
    pub async fn get_customer(
        &self,
        stripe_customer_id: &str,
    ) -> Result<RemoteCustomer, StripeError> {
        match self
            .http
            .send(&RetrieveCustomer::new(stripe_customer_id), None)
            .await?
        {
            RetrieveCustomerReturned::Customer(customer) => {
                Ok(RemoteCustomer::from_stripe(&customer))
            }
            RetrieveCustomerReturned::DeletedCustomer(_) => Err(StripeError::Malformed(format!(
                "customer {stripe_customer_id} was deleted in Stripe"
            ))),
        }
    }

    /// The refund as Stripe has it now.
    pub async fn get_refund(&self, stripe_refund_id: &str) -> Result<RemoteRefund, StripeError> {
        let refund = self
            .http
            .send(&RetrieveRefund::new(stripe_refund_id), None)
            .await?;
        RemoteRefund::from_stripe(&refund)
    }

    /// Refunds `amount` of a charge (key `tally:refund:<ref>:create`).
    pub async fn create_refund(
        &self,
        tally_refund_id: &str,
        stripe_charge_id: &str,
        amount: &Money,
        reason: StripeRefundReason,
    ) -> Result<RemoteRefund, StripeError> {
        let reason = match reason {
            StripeRefundReason::Duplicate => CreateRefundReason::Duplicate,
            StripeRefundReason::Fraudulent => CreateRefundReason::Fraudulent,
            StripeRefundReason::RequestedByCustomer => CreateRefundReason::RequestedByCustomer,
        };
        let request = CreateRefund::new()
            .charge(stripe_charge_id)
            .amount(to_minor_units(amount)?)
            .reason(reason)
            .metadata(metadata("tally_refund_id", tally_refund_id));
        let key = format!("tally:refund:{tally_refund_id}:create");
        let refund = self.http.send(&request, Some(&key)).await?;
        RemoteRefund::from_stripe(&refund)
    }

    /// Creates a Stripe credit note (key `tally:credit_note:<cn>:create`).
    pub async fn create_credit_note(
        &self,
        request: &CreditNoteRequest,
    ) -> Result<RemoteCreditNote, StripeError> {
        let amount = to_minor_units(&request.amount)?;
        let mut metadata = metadata("tally_credit_note_id", &request.tally_credit_note_id);
        metadata.insert("tally_reason".into(), request.tally_reason.clone());
        let mut create = CreateCreditNote::new(request.stripe_invoice_id.as_str())
            .amount(amount)
            .metadata(metadata);
        if let Some(reason) = request.reason {
            create = create.reason(match reason {
                StripeCreditNoteReason::Duplicate => CreditNoteReason::Duplicate,
                StripeCreditNoteReason::Fraudulent => CreditNoteReason::Fraudulent,
                StripeCreditNoteReason::OrderChange => CreditNoteReason::OrderChange,
                StripeCreditNoteReason::ProductUnsatisfactory => {
                    CreditNoteReason::ProductUnsatisfactory
                }
            });
        }
        if !request.memo.is_empty() {
            create = create.memo(request.memo.as_str());
        }
        if request.out_of_band.is_positive() {
            create = create.out_of_band_amount(to_minor_units(&request.out_of_band)?);
        }
        if let Some((stripe_refund_id, amount)) = &request.linked_refund {
            let mut link = CreateCreditNoteRefunds::new();
            link.refund = Some(stripe_refund_id.clone());
            link.amount_refunded = Some(to_minor_units(amount)?);
            create = create.refunds(vec![link]);
        }
        let key = format!("tally:credit_note:{}:create", request.tally_credit_note_id);
        let note = self.http.send(&create, Some(&key)).await?;
        RemoteCreditNote::from_stripe(&note)
    }

    /// One page of the invoices created in `[start, end)` (Unix seconds),
    /// 100 a page, after `starting_after`.
    pub async fn list_invoices(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteInvoice>, StripeError> {
        let mut request = ListInvoice::new()
            .created(created_in(start, end))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteInvoice::from_stripe).await
    }

    /// One page of the charges created in `[start, end)` (their `invoice` is
    /// not looked up: reconciliation matches charges by id).
    pub async fn list_charges(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteCharge>, StripeError> {
        let mut request = ListCharge::new().created(created_in(start, end)).limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, |charge| RemoteCharge::from_stripe(charge, None))
            .await
    }

    /// One page of the refunds created in `[start, end)`.
    pub async fn list_refunds(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteRefund>, StripeError> {
        let mut request = ListRefund::new().created(created_in(start, end)).limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteRefund::from_stripe).await
    }

    /// One page of the balance transactions created in `[start, end)`.
    pub async fn list_balance_transactions(
        &self,
        start: i64,
        end: i64,
        starting_after: Option<String>,
    ) -> Result<Page<RemoteBalanceTransaction>, StripeError> {
        let mut request = ListBalanceTransaction::new()
            .created(created_in(start, end))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        self.page(&request, RemoteBalanceTransaction::from_stripe)
            .await
    }

    async fn page<R, S, T>(
        &self,
        request: &R,
        read: impl Fn(&S) -> Result<T, StripeError>,
    ) -> Result<Page<T>, StripeError>
    where
        R: stripe::StripeRequest<Output = stripe_types::List<S>>,
        stripe_types::List<S>: miniserde::Deserialize,
    {
        let list = self.http.send(request, None).await?;
        Ok(Page {
            items: list.data.iter().map(read).collect::<Result<Vec<_>, _>>()?,
            has_more: list.has_more,
        })
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

/// `created[gte]=start&created[lt]=end`.
fn created_in(start: i64, end: i64) -> RangeQueryTs {
    RangeQueryTs::Bounds(RangeBoundsTs {
        gt: None,
        gte: Some(start),
        lt: Some(end),
        lte: None,
    })
}

fn metadata(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_owned(), value.to_owned())])
}

/// The customer's address as Stripe takes it (empty parts sent empty, so an
/// update clears what the customer removed).
fn address(details: &CustomerDetails) -> Option<OptionalFieldsCustomerAddress> {
    let [line1, line2, city, state, postal_code, country] = details.address.as_ref()?;
    let mut address = OptionalFieldsCustomerAddress::new();
    address.line1 = Some(line1.clone());
    address.line2 = Some(line2.clone());
    address.city = Some(city.clone());
    address.state = Some(state.clone());
    address.postal_code = Some(postal_code.clone());
    address.country = Some(country.clone());
    Some(address)
}
