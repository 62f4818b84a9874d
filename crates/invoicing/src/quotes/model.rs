//! Invoicing's own quote, as it is stored (`invoicing.quotes`): columns for what queries
//! and constraints read, JSON for the terms (the domain's spec), the preview (the domain's
//! [`QuotePreview`]) and a new customer. The wire `Quote` is made from it at the edge
//! (`mapping.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tally_domain::money::Currency;
use tally_domain::quote::{QuotePreview, QuoteStatus};
use tally_domain::terms::SubscriptionTermsSpec;

use crate::error::{InvoicingError, Result};

/// The customer a quote creates when it is accepted (stored as JSON,
/// `invoicing.quotes.new_customer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// The platform's id, unique across customers.
    pub external_id: String,
    /// Printed on invoices.
    pub name: String,
    /// Empty when none was given.
    pub billing_email: String,
}

/// Who a quote is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    /// An existing customer, `cus_…`.
    Customer(String),
    /// A customer created on acceptance.
    New(NewCustomer),
}

/// What a quote offers, validated and priced (shared by a draft, a revision and a
/// preview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Who it is for.
    pub party: Party,
    /// The subscription an amendment changes.
    pub amends_subscription_id: Option<String>,
    /// `pv_…`.
    pub plan_version_id: String,
    /// The plan version's.
    pub currency: Currency,
    /// The terms, checked against the plan version (`SubscriptionTerms::new`).
    pub terms: SubscriptionTermsSpec,
    /// The contract's start (the terms' start).
    pub starts_at: DateTime<Utc>,
    /// As asked (an amendment's end does not follow from it).
    pub term_months: u32,
    /// The contract's end.
    pub ends_at: DateTime<Utc>,
    /// Until when it may be signed (exclusive).
    pub expires_at: DateTime<Utc>,
    /// Priced by the domain.
    pub preview: QuotePreview,
    /// Free text.
    pub memo: String,
}

/// Who signed, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// As given (1–500 characters).
    pub signed_by: String,
    /// When.
    pub signed_at: DateTime<Utc>,
    /// SHA-256 of the signed document, lowercase hex.
    pub document_sha256: Option<String>,
}

/// One revision of a quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// `quo_…`.
    pub id: String,
    /// The first revision's id.
    pub chain_id: String,
    /// 1, 2, …
    pub revision: u32,
    /// The revision it was made from.
    pub from_quote_id: Option<String>,
    /// `Q-<year>-<nnnn>`, once the chain was finalized.
    pub number: Option<String>,
    /// As stored ([`Quote::status_at`] reads expiry).
    pub status: QuoteStatus,
    /// What it offers.
    pub offer: Offer,
    /// Why it was declined or canceled.
    pub status_reason: String,
    /// Set when accepted.
    pub signature: Option<Signature>,
    /// The customer billed, once accepted.
    pub accepted_customer_id: Option<String>,
    /// The subscription made or amended, once accepted.
    pub subscription_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was finalized.
    pub finalized_at: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub accepted_at: Option<DateTime<Utc>>,
}

impl Quote {
    /// The status at `now` (an open quote past its expiry is expired).
    pub fn status_at(&self, now: DateTime<Utc>) -> QuoteStatus {
        self.status.at(self.offer.expires_at, now)
    }

    /// The customer the quote names (existing), if any.
    pub fn customer_id(&self) -> Option<&str> {
        match &self.offer.party {
            Party::Customer(id) => Some(id),
            Party::New(_) => None,
        }
    }
}

/// The status of a stored name (the `status` column's CHECK lists the same names); a
/// name this version does not know is an error, never a default.
pub fn status_from_name(name: &str) -> Result<QuoteStatus> {
    [
        QuoteStatus::Draft,
        QuoteStatus::Open,
        QuoteStatus::Accepted,
        QuoteStatus::Declined,
        QuoteStatus::Expired,
        QuoteStatus::Canceled,
    ]
    .into_iter()
    .find(|status| status.name() == name)
    .ok_or_else(|| {
        InvoicingError::internal(format!(
            "stored quote status {name:?} is not one this version of invoicing knows"
        ))
    })
}
