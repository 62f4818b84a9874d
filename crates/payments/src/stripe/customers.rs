//! Stripe customers: created, updated and read; what payments sends about
//! a customer.

use stripe_core::customer::{
    CreateCustomer, CreateCustomerTaxIdData, CreateCustomerTaxIdDataType,
    OptionalFieldsCustomerAddress, RetrieveCustomer, RetrieveCustomerReturned, UpdateCustomer,
};

use super::{RemoteCustomer, Stripe, StripeError, metadata};

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

impl Stripe {
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
