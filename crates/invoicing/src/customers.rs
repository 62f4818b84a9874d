//! `CustomerService`: who is billed, in which currency, and how.
//!
//! A customer is stored as invoicing's model (`model.rs`, JSON) beside the
//! columns queries need; the handlers still work on the wire form, made at
//! the store's edge by `mapping.rs`. `CreateCustomer` is idempotent by
//! `external_id`: the normalized request (defaults applied) is compared with
//! the stored customer field by field, so a replay returns the customer and
//! a different payload is ALREADY_EXISTS naming the first differing field.

pub(crate) mod billing_mode;
pub(crate) mod mapping;
pub(crate) mod model;
pub(crate) mod store;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_audit::Origin;
use tally_domain::ids::CustomerId;
use tally_domain::money::Currency;
use tally_proto::invoicing::customer_service_server::CustomerService;
use tally_proto::invoicing::{
    Address, ArchiveCustomerRequest, ArchiveCustomerResponse, CollectionMode,
    CreateCustomerRequest, CreateCustomerResponse, Customer, CustomerStatus, GetCustomerRequest,
    GetCustomerResponse, ListCustomersRequest, ListCustomersResponse, TaxId, UpdateCustomerRequest,
    UpdateCustomerResponse, get_customer_request,
};
use tonic::{Request, Response, Status};

use self::store::Lookup;
use crate::audit::customer_state;
use crate::error::{InvoicingError, Result, Violations};
use crate::paging;
use crate::wire::{instant, timestamp};

/// Net terms used for SEND_INVOICE when the request says 0.
const DEFAULT_NET_TERMS_DAYS: u32 = 30;

/// Reads a customer by id inside a transaction (`FOR UPDATE` when `lock`).
pub async fn load(connection: &mut PgConnection, id: &str, lock: bool) -> Result<Customer> {
    let customer = store::get(connection, id, lock)
        .await?
        .ok_or_else(|| InvoicingError::NotFound(format!("customer {id:?} not found")))?;
    Ok(mapping::to_wire(&customer))
}

/// Reads many customers at once (unlocked), by id; unknown ids are left out.
pub async fn load_many(
    connection: &mut PgConnection,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, Customer>> {
    Ok(store::many(connection, ids)
        .await?
        .into_iter()
        .map(|customer| (customer.id.clone(), mapping::to_wire(&customer)))
        .collect())
}

/// The customer's currency.
pub fn currency_of(customer: &Customer) -> Result<Currency> {
    crate::wire::stored_currency(&customer.currency)
}

fn validate_address(address: &Address, field: &str, violations: &mut Violations) {
    for (name, value, required) in [
        ("line1", &address.line1, true),
        ("line2", &address.line2, false),
        ("city", &address.city, true),
        ("region", &address.region, false),
        ("postal_code", &address.postal_code, false),
    ] {
        if required && value.trim().is_empty() {
            violations.add(format!("{field}.{name}"), "is required");
        } else if value.chars().count() > 200 {
            violations.add(format!("{field}.{name}"), "must be at most 200 characters");
        }
    }
    let country_ok = address.country.len() == 2
        && address
            .country
            .bytes()
            .all(|byte| byte.is_ascii_uppercase());
    if !country_ok {
        violations.add(
            format!("{field}.country"),
            format!(
                "{:?} is not an ISO 3166-1 alpha-2 code in upper case",
                address.country
            ),
        );
    }
}

fn validate_tax_id(tax_id: &TaxId, field: &str, violations: &mut Violations) {
    let kind_ok = !tax_id.kind.is_empty()
        && tax_id.kind.len() <= 20
        && tax_id
            .kind
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_');
    if !kind_ok {
        violations.add(
            format!("{field}.kind"),
            "must be a Stripe tax id type such as eu_vat",
        );
    }
    if tax_id.value.trim().is_empty() || tax_id.value.len() > 64 {
        violations.add(format!("{field}.value"), "must be 1-64 characters");
    }
}

fn validate_email(email: &str, violations: &mut Violations) {
    if email.is_empty() {
        return;
    }
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !valid {
        violations.add(
            "billing_email",
            format!("{email:?} is not an email address"),
        );
    }
}

/// Checks metadata limits (at most 50 keys, keys ≤ 40, values ≤ 500 characters).
pub fn validate_metadata(
    metadata: &std::collections::HashMap<String, String>,
    violations: &mut Violations,
) {
    if metadata.len() > 50 {
        violations.add("metadata", "must have at most 50 keys");
    }
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        if key.is_empty() || key.chars().count() > 40 {
            violations.add(format!("metadata.{key}"), "keys must be 1-40 characters");
        } else if metadata[key].chars().count() > 500 {
            violations.add(
                format!("metadata.{key}"),
                "values must be at most 500 characters",
            );
        }
    }
}

fn collection_mode(value: i32, violations: &mut Violations) -> CollectionMode {
    match CollectionMode::try_from(value) {
        Ok(CollectionMode::Unspecified) => CollectionMode::ChargeAutomatically,
        Ok(mode) => mode,
        Err(_) => {
            violations.add(
                "collection_mode",
                format!("{value} is not a collection mode"),
            );
            CollectionMode::ChargeAutomatically
        }
    }
}

/// Validates every attribute a customer carries (create and update share it).
fn validate_attributes(customer: &mut Customer, violations: &mut Violations) {
    if customer.name.chars().count() > 255 {
        violations.add("name", "must be at most 255 characters");
    }
    validate_email(&customer.billing_email, violations);
    if let Some(address) = &customer.billing_address {
        validate_address(address, "billing_address", violations);
    }
    if let Some(tax_id) = &customer.tax_id {
        validate_tax_id(tax_id, "tax_id", violations);
    }
    if customer.currency.is_empty() {
        violations.add("currency", "is required");
    } else if Currency::from_code(&customer.currency).is_err() {
        violations.add(
            "currency",
            format!(
                "{:?} is not an ISO 4217 currency Tally knows",
                customer.currency
            ),
        );
    }
    let mode = collection_mode(customer.collection_mode, violations);
    customer.collection_mode = mode as i32;
    if customer.net_terms_days > 365 {
        violations.add("net_terms_days", "must be at most 365");
    }
    if mode == CollectionMode::SendInvoice && customer.net_terms_days == 0 {
        customer.net_terms_days = DEFAULT_NET_TERMS_DAYS;
    }
    if mode == CollectionMode::ChargeAutomatically {
        customer.net_terms_days = 0;
    }
    validate_metadata(&customer.metadata, violations);
}

fn from_request(request: CreateCustomerRequest) -> Result<Customer> {
    let mut violations = Violations::default();
    if request.external_id.is_empty() || request.external_id.chars().count() > 255 {
        violations.add("external_id", "must be 1-255 characters");
    }
    let mut customer = Customer {
        external_id: request.external_id,
        name: request.name,
        billing_email: request.billing_email,
        billing_address: request.billing_address,
        tax_id: request.tax_id,
        currency: request.currency,
        collection_mode: request.collection_mode,
        net_terms_days: request.net_terms_days,
        metadata: request.metadata,
        status: CustomerStatus::Active as i32,
        ..Default::default()
    };
    validate_attributes(&mut customer, &mut violations);
    violations.into_result()?;
    Ok(customer)
}

/// The first attribute in which `stored` and `requested` differ.
fn first_difference(stored: &Customer, requested: &Customer) -> Option<&'static str> {
    [
        ("name", stored.name == requested.name),
        (
            "billing_email",
            stored.billing_email == requested.billing_email,
        ),
        (
            "billing_address",
            stored.billing_address == requested.billing_address,
        ),
        ("tax_id", stored.tax_id == requested.tax_id),
        ("currency", stored.currency == requested.currency),
        (
            "collection_mode",
            stored.collection_mode == requested.collection_mode,
        ),
        (
            "net_terms_days",
            stored.net_terms_days == requested.net_terms_days,
        ),
        ("metadata", stored.metadata == requested.metadata),
    ]
    .into_iter()
    .find(|(_, equal)| !equal)
    .map(|(field, _)| field)
}

/// Stores a changed customer (its model and the columns read from it).
async fn save(connection: &mut PgConnection, customer: &Customer) -> Result<()> {
    store::update(connection, &mapping::from_wire(customer)?).await
}

crate::feature_service!(
    /// `CustomerService`'s logic: creating, reading, changing and archiving
    /// customers.
    Customers,
    customers
);

impl Customers<'_> {
    /// Creates the customer `request` describes in the caller's transaction, or returns
    /// the one with its `external_id` when it is the same (`false`; a different one is
    /// ALREADY_EXISTS naming the first differing field). The caller writes the
    /// `customer.created` audit entry when it is created (`true`).
    pub(crate) async fn create_in(
        &self,
        connection: &mut PgConnection,
        request: CreateCustomerRequest,
        now: DateTime<Utc>,
    ) -> Result<(Customer, bool)> {
        let mut customer = from_request(request)?;
        store::lock_external_id(&mut *connection, &customer.external_id).await?;
        let existing = store::get_by_external_id(&mut *connection, &customer.external_id).await?;
        if let Some(stored) = existing {
            let stored = mapping::to_wire(&stored);
            return match first_difference(&stored, &customer) {
                None => Ok((stored, false)),
                Some(field) => Err(InvoicingError::AlreadyExists(format!(
                    "a customer with external_id {:?} exists ({}) with a different {field}",
                    customer.external_id, stored.id
                ))),
            };
        }
        customer.id = self.ids.mint::<CustomerId>().into();
        customer.created_at = Some(timestamp(now));
        customer.updated_at = Some(timestamp(now));
        store::insert(&mut *connection, &mapping::from_wire(&customer)?).await?;
        Ok((customer, true))
    }

    async fn create_customer(
        &self,
        request: CreateCustomerRequest,
        origin: &Origin,
    ) -> Result<CreateCustomerResponse> {
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let (customer, created) = self.create_in(&mut transaction, request, now).await?;
        if !created {
            return Ok(CreateCustomerResponse {
                customer: Some(customer),
                created: false,
            });
        }
        let entry = self
            .audit_entry(now, "customer.created", ("customer", &customer.id), origin)
            .after(customer_state(&customer));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(CreateCustomerResponse {
            customer: Some(customer),
            created: true,
        })
    }

    async fn get_customer(&self, request: GetCustomerRequest) -> Result<Customer> {
        let (lookup, value, field) = match &request.lookup {
            Some(get_customer_request::Lookup::CustomerId(id)) => {
                (Lookup::Id(id), id, "customer_id")
            }
            Some(get_customer_request::Lookup::ExternalId(id)) => {
                (Lookup::ExternalId(id), id, "external_id")
            }
            None => {
                return Err(InvoicingError::invalid(
                    "lookup",
                    "customer_id or external_id is required",
                ));
            }
        };
        if value.is_empty() {
            return Err(InvoicingError::invalid(field, "is required"));
        }
        let customer = store::get_by(&self.pool, lookup).await?.ok_or_else(|| {
            InvoicingError::NotFound(format!("customer with {field} {value:?} not found"))
        })?;
        Ok(mapping::to_wire(&customer))
    }

    async fn update_customer(
        &self,
        request: UpdateCustomerRequest,
        origin: &Origin,
    ) -> Result<Customer> {
        let update = request
            .customer
            .ok_or_else(|| InvoicingError::invalid("customer", "is required"))?;
        if update.id.is_empty() {
            return Err(InvoicingError::invalid("customer.id", "is required"));
        }
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(InvoicingError::invalid(
                "update_mask",
                "must name at least one field",
            ));
        }
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut customer = load(&mut transaction, &update.id, true).await?;
        let before = customer.clone();
        if customer.status == CustomerStatus::Archived as i32 {
            return Err(InvoicingError::FailedPrecondition(format!(
                "customer {} is archived",
                customer.id
            )));
        }
        let mut violations = Violations::default();
        for (index, path) in paths.iter().enumerate() {
            match path.as_str() {
                "name" => customer.name.clone_from(&update.name),
                "billing_email" => customer.billing_email.clone_from(&update.billing_email),
                "billing_address" => customer.billing_address.clone_from(&update.billing_address),
                "tax_id" => customer.tax_id.clone_from(&update.tax_id),
                "currency" => customer.currency.clone_from(&update.currency),
                "collection_mode" => customer.collection_mode = update.collection_mode,
                "net_terms_days" => customer.net_terms_days = update.net_terms_days,
                "metadata" => customer.metadata.clone_from(&update.metadata),
                other => violations.add(
                    format!("update_mask.paths[{index}]"),
                    format!("{other:?} cannot be updated"),
                ),
            }
        }
        validate_attributes(&mut customer, &mut violations);
        violations.into_result()?;
        let stored_currency = store::currency(&mut transaction, &customer.id).await?;
        if stored_currency != customer.currency {
            let used = store::has_subscriptions_or_credits(&mut transaction, &customer.id).await?;
            if used {
                return Err(InvoicingError::FailedPrecondition(format!(
                    "customer {} has subscriptions or credits in {}; its currency cannot change",
                    customer.id, stored_currency
                )));
            }
        }
        customer.updated_at = Some(timestamp(now));
        save(&mut transaction, &customer).await?;
        // Which fields the caller changed; personal data (email, address,
        // tax id) is named, never copied into the append-only log.
        let entry = self
            .audit_entry(now, "customer.updated", ("customer", &customer.id), origin)
            .comment(format!("fields: {}", paths.join(", ")))
            .before(customer_state(&before))
            .after(customer_state(&customer));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(customer)
    }

    async fn list_customers(&self, request: ListCustomersRequest) -> Result<ListCustomersResponse> {
        let status = match CustomerStatus::try_from(request.status) {
            Ok(CustomerStatus::Unspecified) => None,
            Ok(CustomerStatus::Active) => Some("active"),
            Ok(CustomerStatus::Archived) => Some("archived"),
            Err(_) => {
                return Err(InvoicingError::invalid(
                    "status",
                    "is not a customer status",
                ));
            }
        };
        let limit = paging::page_size(request.page_size);
        let after = paging::after(&request.page_token, "customers")?;
        let rows = store::page(&self.pool, status, after.as_deref(), limit + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, limit, "customers", |row| &row.id);
        let customers = rows.iter().map(mapping::to_wire).collect();
        Ok(ListCustomersResponse {
            customers,
            next_page_token,
        })
    }

    async fn archive_customer(
        &self,
        request: ArchiveCustomerRequest,
        origin: &Origin,
    ) -> Result<Customer> {
        tally_proto::convert::id::<CustomerId>(&request.customer_id, "customer_id")?;
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut customer = load(&mut transaction, &request.customer_id, true).await?;
        if customer.status == CustomerStatus::Archived as i32 {
            return Ok(customer);
        }
        let ids = store::live_subscription_ids(&mut transaction, &customer.id, now).await?;
        if !ids.is_empty() {
            return Err(InvoicingError::FailedPrecondition(format!(
                "customer {} has subscriptions that are not canceled: {}",
                customer.id,
                ids.join(", ")
            )));
        }
        let before = customer_state(&customer);
        customer.status = CustomerStatus::Archived as i32;
        customer.archived_at = Some(timestamp(now));
        customer.updated_at = Some(timestamp(now));
        save(&mut transaction, &customer).await?;
        let entry = self
            .audit_entry(now, "customer.archived", ("customer", &customer.id), origin)
            .before(before)
            .after(customer_state(&customer));
        self.audit(&mut transaction, entry).await?;
        transaction.commit().await?;
        Ok(customer)
    }
}

/// Whether the customer is archived.
pub fn is_archived(customer: &Customer) -> bool {
    customer.status == CustomerStatus::Archived as i32
}

/// When the customer was created (for tests and listings).
pub fn created_at(customer: &Customer) -> Option<DateTime<Utc>> {
    instant(customer.created_at.as_ref())
}

#[tonic::async_trait]
impl CustomerService for crate::InvoicingApi {
    async fn create_customer(
        &self,
        request: Request<CreateCustomerRequest>,
    ) -> Result<Response<CreateCustomerResponse>, Status> {
        let origin = Origin::from_request(&request);
        Ok(Response::new(
            self.ctx
                .customers()
                .create_customer(request.into_inner(), &origin)
                .await?,
        ))
    }

    async fn get_customer(
        &self,
        request: Request<GetCustomerRequest>,
    ) -> Result<Response<GetCustomerResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let customer = self.ctx.customers().get_customer(request).await?;
        tally_runtime::portal::ensure_customer(&extensions, &customer.id)?;
        Ok(Response::new(GetCustomerResponse {
            customer: Some(customer),
        }))
    }

    async fn update_customer(
        &self,
        request: Request<UpdateCustomerRequest>,
    ) -> Result<Response<UpdateCustomerResponse>, Status> {
        let origin = Origin::from_request(&request);
        let customer = self
            .ctx
            .customers()
            .update_customer(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(UpdateCustomerResponse {
            customer: Some(customer),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<ListCustomersRequest>,
    ) -> Result<Response<ListCustomersResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .customers()
                .list_customers(request.into_inner())
                .await?,
        ))
    }

    async fn archive_customer(
        &self,
        request: Request<ArchiveCustomerRequest>,
    ) -> Result<Response<ArchiveCustomerResponse>, Status> {
        let origin = Origin::from_request(&request);
        let customer = self
            .ctx
            .customers()
            .archive_customer(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(ArchiveCustomerResponse {
            customer: Some(customer),
        }))
    }

    async fn set_billing_mode(
        &self,
        request: Request<tally_proto::invoicing::SetBillingModeRequest>,
    ) -> Result<Response<tally_proto::invoicing::SetBillingModeResponse>, Status> {
        let origin = Origin::from_request(&request);
        Ok(Response::new(
            self.ctx
                .customers()
                .set_billing_mode(request.into_inner(), &origin)
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_differences() {
        let customer = from_request(CreateCustomerRequest {
            external_id: "acme".into(),
            currency: "USD".into(),
            collection_mode: CollectionMode::SendInvoice as i32,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(customer.net_terms_days, 30);
        let mut other = customer.clone();
        other.billing_email = "a@b.io".into();
        assert_eq!(first_difference(&customer, &other), Some("billing_email"));
        assert_eq!(first_difference(&customer, &customer), None);
    }

    #[test]
    fn violations_name_fields() {
        let error = from_request(CreateCustomerRequest {
            external_id: String::new(),
            currency: "XXX".into(),
            billing_email: "not an email".into(),
            ..Default::default()
        })
        .unwrap_err();
        let text = error.to_string();
        for field in ["external_id", "currency", "billing_email"] {
            assert!(text.contains(field), "{text}");
        }
    }
}
