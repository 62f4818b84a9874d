//! `tally invoices list|show|upcoming` over invoicing's `InvoiceService` (and the
//! commands that change an invoice, `finalize|void|credit-note`, in
//! `invoice_actions`). `show`
//! prints every line with its explanation: a usage line's price breakdown
//! step by step (tiers, included units, matrix cells…), a proration's factor
//! and periods, the grants behind applied credits, an adjustment's origin.

use clap::{Subcommand, ValueEnum};
use tally_proto::invoicing::invoice_line::Detail;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::{
    GetInvoiceRequest, Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, ListInvoicesRequest,
    PreviewUpcomingInvoiceRequest,
};
use tally_proto::rating::{BreakdownStepKind, UsageCharge};

use super::invoice_actions::{CreditNoteArgs, FinalizeArgs, VoidArgs};
use super::table::Table;
use super::{
    Call as _, Target, all_pages, connect, format_money, format_range, format_time, heading,
    print_many, print_one, short,
};

/// `tally invoices …`.
#[derive(Debug, Subcommand)]
pub enum InvoicesCommand {
    /// Lists invoices, newest period first.
    List {
        /// Only this customer's (`cus_…`).
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
            let mut client = InvoiceServiceClient::new(
                connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
            );
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

fn status_name(invoice: &Invoice) -> String {
    InvoiceStatus::try_from(invoice.status).map_or_else(
        |_| invoice.status.to_string(),
        |status| short(status.as_str_name(), "INVOICE_STATUS_"),
    )
}

/// The invoice's fields, its lines with their breakdown, then its totals.
pub(super) fn print_invoice(invoice: &Invoice) {
    let mut fields = vec![
        ("invoice", format!("{} {}", invoice.number, invoice.id)),
        ("customer", invoice.customer_id.clone()),
        ("subscription", invoice.subscription_id.clone()),
        ("status", status_name(invoice)),
        ("period", format_range(invoice.period.as_ref())),
        ("finalized", format_time(invoice.finalized_at.as_ref())),
        ("due", format_time(invoice.due_at.as_ref())),
    ];
    if invoice.voided_at.is_some() {
        fields.push(("voided", format_time(invoice.voided_at.as_ref())));
        fields.push(("void reason", invoice.void_reason.clone()));
    }
    Table::fields(&fields).print();
    heading("lines");
    let mut table = Table::new(&["kind", "description", "quantity", "unit price", "amount"]);
    for line in &invoice.lines {
        table.row(vec![
            line_kind(line),
            line.description.clone(),
            decimal(line.quantity.as_ref()),
            decimal(line.unit_price.as_ref()),
            format_money(line.amount.as_ref()),
        ]);
        for detail in explain(line) {
            table.row(vec![String::new(), format!("  {detail}")]);
        }
    }
    table.print();
    heading("totals");
    Table::fields(&[
        ("subtotal", format_money(invoice.subtotal.as_ref())),
        (
            "credits applied",
            format_money(invoice.credits_applied.as_ref()),
        ),
        ("total", format_money(invoice.total.as_ref())),
        ("paid", format_money(invoice.amount_paid.as_ref())),
        ("credited", format_money(invoice.amount_credited.as_ref())),
        ("amount due", format_money(invoice.amount_due.as_ref())),
    ])
    .print();
}

fn line_kind(line: &InvoiceLine) -> String {
    InvoiceLineKind::try_from(line.kind).map_or_else(
        |_| line.kind.to_string(),
        |kind| short(kind.as_str_name(), "INVOICE_LINE_KIND_").replace('_', " "),
    )
}

fn decimal(value: Option<&tally_proto::common::Decimal>) -> String {
    value.map_or_else(String::new, |value| value.value.clone())
}

/// The lines under an invoice line that say where its amount comes from.
fn explain(line: &InvoiceLine) -> Vec<String> {
    let mut details = vec![format!("period {}", format_range(line.period.as_ref()))];
    match &line.detail {
        None => {}
        Some(Detail::Recurring(recurring)) => details.push(format!(
            "charge {} of {}: {} per period",
            recurring.charge_key,
            recurring.plan_version_id,
            format_money(recurring.period_amount.as_ref())
        )),
        Some(Detail::Usage(usage)) => {
            if let Some(charge) = &usage.charge {
                details.extend(usage_breakdown(charge));
            }
        }
        Some(Detail::Proration(proration)) => details.push(format!(
            "charge {}: {} × factor {} ({} of {})",
            proration.charge_key,
            format_money(proration.period_amount.as_ref()),
            decimal(proration.factor.as_ref()),
            format_range(proration.prorated_period.as_ref()),
            format_range(proration.full_period.as_ref())
        )),
        Some(Detail::MinimumTrueUp(minimum)) => details.push(format!(
            "minimum commitment {} against charges of {}",
            format_money(minimum.minimum_commitment.as_ref()),
            format_money(minimum.charges_total.as_ref())
        )),
        Some(Detail::CreditsApplied(credits)) => {
            for application in &credits.applications {
                details.push(format!(
                    "grant {}: {}",
                    application.credit_grant_id,
                    format_money(application.amount.as_ref())
                ));
            }
        }
        Some(Detail::Adjustment(adjustment)) => {
            details.push(format!(
                "adjusts {} line {}: {}",
                adjustment.original_invoice_id, adjustment.original_line_id, adjustment.reason
            ));
            if let Some(charge) = &adjustment.repriced_charge {
                details.extend(usage_breakdown(charge));
            }
        }
    }
    details
}

fn usage_breakdown(charge: &UsageCharge) -> Vec<String> {
    let mut group: Vec<String> = charge
        .group
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    group.sort();
    let mut details = vec![format!(
        "meter {}{}: {} events, quantity {}, billable {}; precise {}",
        charge.meter_code,
        if group.is_empty() {
            String::new()
        } else {
            format!(" [{}]", group.join(", "))
        },
        charge.event_count,
        decimal(charge.quantity.as_ref()),
        decimal(charge.billable_quantity.as_ref()),
        format_money(charge.precise_amount.as_ref())
    )];
    for step in &charge.breakdown {
        let kind = BreakdownStepKind::try_from(step.kind).map_or_else(
            |_| step.kind.to_string(),
            |kind| short(kind.as_str_name(), "BREAKDOWN_STEP_KIND_").replace('_', " "),
        );
        let mut text = format!("· {kind}");
        if !step.description.is_empty() {
            text.push_str(&format!(" ({})", step.description));
        }
        if step.quantity.is_some() {
            text.push_str(&format!(": {}", decimal(step.quantity.as_ref())));
        }
        if step.unit_price.is_some() {
            text.push_str(&format!(" × {}", decimal(step.unit_price.as_ref())));
        }
        if step.flat_amount.is_some() {
            text.push_str(&format!(" + {}", format_money(step.flat_amount.as_ref())));
        }
        text.push_str(&format!(" = {}", format_money(step.amount.as_ref())));
        details.push(text);
    }
    details
}
