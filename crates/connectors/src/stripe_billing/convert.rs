//! async-stripe's objects → the Tally-side types of [`crate::import`] and
//! [`crate::biller`]. Stripe's amounts are integers in the currency's minor
//! units (and `unit_amount_decimal` a decimal string of minor units): they
//! become exact major-unit `Decimal`s with the exponent Tally's currency
//! table gives, never through a float.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use stripe_shared::{
    Customer, DiscountsResourceDiscountAmount, Invoice, InvoiceLineItem, Price, PriceType,
    RecurringUsageType, Subscription,
};

use super::client::unreadable;
use crate::biller::{ExternalInvoice, ExternalInvoiceLine};
use crate::import::{
    SourceCustomer, SourceError, SourceItem, SourcePrice, SourcePriceKind, SourceSubscription,
};

pub(super) fn customer(customer: &Customer) -> Result<SourceCustomer, SourceError> {
    let id = customer.id.as_str().to_owned();
    let email = customer.email.clone().unwrap_or_default();
    let name = customer
        .name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| (!email.is_empty()).then(|| email.clone()))
        .unwrap_or_else(|| id.clone());
    Ok(SourceCustomer {
        name,
        email,
        currency: customer.currency.as_ref().map(currency_code),
        created_at: instant(customer.created)?,
        id,
    })
}

pub(super) fn price(price: &Price) -> Result<SourcePrice, SourceError> {
    let currency = currency_code(&price.currency);
    let (kind, interval, interval_count) = match (&price.type_, &price.recurring) {
        (PriceType::Recurring, Some(recurring)) => (
            match recurring.usage_type {
                RecurringUsageType::Metered => SourcePriceKind::Metered,
                _ => SourcePriceKind::Licensed,
            },
            recurring.interval.as_str().to_owned(),
            recurring.interval_count,
        ),
        _ => (SourcePriceKind::OneTime, String::new(), 0),
    };
    let unit_amount = match (&price.unit_amount_decimal, price.unit_amount) {
        (Some(decimal), _) => Some(minor_decimal(decimal, &currency)?),
        (None, Some(minor)) => Some(money(minor, &currency)?),
        (None, None) => None,
    };
    Ok(SourcePrice {
        id: price.id.as_str().to_owned(),
        name: price
            .nickname
            .clone()
            .unwrap_or_else(|| price.product.id().as_str().to_owned()),
        currency,
        kind,
        interval,
        interval_count,
        unit_amount,
        active: price.active,
    })
}

pub(super) fn subscription(subscription: &Subscription) -> Result<SourceSubscription, SourceError> {
    // In this API version the period lives on each item (the items of one
    // subscription share it unless it mixes intervals): the earliest start
    // and end are the subscription's current period.
    let items = &subscription.items.data;
    let period_start = items.iter().map(|item| item.current_period_start).min();
    let period_end = items.iter().map(|item| item.current_period_end).min();
    let (Some(period_start), Some(period_end)) = (period_start, period_end) else {
        return Err(unreadable(format!(
            "subscription {} has no items",
            subscription.id.as_str()
        )));
    };
    if subscription.items.has_more {
        return Err(unreadable(format!(
            "subscription {} has more than one page of items (at most 20 are supported)",
            subscription.id.as_str()
        )));
    }
    Ok(SourceSubscription {
        id: subscription.id.as_str().to_owned(),
        customer_id: subscription.customer.id().as_str().to_owned(),
        status: subscription.status.as_str().to_owned(),
        currency: currency_code(&subscription.currency),
        started_at: instant(subscription.start_date)?,
        current_period_start: instant(period_start)?,
        current_period_end: instant(period_end)?,
        trial_end: subscription.trial_end.map(instant).transpose()?,
        items: items
            .iter()
            .map(|item| SourceItem {
                price_id: item.price.id.as_str().to_owned(),
                quantity: match item.price.recurring.as_ref().map(|r| &r.usage_type) {
                    Some(RecurringUsageType::Metered) => None,
                    _ => item.quantity,
                },
            })
            .collect(),
        metadata: subscription
            .metadata
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

/// A Stripe invoice with all its lines (`lines` already complete).
pub(super) fn invoice(
    invoice: &Invoice,
    lines: &[InvoiceLineItem],
) -> Result<ExternalInvoice, SourceError> {
    let currency = currency_code(&invoice.currency);
    let discounts = discount_total(invoice.total_discount_amounts.as_deref());
    Ok(ExternalInvoice {
        id: invoice
            .id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        number: invoice.number.clone().unwrap_or_default(),
        status: invoice
            .status
            .as_ref()
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default(),
        invoice_date: instant(invoice.effective_at.unwrap_or(invoice.created))?,
        subtotal: money(invoice.subtotal, &currency)?,
        // Stripe reports discounts as positive amounts off; Tally's
        // `ExternalInvoice` signs them as Orb does (negative).
        discounts: -money(discounts, &currency)?,
        // Stripe Billing has no minimums or maximums on an invoice.
        minimums: Decimal::ZERO,
        maximums: Decimal::ZERO,
        total: money(invoice.total, &currency)?,
        amount_due: money(invoice.amount_due, &currency)?,
        lines: lines
            .iter()
            .map(|line| invoice_line(line, &currency))
            .collect::<Result<_, _>>()?,
        currency,
    })
}

fn invoice_line(
    line: &InvoiceLineItem,
    currency: &str,
) -> Result<ExternalInvoiceLine, SourceError> {
    let price_id = line
        .pricing
        .as_ref()
        .and_then(|pricing| pricing.price_details.as_ref())
        .map(|details| details.price.id().as_str().to_owned())
        .unwrap_or_default();
    let quantity = match (&line.quantity_decimal, line.quantity) {
        (Some(decimal), _) => decimal_exact(decimal)?,
        (None, Some(quantity)) => Decimal::from(quantity),
        (None, None) => Decimal::ZERO,
    };
    let discounts = discount_total(line.discount_amounts.as_deref());
    Ok(ExternalInvoiceLine {
        id: line.id.as_str().to_owned(),
        name: line.description.clone().unwrap_or_default(),
        price_id,
        start: instant(line.period.start)?,
        end: instant(line.period.end)?,
        quantity,
        subtotal: money(line.subtotal, currency)?,
        adjusted_subtotal: money(line.subtotal - discounts, currency)?,
        amount: money(line.amount - discounts, currency)?,
    })
}

/// Stripe's discount amounts (positive minor units off), summed.
fn discount_total(amounts: Option<&[DiscountsResourceDiscountAmount]>) -> i64 {
    amounts
        .unwrap_or_default()
        .iter()
        .map(|discount| discount.amount)
        .sum()
}

/// `usd` → `USD`.
fn currency_code(currency: &stripe_types::Currency) -> String {
    currency.to_string().to_uppercase()
}

fn exponent(currency: &str) -> Result<u32, SourceError> {
    tally_domain::money::Currency::from_code(currency)
        .map(|currency| currency.minor_units())
        .map_err(|error| unreadable(format!("currency {currency}: {error}")))
}

/// Minor units → major units, exactly.
fn money(minor: i64, currency: &str) -> Result<Decimal, SourceError> {
    Ok(Decimal::new(minor, exponent(currency)?))
}

/// A decimal string of minor units (`unit_amount_decimal`) → major units.
fn minor_decimal(text: &str, currency: &str) -> Result<Decimal, SourceError> {
    let minor = decimal_exact(text)?;
    let scale = Decimal::from(10i64.pow(exponent(currency)?));
    minor
        .checked_div(scale)
        .map(|amount| amount.normalize())
        .ok_or_else(|| unreadable(format!("amount {text} is out of range")))
}

fn decimal_exact(text: &str) -> Result<Decimal, SourceError> {
    // Exact or an error: more digits than `Decimal` holds is never rounded.
    Decimal::from_str_exact(text).map_err(|error| unreadable(format!("decimal {text:?}: {error}")))
}

fn instant(seconds: i64) -> Result<DateTime<Utc>, SourceError> {
    DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| unreadable(format!("timestamp {seconds} is out of range")))
}
