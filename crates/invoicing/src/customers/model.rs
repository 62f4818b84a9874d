//! Invoicing's own customer, as it is stored (`invoicing.customers.document`,
//! JSON of these types). The wire `tally.invoicing.v1.Customer` is made from
//! it at the edge (`mapping.rs`); a stored value this code does not know is
//! an error when read, never a default.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tally_domain::money::Currency;

use crate::text_enum::text_enum;

/// A billed party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
    /// The platform's id, unique across customers.
    pub external_id: String,
    /// Printed on invoices.
    pub name: String,
    /// Empty when none was given.
    pub billing_email: String,
    pub billing_address: Option<Address>,
    pub tax_id: Option<TaxId>,
    pub currency: Currency,
    pub collection_mode: CollectionMode,
    /// Days after finalization an invoice is due (SEND_INVOICE only).
    pub net_terms_days: u32,
    pub metadata: BTreeMap<String, String>,
    pub status: CustomerStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

/// A postal address (fields empty when not given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// A tax identifier (Stripe's tax id type names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxId {
    pub kind: String,
    pub value: String,
}

text_enum! {
    /// How a customer's invoices are collected (the customer document's
    /// `collection_mode`, an invoice's `collection_mode_name`; the
    /// migrations' CHECKs list the same names).
    pub enum CollectionMode {
        ChargeAutomatically = "charge_automatically",
        SendInvoice = "send_invoice",
    }
}

/// Lifecycle of a customer (the `status` column's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    Active,
    Archived,
}

impl CustomerStatus {
    /// The stored name (the `status` column).
    pub fn name(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Archived => "archived",
        }
    }
}
