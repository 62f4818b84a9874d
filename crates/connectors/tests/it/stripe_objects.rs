//! Stripe Billing objects as Stripe's API reference shows them for API
//! version `2026-09-30.endive` (the one async-stripe 1.0.0-rc.10 speaks and
//! parses): customers, prices, subscriptions with their items (each with
//! its price and the legacy `plan`), invoices with their lines. Plain
//! `serde_json`; `stripe_billing::every_fake_body_parses_with_async_stripe`
//! parses each with async-stripe's own types (`miniserde`, as its client does).

use serde_json::{Value, json};

/// A page of a list.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

pub fn customer(id: &str, name: &str, email: &str, currency: Option<&str>, created: i64) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "business_name": null,
        "created": created,
        "currency": currency,
        "customer_account": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": email,
        "individual_name": null,
        "invoice_credit_balance": {},
        "invoice_prefix": id.trim_start_matches("cus_").to_uppercase().chars().take(8).collect::<String>(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false,
        "metadata": {},
        "name": name,
        "next_invoice_sequence": 4,
        "phone": null,
        "preferred_locales": ["en"],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

/// How a price bills: `None` one-time, else interval, count and usage type
/// (`licensed` or `metered`).
pub type Recurring<'a> = Option<(&'a str, u64, &'a str)>;

pub fn price(
    id: &str,
    nickname: &str,
    currency: &str,
    unit_amount_decimal: &str,
    recurring: Recurring<'_>,
) -> Value {
    let whole = unit_amount_decimal.parse::<i64>().ok();
    json!({
        "id": id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 1_780_000_000,
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": {},
        "nickname": nickname,
        "product": format!("prod_{}", id.trim_start_matches("price_")),
        "recurring": recurring.map(|(interval, count, usage)| json!({
            "interval": interval,
            "interval_count": count,
            "meter": if usage == "metered" { json!("mtr_1ApiCalls") } else { Value::Null },
            "trial_period_days": null,
            "usage_type": usage
        })),
        "tax_behavior": "exclusive",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring.is_some() { "recurring" } else { "one_time" },
        "unit_amount": whole,
        "unit_amount_decimal": unit_amount_decimal
    })
}

/// The legacy `plan` Stripe still puts on every subscription item.
fn plan_of(price: &Value) -> Value {
    let recurring = &price["recurring"];
    json!({
        "id": price["id"],
        "object": "plan",
        "active": true,
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": false,
        "metadata": {},
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": recurring["usage_type"]
    })
}

/// A subscription: its items are `(item id, price, quantity)`.
pub struct SubscriptionParts<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub status: &'a str,
    pub currency: &'a str,
    pub start_date: i64,
    pub period: (i64, i64),
    pub trial_end: Option<i64>,
    pub items: Vec<(&'a str, Value, Option<u64>)>,
}

pub fn subscription(parts: SubscriptionParts<'_>) -> Value {
    let (period_start, period_end) = parts.period;
    let items: Vec<Value> = parts
        .items
        .into_iter()
        .map(|(item, price, quantity)| {
            json!({
                "id": item,
                "object": "subscription_item",
                "billing_thresholds": null,
                "created": parts.start_date,
                "current_period_end": period_end,
                "current_period_start": period_start,
                "discounts": [],
                "metadata": {},
                "plan": plan_of(&price),
                "price": price,
                "quantity": quantity,
                "subscription": parts.id,
                "tax_rates": []
            })
        })
        .collect();
    let ended = matches!(parts.status, "canceled" | "incomplete_expired");
    json!({
        "id": parts.id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": period_start,
        "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": null, "type": "classic", "updated_at": null},
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": if ended { json!(period_start) } else { Value::Null },
        "cancellation_details": {"comment": null, "feedback": null, "reason": if ended { json!("cancellation_requested") } else { Value::Null }},
        "collection_method": "charge_automatically",
        "created": parts.start_date,
        "currency": parts.currency,
        "customer": parts.customer,
        "customer_account": null,
        "days_until_due": null,
        "default_payment_method": "pm_1QxCardVisa",
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": if ended { json!(period_start) } else { Value::Null },
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": list(&format!("/v1/subscription_items?subscription={}", parts.id), items, false),
        "latest_invoice": format!("in_1Latest{}", parts.id.trim_start_matches("sub_")),
        "livemode": false,
        "metadata": {"crm_account": "acc-42"},
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": parts.start_date,
        "status": parts.status,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": parts.trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": parts.trial_end.map(|_| parts.start_date)
    })
}

/// Stripe's `discount_amounts` of one 10% loyalty coupon (`[]` for none).
fn discount_amounts(amount: i64) -> Value {
    if amount == 0 {
        json!([])
    } else {
        json!([{"amount": amount, "discount": "di_1Loyalty10"}])
    }
}

/// An invoice line billed for a subscription item's price.
pub struct LineParts<'a> {
    pub id: &'a str,
    pub invoice: &'a str,
    pub price: &'a str,
    pub description: &'a str,
    pub currency: &'a str,
    pub amount: i64,
    pub discount: i64,
    pub quantity: u64,
    pub period: (i64, i64),
}

pub fn line(parts: LineParts<'_>) -> Value {
    let (start, end) = parts.period;
    let discounts = discount_amounts(parts.discount);
    json!({
        "id": parts.id,
        "object": "line_item",
        "amount": parts.amount,
        "currency": parts.currency,
        "description": parts.description,
        "discount_amounts": discounts,
        "discountable": true,
        "discounts": [],
        "invoice": parts.invoice,
        "livemode": false,
        "metadata": {},
        "parent": {
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": false,
                "proration_details": {"credited_items": null},
                "subscription": "sub_1Acme",
                "subscription_item": "si_1AcmeBase"
            },
            "type": "subscription_item_details"
        },
        "period": {"end": end, "start": start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": parts.price, "product": format!("prod_{}", parts.price.trim_start_matches("price_"))},
            "type": "price_details",
            "unit_amount_decimal": format!("{}", parts.amount / i64::try_from(parts.quantity.max(1)).unwrap())
        },
        "quantity": parts.quantity,
        "quantity_decimal": format!("{}", parts.quantity),
        "subtotal": parts.amount,
        "taxes": []
    })
}

/// An invoice: its amounts in minor units and the first page of its lines.
pub struct InvoiceParts<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub status: &'a str,
    pub currency: &'a str,
    pub created: i64,
    pub period: (i64, i64),
    pub subtotal: i64,
    pub discount: i64,
    pub lines: Vec<Value>,
    pub more_lines: bool,
}

pub fn invoice(parts: InvoiceParts<'_>) -> Value {
    let total = parts.subtotal - parts.discount;
    let paid = parts.status == "paid";
    let draft = parts.status == "draft";
    let discounts = discount_amounts(parts.discount);
    json!({
        "id": parts.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Acme Analytics Inc.",
        "account_tax_ids": null,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": if paid { total } else { 0 },
        "amount_remaining": if paid { 0 } else { total },
        "amount_shipping": 0,
        "application": null,
        "attempt_count": if paid { 1 } else { 0 },
        "attempted": paid,
        "auto_advance": !paid,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "automatically_finalizes_at": null,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "confirmation_secret": null,
        "created": parts.created,
        "currency": parts.currency,
        "custom_fields": null,
        "customer": parts.customer,
        "customer_account": null,
        "customer_address": null,
        "customer_email": "ap@acme.test",
        "customer_name": "Acme Analytics",
        "customer_phone": null,
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": if draft { Value::Null } else { json!(parts.created + 3600) },
        "ending_balance": if draft { Value::Null } else { json!(0) },
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_1Acme/test_{}", parts.id),
        "invoice_pdf": format!("https://pay.stripe.com/invoice/acct_1Acme/test_{}/pdf", parts.id),
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": list(&format!("/v1/invoices/{}/lines", parts.id), parts.lines, parts.more_lines),
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": if draft { Value::Null } else { json!(format!("ACME-{}", parts.id.trim_start_matches("in_1"))) },
        "on_behalf_of": null,
        "parent": {
            "quote_details": null,
            "subscription_details": {"metadata": {}, "subscription": "sub_1Acme"},
            "type": "subscription_details"
        },
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": parts.period.1,
        "period_start": parts.period.0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": parts.status,
        "status_transitions": {
            "finalized_at": if draft { Value::Null } else { json!(parts.created + 3600) },
            "marked_uncollectible_at": null,
            "paid_at": if paid { json!(parts.created + 7200) } else { Value::Null },
            "voided_at": null
        },
        "subtotal": parts.subtotal,
        "subtotal_excluding_tax": parts.subtotal,
        "test_clock": null,
        "total": total,
        "total_discount_amounts": discounts,
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": parts.created
    })
}
