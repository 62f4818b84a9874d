//! What a finalized `InvoiceEvent` snapshot must hold to be collected,
//! validated into what Stripe needs.

use tally_domain::money::{Currency, Money};
use tally_proto::events::InvoiceEvent;
use tally_proto::invoicing::{CollectionMode, Customer, Invoice};

use crate::stripe::{Collection, CustomerDetails, InvoiceItem};
use tally_proto::convert::money as parse_money;

/// An invoice to collect, validated from the snapshot.
#[derive(Debug, Clone)]
pub(super) struct Collectible {
    pub(super) invoice_id: String,
    pub(super) number: String,
    pub(super) customer: CustomerDetails,
    pub(super) currency: Currency,
    pub(super) amount_due: Money,
    pub(super) items: Vec<InvoiceItem>,
    pub(super) collection: Collection,
    pub(super) net_terms_days: u32,
    pub(super) version: i64,
}

/// Validates a finalized snapshot into what Stripe needs.
pub(super) fn collectible(event: &InvoiceEvent, amount_due: Money) -> Result<Collectible, String> {
    let invoice: &Invoice = event.invoice.as_ref().ok_or("invoice: required")?;
    let customer: &Customer = event.customer.as_ref().ok_or("customer: required")?;
    if invoice.id != event.invoice_id || invoice.id.is_empty() {
        return Err(format!(
            "invoice.id: `{}` differs from invoice_id `{}`",
            invoice.id, event.invoice_id
        ));
    }
    if customer.id != invoice.customer_id || customer.id.is_empty() {
        return Err(format!(
            "customer.id: `{}` differs from invoice.customer_id `{}`",
            customer.id, invoice.customer_id
        ));
    }
    let currency = Currency::from_code(&invoice.currency)
        .map_err(|_| format!("invoice.currency: unknown currency `{}`", invoice.currency))?;
    if amount_due.currency() != currency {
        return Err(format!(
            "finalized.amount_due: currency {} differs from the invoice's {currency}",
            amount_due.currency()
        ));
    }
    if !amount_due.is_rounded() || amount_due.is_negative() {
        return Err(format!(
            "finalized.amount_due: {amount_due} is not a non-negative amount in whole minor units"
        ));
    }
    let mut items = Vec::with_capacity(invoice.lines.len());
    let mut lines_total = Money::zero(currency);
    for (index, line) in invoice.lines.iter().enumerate() {
        let amount = parse_money(
            line.amount.as_ref(),
            &format!("invoice.lines[{index}].amount"),
        )
        .map_err(|error| error.to_string())?;
        if amount.currency() != currency {
            return Err(format!(
                "invoice.lines[{index}].amount: currency {} differs from the invoice's {currency}",
                amount.currency()
            ));
        }
        if !amount.is_rounded() {
            return Err(format!(
                "invoice.lines[{index}].amount: {amount} is not in whole minor units of {currency}"
            ));
        }
        if line.id.is_empty() {
            return Err(format!("invoice.lines[{index}].id: required"));
        }
        lines_total = lines_total
            .checked_add(&amount)
            .map_err(|error| format!("invoice.lines: {error}"))?;
        if amount.is_zero() {
            continue;
        }
        items.push(InvoiceItem {
            tally_line_id: line.id.clone(),
            description: line.description.clone(),
            amount,
        });
    }
    // What was paid or credited before finalization is not a line: one
    // adjustment item makes Stripe's total equal the amount due exactly.
    let difference = amount_due
        .checked_sub(&lines_total)
        .map_err(|error| format!("invoice.lines: {error}"))?;
    if !difference.is_zero() {
        items.push(InvoiceItem {
            tally_line_id: format!("{}_settled_before_finalization", invoice.id),
            description: "Paid or credited before finalization".into(),
            amount: difference,
        });
    }
    let collection = match CollectionMode::try_from(invoice.collection_mode)
        .unwrap_or(CollectionMode::Unspecified)
    {
        CollectionMode::SendInvoice => Collection::SendInvoice {
            days_until_due: if customer.net_terms_days == 0 {
                30
            } else {
                customer.net_terms_days
            },
        },
        CollectionMode::ChargeAutomatically | CollectionMode::Unspecified => {
            Collection::ChargeAutomatically
        }
    };
    let address = customer.billing_address.as_ref().map(|address| {
        [
            address.line1.clone(),
            address.line2.clone(),
            address.city.clone(),
            address.region.clone(),
            address.postal_code.clone(),
            address.country.clone(),
        ]
    });
    let net_terms_days = match collection {
        Collection::SendInvoice { days_until_due } => days_until_due,
        Collection::ChargeAutomatically => 0,
    };
    Ok(Collectible {
        invoice_id: invoice.id.clone(),
        number: invoice.number.clone(),
        customer: CustomerDetails {
            tally_customer_id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.billing_email.clone(),
            address,
            tax_id: customer
                .tax_id
                .as_ref()
                .filter(|tax_id| !tax_id.kind.is_empty() && !tax_id.value.is_empty())
                .map(|tax_id| (tax_id.kind.clone(), tax_id.value.clone())),
        },
        currency,
        amount_due,
        items,
        collection,
        net_terms_days,
        version: i64::try_from(invoice.version).unwrap_or(i64::MAX),
    })
}
