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
//!
//! Each kind of object has its own file of calls and request types:
//! `customers`, `invoices`, `charges` (charges and PaymentIntents),
//! `refunds`, `credit_notes`, and `lists` (the paged lists reconciliation
//! reads); `error` is [`StripeError`].

mod charges;
mod client;
mod credit_notes;
mod customers;
mod error;
mod invoices;
mod lists;
pub mod objects;
mod refunds;
pub mod signature;

use std::collections::HashMap;

use tally_domain::money::{Currency, Money};

pub use client::{HttpStripe, RetryPolicy, SecretKey};
pub use credit_notes::{CreditNoteRequest, StripeCreditNoteReason};
pub use customers::CustomerDetails;
pub use error::StripeError;
pub use invoices::{Collection, InvoiceItem};
pub use lists::Page;
pub use objects::{
    RemoteBalanceTransaction, RemoteCharge, RemoteCreditNote, RemoteCustomer, RemoteDispute,
    RemoteInvoice, RemoteInvoiceStatus, RemotePaymentIntent, RemoteRefund, RemoteRefundStatus,
};
pub use refunds::StripeRefundReason;

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
}

fn metadata(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_owned(), value.to_owned())])
}
