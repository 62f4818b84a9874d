//! Orb's JSON shapes for customers, subscriptions and invoices, as its
//! OpenAPI spec (`NewCustomer`, `Customer`, `NewSubscription`,
//! `MutatedSubscription`, `Invoices`, `Invoice`, `InvoiceLineItem`,
//! `PaginationMetadata`) and its official SDKs define them — only the fields
//! Tally sends or reads. Money is a decimal string in Orb and is read into
//! `Decimal` from the string, never through a float. Private to the adapter.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::biller::{CustomerMirror, ExternalInvoice, ExternalInvoiceLine, SubscriptionMirror};

/// The metadata key naming the Tally object an Orb object mirrors.
const TALLY_CUSTOMER_KEY: &str = "tally_customer_id";
const TALLY_SUBSCRIPTION_KEY: &str = "tally_subscription_id";

/// `POST /v1/customers` (`NewCustomer`).
#[derive(Debug, Serialize)]
pub(super) struct NewCustomer<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub external_customer_id: &'a str,
    pub currency: &'a str,
    pub metadata: BTreeMap<&'static str, &'a str>,
}

impl<'a> NewCustomer<'a> {
    pub(super) fn from_mirror(customer: &'a CustomerMirror) -> Self {
        Self {
            name: &customer.name,
            email: &customer.email,
            external_customer_id: &customer.external_customer_id,
            currency: &customer.currency,
            metadata: BTreeMap::from([(TALLY_CUSTOMER_KEY, customer.customer_id.as_str())]),
        }
    }
}

/// `POST /v1/subscriptions` (`NewSubscription`): by external customer id
/// and Orb plan id, starting when Tally's starts.
#[derive(Debug, Serialize)]
pub(super) struct NewSubscription<'a> {
    pub external_customer_id: &'a str,
    pub plan_id: &'a str,
    pub currency: &'a str,
    /// ISO 8601 in UTC.
    pub start_date: String,
    pub metadata: BTreeMap<&'static str, &'a str>,
}

impl<'a> NewSubscription<'a> {
    pub(super) fn from_mirror(subscription: &'a SubscriptionMirror) -> Self {
        Self {
            external_customer_id: &subscription.external_customer_id,
            plan_id: &subscription.biller_plan_id,
            currency: &subscription.currency,
            start_date: subscription
                .start_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            metadata: BTreeMap::from([(
                TALLY_SUBSCRIPTION_KEY,
                subscription.subscription_id.as_str(),
            )]),
        }
    }
}

/// The part of a created object Tally keeps: its id (`Customer`,
/// `MutatedSubscription`).
#[derive(Debug, Deserialize)]
pub(super) struct Created {
    pub id: String,
}

/// One page of `GET /v1/invoices` (`Invoices`).
#[derive(Debug, Deserialize)]
pub(super) struct InvoicePage {
    pub data: Vec<Invoice>,
    pub pagination_metadata: PaginationMetadata,
}

/// `PaginationMetadata`.
#[derive(Debug, Deserialize)]
pub(super) struct PaginationMetadata {
    pub has_more: bool,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `Invoice`, the fields a parity check reads.
#[derive(Debug, Deserialize)]
pub(super) struct Invoice {
    pub id: String,
    #[serde(default)]
    pub invoice_number: String,
    pub status: String,
    pub currency: String,
    pub invoice_date: DateTime<Utc>,
    pub subtotal: String,
    pub total: String,
    pub amount_due: String,
    pub line_items: Vec<LineItem>,
}

/// `InvoiceLineItem`.
#[derive(Debug, Deserialize)]
pub(super) struct LineItem {
    pub id: String,
    pub name: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    /// A JSON number in Orb (not money): read from its text.
    pub quantity: serde_json::Number,
    pub subtotal: String,
    pub adjusted_subtotal: String,
    pub amount: String,
    #[serde(default)]
    pub price: Option<PriceRef>,
    #[serde(default)]
    pub adjustments: Vec<Adjustment>,
}

/// The price of a line: its id.
#[derive(Debug, Deserialize)]
pub(super) struct PriceRef {
    pub id: String,
}

/// A monetary adjustment applied to a line (`usage_discount`,
/// `amount_discount`, `percentage_discount`, `tiered_percentage_discount`,
/// `minimum`, `maximum`) and the amount it applied.
#[derive(Debug, Deserialize)]
pub(super) struct Adjustment {
    pub adjustment_type: String,
    pub amount: String,
}

/// An Orb decimal string, exactly.
fn decimal(value: &str, field: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(value.trim())
        .map_err(|error| format!("{field} {value:?} is not an exact decimal: {error}"))
}

impl Invoice {
    /// The invoice in Tally's terms; `Err` names the field Orb sent wrong.
    pub(super) fn into_external(self) -> Result<ExternalInvoice, String> {
        let mut discounts = Decimal::ZERO;
        let mut minimums = Decimal::ZERO;
        let mut maximums = Decimal::ZERO;
        let mut lines = Vec::with_capacity(self.line_items.len());
        for line in self.line_items {
            let at = |field: &str| format!("invoice {} line {} {field}", self.id, line.id);
            for adjustment in &line.adjustments {
                let amount = decimal(&adjustment.amount, &at("adjustment amount"))?;
                match adjustment.adjustment_type.as_str() {
                    "minimum" => minimums += amount,
                    "maximum" => maximums += amount,
                    kind if kind.ends_with("discount") => discounts += amount,
                    other => {
                        return Err(format!(
                            "{}: unknown adjustment type {other:?}",
                            at("adjustment")
                        ));
                    }
                }
            }
            lines.push(ExternalInvoiceLine {
                quantity: Decimal::from_str(&line.quantity.to_string())
                    .map_err(|error| format!("{}: {error}", at("quantity")))?,
                subtotal: decimal(&line.subtotal, &at("subtotal"))?,
                adjusted_subtotal: decimal(&line.adjusted_subtotal, &at("adjusted_subtotal"))?,
                amount: decimal(&line.amount, &at("amount"))?,
                price_id: line.price.map(|price| price.id).unwrap_or_default(),
                id: line.id,
                name: line.name,
                start: line.start_date,
                end: line.end_date,
            });
        }
        let at = |field: &str| format!("invoice {} {field}", self.id);
        Ok(ExternalInvoice {
            subtotal: decimal(&self.subtotal, &at("subtotal"))?,
            total: decimal(&self.total, &at("total"))?,
            amount_due: decimal(&self.amount_due, &at("amount_due"))?,
            discounts,
            minimums,
            maximums,
            lines,
            id: self.id,
            number: self.invoice_number,
            status: self.status,
            currency: self.currency,
            invoice_date: self.invoice_date,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_exactly() {
        let invoice: Invoice = serde_json::from_value(serde_json::json!({
            "id": "inv_1", "invoice_number": "ORB-1", "status": "issued", "currency": "USD",
            "invoice_date": "2026-12-01T00:00:00+00:00",
            "subtotal": "100.10", "total": "90.30", "amount_due": "90.30",
            "line_items": [{
                "id": "li_1", "name": "API calls",
                "start_date": "2026-11-01T00:00:00+00:00", "end_date": "2026-12-01T00:00:00+00:00",
                "quantity": 1000.5, "subtotal": "100.10", "adjusted_subtotal": "90.30",
                "amount": "90.30", "price": {"id": "price_1"},
                "adjustments": [
                    {"adjustment_type": "percentage_discount", "amount": "-10.01"},
                    {"adjustment_type": "minimum", "amount": "0.21"}
                ]
            }]
        }))
        .unwrap();
        let external = invoice.into_external().unwrap();
        assert_eq!(external.subtotal.to_string(), "100.10");
        assert_eq!(external.discounts.to_string(), "-10.01");
        assert_eq!(external.minimums.to_string(), "0.21");
        assert_eq!(external.lines[0].quantity.to_string(), "1000.5");
        assert_eq!(external.lines[0].price_id, "price_1");
    }

    #[test]
    fn an_inexact_amount_is_an_error_naming_the_field() {
        assert!(decimal("1e3", "subtotal").unwrap_err().contains("subtotal"));
        assert!(
            decimal("0.1000000000000000055511151231257827", "total").is_err(),
            "more digits than Decimal holds is refused, never rounded"
        );
    }
}
