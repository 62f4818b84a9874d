//! Customers between the wire (`tally.invoicing.v1.Customer`) and invoicing's
//! model. Reading the wire is strict: an unset or unknown enum, a missing
//! instant or an unknown currency is an error, never a default (the wire form
//! read here is what invoicing itself wrote: a customer built from a request,
//! or a snapshot stored before `20261207800000_invoicing_own_model.sql`).

use tally_domain::money::Currency;
use tally_proto::invoicing as wire;

use super::model::{Address, CollectionMode, Customer, CustomerStatus, TaxId};
use crate::error::{InvoicingError, Result};
use crate::wire::{instant, maybe_timestamp, timestamp};

/// The model of a complete wire customer (id and instants set).
pub fn from_wire(customer: &wire::Customer) -> Result<Customer> {
    let required = |value: Option<&prost_types::Timestamp>, field: &str| {
        instant(value).ok_or_else(|| {
            InvoicingError::Internal(format!("customer {}: {field} is not set", customer.id))
        })
    };
    Ok(Customer {
        id: customer.id.clone(),
        external_id: customer.external_id.clone(),
        name: customer.name.clone(),
        billing_email: customer.billing_email.clone(),
        billing_address: customer.billing_address.as_ref().map(address_from_wire),
        tax_id: customer.tax_id.as_ref().map(|tax_id| TaxId {
            kind: tax_id.kind.clone(),
            value: tax_id.value.clone(),
        }),
        currency: Currency::from_code(&customer.currency).map_err(InvoicingError::internal)?,
        collection_mode: collection_mode_from_wire(customer.collection_mode)?,
        net_terms_days: customer.net_terms_days,
        metadata: customer.metadata.clone().into_iter().collect(),
        status: status_from_wire(customer.status)?,
        created_at: required(customer.created_at.as_ref(), "created_at")?,
        updated_at: required(customer.updated_at.as_ref(), "updated_at")?,
        archived_at: instant(customer.archived_at.as_ref()),
    })
}

/// The wire form of a customer.
pub fn to_wire(customer: &Customer) -> wire::Customer {
    wire::Customer {
        id: customer.id.clone(),
        external_id: customer.external_id.clone(),
        name: customer.name.clone(),
        billing_email: customer.billing_email.clone(),
        billing_address: customer
            .billing_address
            .as_ref()
            .map(|address| wire::Address {
                line1: address.line1.clone(),
                line2: address.line2.clone(),
                city: address.city.clone(),
                region: address.region.clone(),
                postal_code: address.postal_code.clone(),
                country: address.country.clone(),
            }),
        tax_id: customer.tax_id.as_ref().map(|tax_id| wire::TaxId {
            kind: tax_id.kind.clone(),
            value: tax_id.value.clone(),
        }),
        currency: customer.currency.code().to_owned(),
        collection_mode: collection_mode_to_wire(customer.collection_mode) as i32,
        net_terms_days: customer.net_terms_days,
        metadata: customer.metadata.clone().into_iter().collect(),
        status: match customer.status {
            CustomerStatus::Active => wire::CustomerStatus::Active,
            CustomerStatus::Archived => wire::CustomerStatus::Archived,
        } as i32,
        created_at: Some(timestamp(customer.created_at)),
        updated_at: Some(timestamp(customer.updated_at)),
        archived_at: maybe_timestamp(customer.archived_at),
    }
}

fn address_from_wire(address: &wire::Address) -> Address {
    Address {
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country: address.country.clone(),
    }
}

/// A collection mode the wire names (unset is an error: requests get their
/// default before they are mapped).
pub fn collection_mode_from_wire(value: i32) -> Result<CollectionMode> {
    match wire::CollectionMode::try_from(value) {
        Ok(wire::CollectionMode::ChargeAutomatically) => Ok(CollectionMode::ChargeAutomatically),
        Ok(wire::CollectionMode::SendInvoice) => Ok(CollectionMode::SendInvoice),
        Ok(wire::CollectionMode::Unspecified) | Err(_) => Err(InvoicingError::Internal(format!(
            "collection mode {value} is not one invoicing stores"
        ))),
    }
}

/// The wire collection mode.
pub fn collection_mode_to_wire(mode: CollectionMode) -> wire::CollectionMode {
    match mode {
        CollectionMode::ChargeAutomatically => wire::CollectionMode::ChargeAutomatically,
        CollectionMode::SendInvoice => wire::CollectionMode::SendInvoice,
    }
}

fn status_from_wire(value: i32) -> Result<CustomerStatus> {
    match wire::CustomerStatus::try_from(value) {
        Ok(wire::CustomerStatus::Active) => Ok(CustomerStatus::Active),
        Ok(wire::CustomerStatus::Archived) => Ok(CustomerStatus::Archived),
        Ok(wire::CustomerStatus::Unspecified) | Err(_) => Err(InvoicingError::Internal(format!(
            "customer status {value} is not one invoicing stores"
        ))),
    }
}
