//! How `tally invoices show|upcoming` and the invoice actions print an
//! invoice: its fields, every line with its explanation (a usage line's price
//! breakdown step by step, a proration's factor and periods, the grants behind
//! applied credits, an adjustment's origin), then its totals.

use tally_proto::invoicing::invoice_line::Detail;
use tally_proto::invoicing::{Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus};
use tally_proto::rating::{BreakdownStepKind, UsageCharge};

use super::table::Table;
use super::{format_money, format_range, format_time, heading, short};

pub(super) fn status_name(invoice: &Invoice) -> String {
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
