//! A customer's two billers for migration tests, pricing one catalog: a
//! stateful fake Orb (wiremock; invoices built on the SDK-checked fixture,
//! priced from the usage it holds per customer and period) and a fake of
//! Tally's invoicing (the same catalog priced by Tally's rules: amounts per
//! line, a minimum true-up line), with the billing modes it was told.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Datelike as _, TimeZone as _, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_connectors::migration::model::{BillingPeriod, TallyInvoice, TallyInvoiceLine};
use tally_connectors::migration::tally::{BillingModeChange, TallyBilling, TallyUnavailable};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::billing_fake::fixture;

/// The catalog both billers price: a 49.00 base fee, API calls at a unit
/// price (0.002 unless a customer is mispriced) and a 60.00 minimum.
pub const BASE_FEE: &str = "49.00";
pub const UNIT_PRICE: &str = "0.002";
pub const MINIMUM: &str = "60.00";
pub const PRICE_BASE: &str = "orb_price_base";
pub const PRICE_CALLS: &str = "orb_price_calls";

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// The first instant of the month `months` after `at`'s month.
pub fn month_start(at: DateTime<Utc>, months: i32) -> DateTime<Utc> {
    let index = at.year() * 12 + i32::try_from(at.month0()).unwrap() + months;
    Utc.with_ymd_and_hms(
        index.div_euclid(12),
        u32::try_from(index.rem_euclid(12)).unwrap() + 1,
        1,
        0,
        0,
        0,
    )
    .unwrap()
}

/// Usage of the period ending at a boundary, per customer.
#[derive(Debug, Default)]
pub struct Usage {
    /// (customer's external id, period end) → API calls.
    pub calls: BTreeMap<(String, DateTime<Utc>), u64>,
    /// External id → the unit price Orb charges (the catalog's unless set).
    pub orb_unit_price: BTreeMap<String, String>,
}

/// The fake Orb: `GET /v1/invoices` answers the invoice of each period that
/// has usage, dated at the period's end.
#[derive(Debug, Clone, Default)]
pub struct PricingOrb(pub Arc<Mutex<Usage>>);

impl PricingOrb {
    fn invoice(&self, external_id: &str, end: DateTime<Utc>, calls: u64, unit: &str) -> Value {
        let start = month_start(end, -1);
        let usage = Decimal::from(calls) * dec(unit);
        let usage = usage.round_dp(2);
        let subtotal = dec(BASE_FEE) + usage;
        let minimum = (dec(MINIMUM) - subtotal).max(Decimal::ZERO);
        let total = subtotal + minimum;
        let mut invoice = fixture("invoice");
        invoice["id"] = json!(format!("orb_inv_{external_id}_{}", end.format("%Y%m")));
        invoice["invoice_number"] = json!(format!("{external_id}-{}", end.format("%Y%m")));
        invoice["invoice_date"] = json!(end.to_rfc3339());
        invoice["customer"]["external_customer_id"] = json!(external_id);
        invoice["customer"]["id"] = json!(format!("orb_{external_id}"));
        invoice["subtotal"] = json!(subtotal.to_string());
        invoice["total"] = json!(total.to_string());
        invoice["amount_due"] = json!(total.to_string());
        let template = invoice["line_items"][0].clone();
        let mut base = template.clone();
        base["id"] = json!("li_base");
        base["name"] = json!("Base fee");
        base["price"]["id"] = json!(PRICE_BASE);
        base["quantity"] = json!(1);
        base["subtotal"] = json!(BASE_FEE);
        base["adjusted_subtotal"] = json!(BASE_FEE);
        base["amount"] = json!(BASE_FEE);
        base["adjustments"] = json!([]);
        let mut calls_line = template.clone();
        calls_line["price"]["id"] = json!(PRICE_CALLS);
        calls_line["quantity"] = json!(calls);
        calls_line["subtotal"] = json!(usage.to_string());
        calls_line["adjusted_subtotal"] = json!((usage + minimum).to_string());
        calls_line["amount"] = json!((usage + minimum).to_string());
        let mut adjustments = Vec::new();
        if minimum > Decimal::ZERO {
            let mut adjustment = template["adjustments"][0].clone();
            adjustment["id"] = json!("adj_minimum");
            adjustment["adjustment_type"] = json!("minimum");
            adjustment["amount"] = json!(minimum.to_string());
            adjustment["minimum_amount"] = json!(MINIMUM);
            adjustment["item_id"] = json!("item_api_calls");
            adjustment
                .as_object_mut()
                .unwrap()
                .remove("percentage_discount");
            adjustments.push(adjustment);
        }
        calls_line["adjustments"] = json!(adjustments);
        for line in [&mut base, &mut calls_line] {
            line["start_date"] = json!(start.to_rfc3339());
            line["end_date"] = json!(end.to_rfc3339());
        }
        invoice["line_items"] = json!([base, calls_line]);
        invoice
    }
}

impl Respond for PricingOrb {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        let customer = query
            .get("external_customer_id")
            .cloned()
            .unwrap_or_default();
        let from: DateTime<Utc> = query["invoice_date[gte]"].parse().unwrap();
        let to: DateTime<Utc> = query["invoice_date[lt]"].parse().unwrap();
        let usage = self.0.lock().unwrap();
        let unit = usage
            .orb_unit_price
            .get(&customer)
            .cloned()
            .unwrap_or_else(|| UNIT_PRICE.to_owned());
        let data: Vec<Value> = usage
            .calls
            .iter()
            .filter(|((who, end), _)| *who == customer && from <= *end && *end < to)
            .map(|((who, end), calls)| self.invoice(who, *end, *calls, &unit))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "data": data,
            "pagination_metadata": {"has_more": false, "next_cursor": null},
        }))
    }
}

pub async fn pricing_orb() -> (MockServer, PricingOrb) {
    let server = MockServer::start().await;
    let fake = PricingOrb::default();
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    (server, fake)
}

/// Tally's invoicing, faked: monthly periods for subscribed customers,
/// shadow invoices priced from the same usage, billing modes recorded.
#[derive(Debug, Default)]
pub struct TallyState {
    /// Customers with a subscription billing (cus_… → external id).
    pub subscribed: BTreeMap<String, String>,
    /// The modes set, in order.
    pub modes: Vec<BillingModeChange>,
    /// Refuse `set_billing_mode` (invoicing down).
    pub down: bool,
}

#[derive(Debug, Clone)]
pub struct FakeTally {
    pub state: Arc<Mutex<TallyState>>,
    pub usage: Arc<Mutex<Usage>>,
}

#[async_trait]
impl TallyBilling for FakeTally {
    async fn current_period(
        &self,
        customer_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BillingPeriod>, TallyUnavailable> {
        let subscribed = self
            .state
            .lock()
            .unwrap()
            .subscribed
            .contains_key(customer_id);
        Ok(subscribed.then(|| BillingPeriod {
            start: month_start(at, 0),
            end: month_start(at, 1),
        }))
    }

    async fn invoice_ending_at(
        &self,
        customer_id: &str,
        end: DateTime<Utc>,
    ) -> Result<Option<TallyInvoice>, TallyUnavailable> {
        let external = self
            .state
            .lock()
            .unwrap()
            .subscribed
            .get(customer_id)
            .cloned();
        let Some(external) = external else {
            return Ok(None);
        };
        let usage = self.usage.lock().unwrap();
        let Some(calls) = usage.calls.get(&(external, end)) else {
            return Ok(None);
        };
        let usage_amount = (Decimal::from(*calls) * dec(UNIT_PRICE)).round_dp(2);
        let subtotal = dec(BASE_FEE) + usage_amount;
        let minimum = (dec(MINIMUM) - subtotal).max(Decimal::ZERO);
        Ok(Some(TallyInvoice {
            id: format!("inv_{customer_id}_{}", end.format("%Y%m")),
            status: "draft".to_owned(),
            currency: "USD".to_owned(),
            period_start: month_start(end, -1),
            period_end: end,
            subtotal,
            discounts: Decimal::ZERO,
            minimums: minimum,
            total: subtotal + minimum,
            amount_due: subtotal + minimum,
            lines: vec![
                TallyInvoiceLine {
                    charge_key: "base".to_owned(),
                    description: "Base fee".to_owned(),
                    amount: dec(BASE_FEE),
                },
                TallyInvoiceLine {
                    charge_key: "api_calls".to_owned(),
                    description: "API calls".to_owned(),
                    amount: usage_amount,
                },
            ],
        }))
    }

    async fn set_billing_mode(&self, change: &BillingModeChange) -> Result<(), TallyUnavailable> {
        let mut state = self.state.lock().unwrap();
        if state.down {
            return Err(TallyUnavailable("connection refused".to_owned()));
        }
        state.modes.push(change.clone());
        Ok(())
    }
}
