//! External customer ids in `tally events send`: ingest keys usage by Tally's
//! customer id (`cus_…`), so a line whose `customer_id` is anything else is
//! looked up as an external id (invoicing's `GetCustomer`) before it is sent.
//!
//! Why ingest itself does not accept external ids: customers belong to
//! invoicing, and ingest accepts usage for customers created later and keeps
//! accepting while invoicing is down. Resolving there would make acceptance
//! depend on another service; resolving here, once per distinct id, costs a
//! call per customer and leaves ingest's contract unchanged.

use std::collections::HashMap;

use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::{GetCustomerRequest, get_customer_request};

use crate::admin::Authenticated;

/// Looks up external ids, each once.
#[derive(Debug)]
pub struct CustomerIds {
    customers: CustomerServiceClient<Authenticated>,
    /// Given id → Tally's id, or why not.
    resolved: HashMap<String, Result<String, String>>,
}

impl CustomerIds {
    /// Looks up through invoicing at `channel`.
    pub fn new(channel: Authenticated) -> Self {
        Self {
            customers: CustomerServiceClient::new(channel),
            resolved: HashMap::new(),
        }
    }

    /// Tally's id for `given`: itself when it is one (`cus_…`, or empty, which
    /// ingest rejects with its own message), else the customer whose external
    /// id it is; or a sentence saying why the event cannot be sent.
    pub async fn resolve(&mut self, given: &str) -> Result<String, String> {
        if given.is_empty() || given.starts_with("cus_") {
            return Ok(given.to_owned());
        }
        if let Some(known) = self.resolved.get(given) {
            return known.clone();
        }
        let answer = self
            .customers
            .get_customer(GetCustomerRequest {
                lookup: Some(get_customer_request::Lookup::ExternalId(given.to_owned())),
            })
            .await;
        let resolved = match answer {
            Ok(response) => Ok(response.into_inner().customer.unwrap_or_default().id),
            Err(status) => Err(match status.code() {
                tonic::Code::NotFound => format!(
                    "customer_id {given:?} is neither a Tally customer id (cus_…) nor the external id of a customer \
                     (create it first: `tally customers create --external-id {given} …`)"
                ),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => format!(
                    "customer_id {given:?} is not a Tally customer id (cus_…); looking it up as an external id \
                     needs a key with the `read` scope ({})",
                    status.message()
                ),
                tonic::Code::Unimplemented => format!(
                    "customer_id {given:?} is not a Tally customer id (cus_…), and the address does not serve \
                     customers to look it up as an external id (pass --invoicing-address)"
                ),
                _ => format!(
                    "customer_id {given:?}: looking it up as an external id failed: {}",
                    status.message()
                ),
            }),
        };
        self.resolved.insert(given.to_owned(), resolved.clone());
        resolved
    }
}
