//! `tally invoices list|show|upcoming` over invoicing's `InvoiceService` (and the
//! commands that change an invoice, `finalize|void|credit-note`, in
//! `invoice_actions`). `show`
//! prints every line with its explanation (`invoice_view`).

use clap::{Subcommand, ValueEnum};
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::{
    GetInvoiceRequest, Invoice, InvoiceStatus, ListInvoicesRequest, PreviewUpcomingInvoiceRequest,
};

use super::invoice_actions::{CreditNoteArgs, FinalizeArgs, VoidArgs};
use super::invoice_view::{print_invoice, status_name};
use super::table::Table;
use super::{
    Call as _, Target, all_pages, connect, format_money, format_range, heading, print_many,
    print_one,
};

/// `tally invoices …`.
#[derive(Debug, Subcommand)]
pub enum InvoicesCommand {
    /// Lists invoices, newest period first.
    List {
        /// Only this customer's (`cus_…` or the external id).
        #[arg(long)]
        customer: Option<String>,
        /// Only this subscription's (`sub_…`).
        #[arg(long)]
        subscription: Option<String>,
        /// Only invoices in these states (repeatable or comma-separated).
        #[arg(long, value_enum, value_delimiter = ',')]
        status: Vec<Status>,
        #[command(flatten)]
        target: Target,
    },
    /// Shows an invoice: every line with its breakdown, then the totals.
    Show {
        /// `inv_…`.
        invoice: String,
        #[command(flatten)]
        target: Target,
    },
    /// The invoice a subscription's current period would produce if it ended
    /// now (usage so far; not stored): a subscription's, or each of a customer's.
    Upcoming {
        /// `sub_…`.
        subscription: Option<String>,
        /// Instead of a subscription: every current subscription of this
        /// customer (`cus_…` or the external id).
        #[arg(long, conflicts_with = "subscription")]
        customer: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Finalizes a draft now: it gets its number and becomes immutable.
    Finalize(FinalizeArgs),
    /// Voids a finalized, unpaid invoice (nothing is due any more).
    Void(VoidArgs),
    /// Credits all or part of a finalized invoice with a credit note.
    CreditNote(CreditNoteArgs),
}

/// An invoice's state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    /// Still changing until finalized.
    Draft,
    /// Immutable, awaiting payment.
    Finalized,
    /// Paid.
    Paid,
    /// Voided.
    Void,
    /// Written off.
    Uncollectible,
}

impl Status {
    fn wire(self) -> InvoiceStatus {
        match self {
            Self::Draft => InvoiceStatus::Draft,
            Self::Finalized => InvoiceStatus::Finalized,
            Self::Paid => InvoiceStatus::Paid,
            Self::Void => InvoiceStatus::Void,
            Self::Uncollectible => InvoiceStatus::Uncollectible,
        }
    }
}

/// Runs `tally invoices`.
pub async fn run(command: InvoicesCommand) -> anyhow::Result<()> {
    match command {
        InvoicesCommand::List {
            customer,
            subscription,
            status,
            target,
        } => {
            let channel =
                connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?;
            // An external id is looked up: ListInvoices takes Tally's `cus_…` only.
            let customer = match customer {
                Some(given) => Some(super::usage::customer_id(&channel, &given).await?),
                None => None,
            };
            let mut client = InvoiceServiceClient::new(channel);
            let statuses: Vec<i32> = status.iter().map(|s| s.wire() as i32).collect();
            let invoices = all_pages(async |page_token| {
                let page = client
                    .list_invoices(ListInvoicesRequest {
                        customer_id: customer.clone().unwrap_or_default(),
                        subscription_id: subscription.clone().unwrap_or_default(),
                        statuses: statuses.clone(),
                        page_size: 100,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .answer("ListInvoices")?;
                Ok((page.invoices, page.next_page_token))
            })
            .await?;
            print_many(
                target.output,
                &invoices,
                "tally.invoicing.v1.Invoice",
                |invoices| {
                    let mut table = Table::new(&[
                        "id", "number", "customer", "status", "period", "total", "due",
                    ]);
                    for invoice in invoices {
                        table.row(vec![
                            invoice.id.clone(),
                            invoice.number.clone(),
                            invoice.customer_id.clone(),
                            status_name(invoice),
                            format_range(invoice.period.as_ref()),
                            format_money(invoice.total.as_ref()),
                            format_money(invoice.amount_due.as_ref()),
                        ]);
                    }
                    table.print();
                },
            )
        }
        InvoicesCommand::Upcoming {
            subscription,
            customer,
            target,
        } => upcoming(subscription, customer, target).await,
        InvoicesCommand::Finalize(args) => super::invoice_actions::finalize(args).await,
        InvoicesCommand::Void(args) => super::invoice_actions::void(args).await,
        InvoicesCommand::CreditNote(args) => super::invoice_actions::credit_note(args).await,
        InvoicesCommand::Show { invoice, target } => {
            let found = InvoiceServiceClient::new(
                connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
            )
            .get_invoice(GetInvoiceRequest {
                invoice_id: invoice.clone(),
            })
            .await
            .answer(&format!("GetInvoice {invoice}"))?
            .invoice
            .unwrap_or_default();
            print_one(
                target.output,
                &found,
                "tally.invoicing.v1.Invoice",
                print_invoice,
            )?;
            if target.output == super::Output::Table {
                super::audit::print_timeline(&target, &invoice).await?;
            }
            Ok(())
        }
    }
}

/// `tally invoices upcoming`: one preview (`--output json`: the invoice), or
/// one per current subscription of `--customer` (`--output json`: an array).
async fn upcoming(
    subscription: Option<String>,
    customer: Option<String>,
    target: Target,
) -> anyhow::Result<()> {
    let channel = connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?;
    let mut client = InvoiceServiceClient::new(channel.clone());
    let mut preview = async |subscription_id: &str| -> anyhow::Result<Invoice> {
        Ok(client
            .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
                subscription_id: subscription_id.to_owned(),
            })
            .await
            .answer(&format!("PreviewUpcomingInvoice {subscription_id}"))?
            .invoice
            .unwrap_or_default())
    };
    match (subscription, customer) {
        (Some(subscription), None) => {
            let invoice = preview(&subscription).await?;
            print_one(
                target.output,
                &invoice,
                "tally.invoicing.v1.Invoice",
                print_invoice,
            )
        }
        (None, Some(customer)) => {
            let customer_id = super::usage::customer_id(&channel, &customer).await?;
            let current: Vec<String> =
                super::subscriptions::list_subscriptions(&target, &customer_id, "")
                    .await?
                    .into_iter()
                    .filter(|subscription| subscription.current_period.is_some())
                    .map(|subscription| subscription.id)
                    .collect();
            if current.is_empty() {
                return Err(anyhow::anyhow!(
                    "{customer_id} has no subscription with a current period"
                ));
            }
            let mut invoices = Vec::new();
            for subscription_id in &current {
                invoices.push(preview(subscription_id).await?);
            }
            print_many(
                target.output,
                &invoices,
                "tally.invoicing.v1.Invoice",
                |invoices| {
                    for (index, invoice) in invoices.iter().enumerate() {
                        if index > 0 {
                            heading("next subscription");
                        }
                        print_invoice(invoice);
                    }
                },
            )
        }
        _ => Err(super::usage(
            "name a subscription (`tally invoices upcoming sub_…`) or --customer",
        )),
    }
}
