//! Stripe objects as Stripe's API reference shows them for API version
//! `2026-09-30.endive` — the one async-stripe 1.0.0-rc.10 sends and parses
//! strictly, so the one payments speaks — complete: every field of that
//! version's object (as async-stripe's generated types list them), plus
//! `object`. In that version an invoice has no `charge`, `payment_intent`,
//! `paid`, `tax`, … (its payments are `invoice_payment` objects, served
//! only when expanded), a charge or PaymentIntent no `invoice`, a charge its
//! `refunds` only when expanded, and line items no `type` / `invoice_item` /
//! `proration`. Plain `serde_json`; `stripe::tests` parses every answer of
//! the fake with async-stripe's own types (`miniserde`, as its client does).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A webhook event as Stripe posts it.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "account": null,
        "api_version": "2026-09-30.endive",
        "context": null,
        "created": created,
        "data": {"object": object, "previous_attributes": {"status": "open"}},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind
    })
}

pub fn customer(id: &str, form: &BTreeMap<String, String>, created: i64) -> Value {
    let text = |key: &str| form.get(key).map_or(Value::Null, |value| json!(value));
    let has_address = form.keys().any(|key| key.starts_with("address["));
    let address = if has_address {
        json!({
            "city": text("address[city]"),
            "country": text("address[country]"),
            "line1": text("address[line1]"),
            "line2": text("address[line2]"),
            "postal_code": text("address[postal_code]"),
            "state": text("address[state]")
        })
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "customer",
        "address": address,
        "balance": 0,
        "business_name": null,
        "cash_balance": null,
        "created": created,
        "currency": "usd",
        "customer_account": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": text("email"),
        "individual_name": null,
        "invoice_credit_balance": {},
        "invoice_prefix": id.trim_start_matches("cus_1").to_uppercase().chars().take(8).collect::<String>(),
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": "pm_1E2eCardVisa",
            "footer": null,
            "rendering_options": null
        },
        "livemode": false,
        "metadata": metadata_of(form),
        "name": text("name"),
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "sources": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/customers/{id}/sources")},
        "subscriptions": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/customers/{id}/subscriptions")},
        "tax": {"automatic_tax": "unrecognized_location", "ip_address": null, "location": null, "provider": "stripe"},
        "tax_exempt": "none",
        "tax_ids": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/customers/{id}/tax_ids")},
        "test_clock": null
    })
}

pub fn metadata_of(form: &BTreeMap<String, String>) -> Value {
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix("metadata[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(|name| (name.to_owned(), json!(value)))
        })
        .collect();
    Value::Object(metadata)
}

pub struct InvoiceParts<'a> {
    pub id: &'a str,
    pub customer: &'a Value,
    pub currency: &'a str,
    pub collection_method: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    pub created: i64,
}

pub fn invoice(parts: InvoiceParts<'_>) -> Value {
    let InvoiceParts {
        id,
        customer,
        currency,
        collection_method,
        metadata,
        created,
    } = parts;
    // Three literals: one would exceed `json!`'s default recursion limit.
    let mut invoice = json!({
        "id": id,
        "object": "invoice",
        "account_country": "DE",
        "account_name": "Tally E2E",
        "account_tax_ids": null,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": false,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "automatically_finalizes_at": null,
        "billing_reason": "manual",
        "collection_method": collection_method,
        "confirmation_secret": null,
        "created": created,
        "currency": currency,
        "custom_fields": null,
        "customer": customer["id"],
        "customer_account": null,
        "customer_address": customer["address"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": null,
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
    });
    let middle = json!({
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": null,
        "ending_balance": null,
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "latest_revision": null
    });
    let rest = json!({
        "lines": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/invoices/{id}/lines")},
        "livemode": false,
        "metadata": metadata,
        "next_payment_attempt": null,
        "number": null,
        "on_behalf_of": null,
        "parent": null,
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": created,
        "period_start": created,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": "draft",
        "status_details": null,
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
        "subscription": null,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": null,
        "threshold_reason": null,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": null
    });
    if let Some(fields) = invoice.as_object_mut() {
        for part in [middle, rest] {
            if let Value::Object(part) = part {
                fields.extend(part);
            }
        }
    }
    invoice
}

pub fn invoice_item(
    id: &str,
    invoice_id: &str,
    amount: i64,
    form: &BTreeMap<String, String>,
    now: i64,
) -> Value {
    json!({
        "id": id,
        "object": "invoiceitem",
        "amount": amount,
        "currency": form.get("currency").map_or("usd", String::as_str),
        "customer": form.get("customer"),
        "customer_account": null,
        "date": now,
        "description": form.get("description"),
        "discountable": true,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": false,
        "metadata": metadata_of(form),
        "net_amount": amount,
        "parent": null,
        "period": {"end": now, "start": now},
        "pricing": null,
        "proration": false,
        "proration_details": {"credited_items": null, "discount_amounts": []},
        "quantity": 1,
        "quantity_decimal": "1",
        "tax_rates": [],
        "test_clock": null
    })
}

/// An invoice item as a line of the invoice it belongs to.
pub fn line_of(item: &Value, invoice_id: &str) -> Value {
    let id = item["id"].as_str().unwrap_or_default();
    json!({
        "id": format!("il_{}", id.trim_start_matches("ii_")),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": false,
        "metadata": item["metadata"],
        "parent": {
            "invoice_item_details": {"invoice_item": id, "proration": false, "proration_details": {"credited_items": null}, "subscription": null},
            "subscription_item_details": null,
            "type": "invoice_item_details"
        },
        "period": item["period"],
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": 1,
        "quantity_decimal": "1",
        "subscription": null,
        "subtotal": item["amount"],
        "taxes": []
    })
}

pub struct Ids<'a> {
    pub payment_intent: &'a str,
    pub charge: &'a str,
    pub customer: &'a str,
}

/// The PaymentIntent Stripe creates when it finalizes an invoice: nothing
/// tried yet, waiting for a payment method. It does not name its invoice
/// (the invoice payment links them).
pub fn payment_intent(id: &str, customer: &str, amount: i64, currency: &str, now: i64) -> Value {
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": null,
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": format!("{id}_secret_E2eClientSecret"),
        "confirmation_method": "automatic",
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_account": null,
        "description": "Payment for Invoice",
        "excluded_payment_method_types": null,
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": false,
        "metadata": {},
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": "pm_1E2eCardVisa",
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"installments": null, "mandate_options": null, "network": null, "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": "requires_payment_method",
        "transfer_data": null,
        "transfer_group": null
    })
}

/// The invoice payment Stripe creates with the invoice's PaymentIntent at
/// finalization (the default one, kept in step with `amount_remaining`).
pub fn invoice_payment(
    id: &str,
    invoice: &Value,
    payment_intent: &str,
    amount: i64,
    now: i64,
) -> Value {
    json!({
        "id": id,
        "object": "invoice_payment",
        "amount_paid": null,
        "amount_requested": amount,
        "created": now,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": true,
        "livemode": false,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status": "open",
        "status_transitions": {"canceled_at": null, "paid_at": null}
    })
}

pub fn charge(ids: &Ids<'_>, amount: i64, currency: &str, now: i64) -> Value {
    json!({
        "id": ids.charge,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": format!("txn_{}", ids.charge.trim_start_matches("ch_")),
        "billing_details": {"address": {"city": null, "country": "DE", "line1": null, "line2": null, "postal_code": null, "state": null}, "email": null, "name": null, "phone": null, "tax_id": null},
        "calculated_statement_descriptor": "TALLY E2E",
        "captured": true,
        "created": now,
        "currency": currency,
        "customer": ids.customer,
        "description": "Payment for Invoice",
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": null,
        "failure_message": null,
        "fraud_details": {},
        "livemode": false,
        "metadata": {},
        "on_behalf_of": null,
        "outcome": {"advice_code": null, "network_advice_code": null, "network_decline_code": null, "network_status": "approved_by_network", "reason": null, "risk_level": "normal", "risk_score": 21, "seller_message": "Payment complete.", "type": "authorized"},
        "paid": true,
        "payment_intent": ids.payment_intent,
        "payment_method": "pm_1E2eCardVisa",
        "payment_method_details": {"card": {"amount_authorized": amount, "brand": "visa", "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"}, "country": "US", "exp_month": 12, "exp_year": 2034, "fingerprint": "E2eFingerprint01", "funding": "credit", "last4": "4242", "network": "visa", "three_d_secure": null, "wallet": null}, "type": "card"},
        "receipt_email": null,
        "receipt_number": null,
        "receipt_url": format!("https://pay.stripe.com/receipts/payment/{}", ids.charge),
        "refunded": false,
        "refunds": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/charges/{}/refunds", ids.charge)},
        "review": null,
        "shipping": null,
        "source_transfer": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": "succeeded",
        "transfer_data": null,
        "transfer_group": null
    })
}

pub fn refund(
    id: &str,
    charge: &Value,
    amount: i64,
    form: &BTreeMap<String, String>,
    now: i64,
) -> Value {
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": format!("txn_{}", id.trim_start_matches("re_")),
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "description": null,
        "destination_details": {"card": {"reference": null, "reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"}, "type": "card"},
        "failure_balance_transaction": null,
        "failure_reason": null,
        "instructions_email": null,
        "metadata": metadata_of(form),
        "next_action": null,
        "payment_intent": charge["payment_intent"],
        "pending_reason": null,
        "reason": form.get("reason"),
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": "succeeded",
        "transfer_reversal": null
    })
}

/// The balance transaction of a charge (`kind` "charge", the gross amount,
/// Stripe's card fee of 2.9 % + 30 cents rounded half up) or of a refund
/// ("refund", negative, no fee).
pub fn balance_transaction(id: &str, source: &Value, kind: &str, amount: i64) -> Value {
    let created = source["created"].as_i64().unwrap_or_default();
    let fee = if kind == "charge" {
        (amount * 29 + 500) / 1000 + 30
    } else {
        0
    };
    let fee_details = if fee == 0 {
        json!([])
    } else {
        json!([{"amount": fee, "application": null, "currency": source["currency"], "description": "Stripe processing fees", "type": "stripe_fee"}])
    };
    json!({
        "id": id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created + 2 * 86_400,
        "balance_type": "payments",
        "created": created,
        "currency": source["currency"],
        "description": if kind == "charge" { json!("Payment for Invoice") } else { json!("REFUND FOR CHARGE (Payment for Invoice)") },
        "exchange_rate": null,
        "fee": fee,
        "fee_details": fee_details,
        "net": amount - fee,
        "reporting_category": kind,
        "source": source["id"],
        "status": "pending",
        "type": kind
    })
}

pub struct CreditNoteParts<'a> {
    pub id: &'a str,
    pub line_id: &'a str,
    pub invoice: &'a Value,
    pub amount: i64,
    /// `out_of_band_amount`, when sent.
    pub out_of_band: Option<i64>,
    /// The refunds it links, `[{"amount_refunded", "refund", "type"}]`.
    pub refunds: Vec<Value>,
    /// The invoice's how-manyth credit note.
    pub sequence: usize,
    pub form: &'a BTreeMap<String, String>,
    pub created: i64,
}

/// A credit note of one custom line: `pre_payment` on an open invoice
/// (lowers what it asks for), `post_payment` on a paid one (refunds it links
/// and an out-of-band part).
pub fn credit_note(parts: CreditNoteParts<'_>) -> Value {
    let CreditNoteParts {
        id,
        line_id,
        invoice,
        amount,
        out_of_band,
        refunds,
        sequence,
        form,
        created,
    } = parts;
    let paid = invoice["status"] == "paid";
    let memo = form.get("memo");
    let number = format!(
        "{}-CN-{sequence:02}",
        invoice["number"].as_str().unwrap_or("DRAFT")
    );
    let line = json!({
        "id": line_id,
        "object": "credit_note_line_item",
        "amount": amount,
        "description": memo.map_or("Credit", String::as_str),
        "discount_amount": 0,
        "discount_amounts": [],
        "invoice_line_item": null,
        "livemode": false,
        "metadata": {},
        "pretax_credit_amounts": [],
        "quantity": 1,
        "tax_rates": [],
        "taxes": [],
        "type": "custom_line_item",
        "unit_amount": amount,
        "unit_amount_decimal": amount.to_string()
    });
    json!({
        "id": id,
        "object": "credit_note",
        "amount": amount,
        "amount_shipping": 0,
        "created": created,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "customer_account": null,
        "customer_balance_transaction": null,
        "discount_amount": 0,
        "discount_amounts": [],
        "effective_at": created,
        "invoice": invoice["id"],
        "lines": {"object": "list", "data": [line], "has_more": false, "total_count": 1, "url": format!("/v1/credit_notes/{id}/lines")},
        "livemode": false,
        "memo": memo,
        "metadata": metadata_of(form),
        "number": number,
        "out_of_band_amount": out_of_band,
        "pdf": format!("https://pay.stripe.com/credit_notes/acct_1E2eTally/test_{id}/pdf"),
        "post_payment_amount": if paid { amount } else { 0 },
        "pre_payment_amount": if paid { 0 } else { amount },
        "pretax_credit_amounts": [],
        "reason": form.get("reason"),
        "refunds": refunds,
        "shipping_cost": null,
        "status": "issued",
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "total": amount,
        "total_excluding_tax": amount,
        "total_taxes": [],
        "type": if paid { "post_payment" } else { "pre_payment" },
        "voided_at": null
    })
}

/// The PaymentIntent after a declined attempt with charge `ids.charge`:
/// waiting for another payment method, the decline in `last_payment_error`.
pub fn decline_payment_intent(intent: &mut Value, ids: &Ids<'_>, now: i64) {
    intent["status"] = json!("requires_payment_method");
    intent["amount_received"] = json!(0);
    intent["latest_charge"] = json!(ids.charge);
    intent["last_payment_error"] = json!({
        "advice_code": "try_again_later",
        "charge": ids.charge,
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card has insufficient funds.",
        "network_decline_code": "51",
        "payment_method": {
            "id": "pm_1E2eCardVisa", "object": "payment_method", "allow_redisplay": "unspecified",
            "billing_details": {"address": {"city": null, "country": "DE", "line1": null, "line2": null, "postal_code": null, "state": null}, "email": null, "name": null, "phone": null, "tax_id": null},
            "card": {"brand": "visa", "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"}, "country": "US", "display_brand": "visa", "exp_month": 12, "exp_year": 2034, "fingerprint": "E2eFingerprint01", "funding": "credit", "generated_from": null, "last4": "0341", "networks": {"available": ["visa"], "preferred": null}, "regulated_status": "unregulated", "three_d_secure_usage": {"supported": true}, "wallet": null},
            "created": now, "customer": ids.customer, "livemode": false, "metadata": {}, "type": "card"
        },
        "type": "card_error"
    });
}

/// A failed charge: nothing captured, no balance transaction.
pub fn declined_charge(ids: &Ids<'_>, amount: i64, currency: &str, now: i64) -> Value {
    let mut charge = charge(ids, amount, currency, now);
    for (field, value) in [
        ("amount_captured", json!(0)),
        ("balance_transaction", Value::Null),
        ("captured", json!(false)),
        ("failure_code", json!("card_declined")),
        (
            "failure_message",
            json!("Your card has insufficient funds."),
        ),
        ("paid", json!(false)),
        ("receipt_url", Value::Null),
        ("status", json!("failed")),
        (
            "outcome",
            json!({"advice_code": "try_again_later", "network_advice_code": null, "network_decline_code": "51", "network_status": "declined_by_network", "reason": "insufficient_funds", "risk_level": "normal", "risk_score": 21, "seller_message": "The bank returned the decline code `insufficient_funds`.", "type": "issuer_declined"}),
        ),
    ] {
        charge[field] = value;
    }
    charge
}

/// Stripe's HTTP 402 answer to a declined `/pay`.
pub fn card_declined(charge: &str, payment_intent: Value) -> Value {
    json!({
        "error": {
            "advice_code": "try_again_later",
            "charge": charge,
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card has insufficient funds.",
            "network_decline_code": "51",
            "payment_intent": payment_intent,
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_1E2eDeclined",
            "type": "card_error"
        }
    })
}
