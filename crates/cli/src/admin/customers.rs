//! `tally customers create|list|show|archive` over invoicing's `CustomerService`.

use clap::{Args, Subcommand, ValueEnum};
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::{
    Address, ArchiveCustomerRequest, CollectionMode, CreateCustomerRequest, Customer,
    CustomerStatus, GetCustomerRequest, ListCustomersRequest, TaxId, get_customer_request,
};

use super::subscriptions::{list_subscriptions, subscriptions_table};
use super::table::Table;
use super::{
    Call as _, Output, Target, all_pages, connect, format_time, heading, parse_metadata,
    print_json, print_many, print_one, short, usage,
};

/// `tally customers …`.
#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Creates a customer (idempotent by --external-id: a second run returns the first).
    Create(Box<CreateArgs>),
    /// Lists customers, newest first.
    List {
        /// Only customers in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[command(flatten)]
        target: Target,
    },
    /// Shows a customer (by `cus_…` id or external id) and their subscriptions.
    Show {
        /// `cus_…`, or the external id.
        customer: String,
        #[command(flatten)]
        target: Target,
    },
    /// Archives a customer (refused while a subscription is live).
    Archive {
        /// `cus_…`.
        customer: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A customer's state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    /// Can hold subscriptions.
    Active,
    /// Archived.
    Archived,
}

/// How a customer pays.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Collection {
    /// Charged with the default payment method at finalization.
    ChargeAutomatically,
    /// Sent an invoice, due after the net terms.
    SendInvoice,
}

/// Options of `tally customers create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display and legal name.
    #[arg(long)]
    name: String,
    /// The currency the customer is billed in (ISO 4217), e.g. USD.
    #[arg(long)]
    currency: String,
    /// Your own id for the customer (required): creating it again returns the same customer.
    #[arg(long)]
    external_id: String,
    /// Where invoices go.
    #[arg(long)]
    email: Option<String>,
    /// How invoices are collected.
    #[arg(long, value_enum, default_value_t = Collection::ChargeAutomatically)]
    collection: Collection,
    /// Days until a sent invoice is due.
    #[arg(long, default_value_t = 0)]
    net_terms_days: u32,
    /// Billing address: ISO 3166 country code.
    #[arg(long)]
    country: Option<String>,
    /// Billing address: first line.
    #[arg(long)]
    address_line1: Option<String>,
    /// Billing address: city.
    #[arg(long)]
    city: Option<String>,
    /// Billing address: postal code.
    #[arg(long)]
    postal_code: Option<String>,
    /// Tax id as kind=value, e.g. eu_vat=DE123456789.
    #[arg(long)]
    tax_id: Option<String>,
    /// Metadata, key=value (repeatable).
    #[arg(long)]
    metadata: Vec<String>,
    #[command(flatten)]
    target: Target,
}

type Client = CustomerServiceClient<super::Authenticated>;

/// Runs `tally customers`.
#[allow(clippy::print_stderr)]
pub async fn run(command: CustomersCommand) -> anyhow::Result<()> {
    match command {
        CustomersCommand::Create(args) => {
            let request = create_request(&args)?;
            let mut client = client(&args.target).await?;
            let answer = client
                .create_customer(request)
                .await
                .answer("CreateCustomer")?;
            let customer = answer.customer.unwrap_or_default();
            if !answer.created {
                eprintln!(
                    "customer {} already existed with external id {}",
                    customer.id, customer.external_id
                );
            }
            print_customer(args.target.output, &customer)
        }
        CustomersCommand::List { status, target } => {
            let status = match status {
                None => CustomerStatus::Unspecified,
                Some(Status::Active) => CustomerStatus::Active,
                Some(Status::Archived) => CustomerStatus::Archived,
            };
            let mut client = client(&target).await?;
            let customers = all_pages(async |page_token| {
                let page = client
                    .list_customers(ListCustomersRequest {
                        status: status as i32,
                        page_size: 100,
                        page_token,
                    })
                    .await
                    .answer("ListCustomers")?;
                Ok((page.customers, page.next_page_token))
            })
            .await?;
            print_many(
                target.output,
                &customers,
                "tally.invoicing.v1.Customer",
                |customers| {
                    let mut table = Table::new(&[
                        "id",
                        "external id",
                        "name",
                        "email",
                        "currency",
                        "status",
                        "created",
                    ]);
                    for customer in customers {
                        table.row(vec![
                            customer.id.clone(),
                            customer.external_id.clone(),
                            customer.name.clone(),
                            customer.billing_email.clone(),
                            customer.currency.clone(),
                            status_name(customer),
                            format_time(customer.created_at.as_ref()),
                        ]);
                    }
                    table.print();
                },
            )
        }
        CustomersCommand::Show { customer, target } => {
            let lookup = if customer.starts_with("cus_") {
                get_customer_request::Lookup::CustomerId(customer.clone())
            } else {
                get_customer_request::Lookup::ExternalId(customer.clone())
            };
            let found = client(&target)
                .await?
                .get_customer(GetCustomerRequest {
                    lookup: Some(lookup),
                })
                .await
                .answer(&format!("GetCustomer {customer}"))?
                .customer
                .unwrap_or_default();
            let subscriptions = list_subscriptions(&target, &found.id, "").await?;
            if target.output == Output::Json {
                let mut value = super::json::to_value(&found, "tally.invoicing.v1.Customer")?;
                let mut listed = Vec::new();
                for subscription in &subscriptions {
                    listed.push(super::json::to_value(
                        subscription,
                        "tally.invoicing.v1.Subscription",
                    )?);
                }
                if let Some(object) = value.as_object_mut() {
                    object.insert("subscriptions".into(), listed.into());
                }
                return print_json(&value);
            }
            print_customer(Output::Table, &found)?;
            heading("subscriptions");
            subscriptions_table(&subscriptions).print();
            Ok(())
        }
        CustomersCommand::Archive { customer, target } => {
            let archived = client(&target)
                .await?
                .archive_customer(ArchiveCustomerRequest {
                    customer_id: customer.clone(),
                })
                .await
                .answer(&format!("ArchiveCustomer {customer}"))?
                .customer
                .unwrap_or_default();
            print_customer(target.output, &archived)
        }
    }
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(CustomerServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

fn create_request(args: &CreateArgs) -> anyhow::Result<CreateCustomerRequest> {
    let address = (args.country.is_some()
        || args.address_line1.is_some()
        || args.city.is_some()
        || args.postal_code.is_some())
    .then(|| Address {
        line1: args.address_line1.clone().unwrap_or_default(),
        city: args.city.clone().unwrap_or_default(),
        postal_code: args.postal_code.clone().unwrap_or_default(),
        country: args.country.clone().unwrap_or_default(),
        ..Default::default()
    });
    let tax_id = args
        .tax_id
        .as_deref()
        .map(|text| {
            text.split_once('=')
                .map(|(kind, value)| TaxId {
                    kind: kind.to_owned(),
                    value: value.to_owned(),
                })
                .ok_or_else(|| usage(format!("--tax-id `{text}` is not kind=value")))
        })
        .transpose()?;
    Ok(CreateCustomerRequest {
        external_id: args.external_id.clone(),
        name: args.name.clone(),
        billing_email: args.email.clone().unwrap_or_default(),
        billing_address: address,
        tax_id,
        currency: args.currency.clone(),
        collection_mode: match args.collection {
            Collection::ChargeAutomatically => CollectionMode::ChargeAutomatically,
            Collection::SendInvoice => CollectionMode::SendInvoice,
        } as i32,
        net_terms_days: args.net_terms_days,
        metadata: parse_metadata(&args.metadata)?,
    })
}

fn status_name(customer: &Customer) -> String {
    CustomerStatus::try_from(customer.status).map_or_else(
        |_| customer.status.to_string(),
        |status| short(status.as_str_name(), "CUSTOMER_STATUS_"),
    )
}

fn print_customer(output: Output, customer: &Customer) -> anyhow::Result<()> {
    print_one(
        output,
        customer,
        "tally.invoicing.v1.Customer",
        |customer| {
            let address = customer
                .billing_address
                .as_ref()
                .map_or_else(String::new, |a| {
                    [
                        &a.line1,
                        &a.line2,
                        &a.postal_code,
                        &a.city,
                        &a.region,
                        &a.country,
                    ]
                    .iter()
                    .filter(|part| !part.is_empty())
                    .map(|part| part.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
                });
            let collection = CollectionMode::try_from(customer.collection_mode).map_or_else(
                |_| "-".to_owned(),
                |mode| short(mode.as_str_name(), "COLLECTION_MODE_"),
            );
            let mut metadata: Vec<String> = customer
                .metadata
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            metadata.sort();
            Table::fields(&[
                ("id", customer.id.clone()),
                ("external id", customer.external_id.clone()),
                ("name", customer.name.clone()),
                ("email", customer.billing_email.clone()),
                ("address", address),
                (
                    "tax id",
                    customer
                        .tax_id
                        .as_ref()
                        .map_or_else(String::new, |t| format!("{} {}", t.kind, t.value)),
                ),
                ("currency", customer.currency.clone()),
                (
                    "collection",
                    format!("{collection}, net {} days", customer.net_terms_days),
                ),
                ("status", status_name(customer)),
                ("metadata", metadata.join(", ")),
                ("created", format_time(customer.created_at.as_ref())),
                ("archived", format_time(customer.archived_at.as_ref())),
            ])
            .print();
        },
    )
}
