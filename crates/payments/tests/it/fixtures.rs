//! Stripe objects as Stripe's API reference shows them for API version
//! 2026-09-30.endive (the one async-stripe 1.0.0-rc.10 speaks and parses
//! strictly), trimmed to realistic sizes but with every field its types
//! require and others payments ignores. An invoice carries its payments
//! (with the PaymentIntent expanded), not `charge` / `payment_intent`.
//! `payment_intent` and `charge` still take the invoice they belong to: the
//! mocks serve it as the invoice payment (`/v1/invoice_payments`) and strip
//! it from the object.

use serde_json::{Value, json};

/// Seconds since the epoch of the fixtures' objects.
pub const CREATED: i64 = 1_795_000_000;

pub fn customer(id: &str, tally_customer: &str) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": {"city": "Berlin", "country": "DE", "line1": "Unter den Linden 1", "line2": null, "postal_code": "10117", "state": null},
        "balance": 0,
        "created": CREATED,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": "billing@acme.test",
        "invoice_prefix": "7D3E2A1B",
        "invoice_settings": {"custom_fields": null, "default_payment_method": "pm_1QxCardVisa", "footer": null, "rendering_options": null},
        "livemode": false,
        "metadata": {"tally_customer_id": tally_customer},
        "name": "Acme GmbH",
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

#[allow(clippy::too_many_arguments)]
pub fn invoice(
    id: &str,
    tally_invoice: &str,
    status: &str,
    currency: &str,
    amount_due: i64,
    amount_paid: i64,
    attempt_count: u32,
    payment_intent: Option<&str>,
    charge: Option<&str>,
) -> Value {
    let paid = status == "paid";
    let payments = match payment_intent {
        Some(intent) => {
            let intent_status = if paid {
                "succeeded"
            } else {
                "requires_payment_method"
            };
            let mut intent = self::payment_intent(intent, intent_status, id, charge, None);
            intent["amount"] = json!(amount_due);
            intent["amount_received"] = json!(amount_paid);
            intent["currency"] = json!(currency);
            // The 2024-06-20 link back to the invoice is not in this shape.
            intent
                .as_object_mut()
                .map(|object| object.remove("invoice"));
            let mut payment = invoice_payment(id, "", amount_due, currency);
            payment["amount_paid"] = if paid {
                json!(amount_paid)
            } else {
                Value::Null
            };
            payment["payment"]["payment_intent"] = intent;
            payment["status"] = json!(if paid { "paid" } else { "open" });
            payment["status_transitions"]["paid_at"] =
                if paid { json!(CREATED) } else { Value::Null };
            vec![payment]
        }
        None => Vec::new(),
    };
    json!({
        "id": id,
        "object": "invoice",
        "account_country": "DE",
        "account_name": "Tally Test",
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": amount_paid,
        "amount_paid_off_stripe": 0,
        "amount_remaining": amount_due - amount_paid,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": false,
        "automatic_tax": {"enabled": false, "liability": null, "status": null},
        "billing_reason": "manual",
        "collection_method": "charge_automatically",
        "created": CREATED,
        "currency": currency,
        "customer": "cus_Q1stripeAcme",
        "customer_email": "billing@acme.test",
        "customer_name": "Acme GmbH",
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": if status == "draft" { Value::Null } else { json!(CREATED) },
        "ending_balance": if status == "draft" { Value::Null } else { json!(0) },
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_1Test/test_{id}"),
        "invoice_pdf": format!("https://pay.stripe.com/invoice/acct_1Test/test_{id}/pdf"),
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": {"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/invoices/{id}/lines")},
        "livemode": false,
        "metadata": {"tally_invoice_id": tally_invoice},
        "number": if status == "draft" { Value::Null } else { json!("7D3E2A1B-0001") },
        "on_behalf_of": null,
        "parent": null,
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "payments": list("/v1/invoice_payments", payments, false),
        "period_end": CREATED,
        "period_start": CREATED,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": status,
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
        "subscription": null,
        "subtotal": amount_due,
        "subtotal_excluding_tax": amount_due,
        "test_clock": null,
        "total": amount_due,
        "total_discount_amounts": [],
        "total_excluding_tax": amount_due,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": CREATED
    })
}

pub fn invoice_item(id: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": id,
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": "cus_Q1stripeAcme",
        "date": CREATED,
        "description": "line",
        "discountable": true,
        "invoice": "in_1Acme",
        "livemode": false,
        "metadata": {},
        "period": {"end": CREATED, "start": CREATED},
        "proration": false,
        "parent": null,
        "pricing": {"price_details": null, "type": "price_details", "unit_amount_decimal": amount.to_string()},
        "quantity": 1,
        "quantity_decimal": "1",
        "tax_rates": [],
        "test_clock": null
    })
}

/// The payment of `invoice` by the PaymentIntent `intent` (an
/// `invoice_payment`, open).
pub fn invoice_payment(invoice: &str, intent: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": format!("inpay_{invoice}"),
        "object": "invoice_payment",
        "amount_paid": null,
        "amount_requested": amount,
        "created": CREATED,
        "currency": currency,
        "invoice": invoice,
        "is_default": true,
        "livemode": false,
        "payment": {"type": "payment_intent", "payment_intent": intent},
        "status": "open",
        "status_transitions": {"canceled_at": null, "paid_at": null}
    })
}

/// Stripe's answer to `/pay` when the card is declined (HTTP 402).
pub fn card_declined(payment_intent: &str, charge: &str) -> Value {
    json!({
        "error": {
            "charge": charge,
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card has insufficient funds.",
            "payment_intent": self::payment_intent(
                payment_intent,
                "requires_payment_method",
                "in_1Acme",
                Some(charge),
                Some(("insufficient_funds", "Your card has insufficient funds.")),
            ),
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_1Declined",
            "type": "card_error"
        }
    })
}

pub fn invalid_request(message: &str, param: &str) -> Value {
    json!({
        "error": {
            "code": "parameter_invalid_empty",
            "doc_url": "https://stripe.com/docs/error-codes/parameter-invalid-empty",
            "message": message,
            "param": param,
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_1Invalid",
            "type": "invalid_request_error"
        }
    })
}

pub fn payment_intent(
    id: &str,
    status: &str,
    invoice: &str,
    charge: Option<&str>,
    failure: Option<(&str, &str)>,
) -> Value {
    let last_payment_error = failure.map(|(decline_code, message)| {
        json!({
            "charge": charge,
            "code": "card_declined",
            "decline_code": decline_code,
            "message": message,
            "payment_method": {
                "id": "pm_1QxCardVisa",
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {"address": null, "email": null, "name": "Jenny Rosen", "phone": null, "tax_id": null},
                "card": {"brand": "visa", "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"}, "country": "US", "display_brand": "visa", "exp_month": 12, "exp_year": 2034, "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit", "last4": "4242", "networks": {"available": ["visa"], "preferred": null}, "wallet": null},
                "created": CREATED,
                "customer": "cus_Q1stripeAcme",
                "livemode": false,
                "metadata": {},
                "type": "card"
            },
            "type": "card_error"
        })
    });
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": 5000,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": if status == "succeeded" { 5000 } else { 0 },
        "capture_method": "automatic",
        "client_secret": format!("{id}_secret_Zk3vS9fakeClientSecret"),
        "confirmation_method": "automatic",
        "created": CREATED,
        "currency": "usd",
        "customer": "cus_Q1stripeAcme",
        "invoice": invoice,
        "last_payment_error": last_payment_error,
        "latest_charge": charge,
        "livemode": false,
        "metadata": {},
        "payment_method": "pm_1QxCardVisa",
        "payment_method_types": ["card"],
        "status": status
    })
}

pub fn refund(
    id: &str,
    amount: i64,
    status: &str,
    charge: &str,
    tally_refund: Option<&str>,
) -> Value {
    let metadata = match tally_refund {
        Some(refund) => json!({"tally_refund_id": refund}),
        None => json!({}),
    };
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": format!("txn_{id}"),
        "charge": charge,
        "created": CREATED,
        "currency": "usd",
        "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"}, "type": "card"},
        "metadata": metadata,
        "payment_intent": "pi_1Acme",
        "reason": "requested_by_customer",
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": status,
        "transfer_reversal": null
    })
}

pub fn charge(
    id: &str,
    amount: i64,
    amount_refunded: i64,
    invoice: &str,
    refunds: Vec<Value>,
) -> Value {
    let count = refunds.len();
    json!({
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": "txn_1Charge",
        "billing_details": {"address": {"city": null, "country": "DE", "line1": null, "line2": null, "postal_code": "10117", "state": null}, "email": null, "name": "Jenny Rosen", "phone": null},
        "captured": true,
        "created": CREATED,
        "currency": "usd",
        "customer": "cus_Q1stripeAcme",
        "disputed": false,
        "failure_code": null,
        "failure_message": null,
        "invoice": invoice,
        "livemode": false,
        "metadata": {},
        "outcome": {"network_status": "approved_by_network", "reason": null, "risk_level": "normal", "risk_score": 32, "seller_message": "Payment complete.", "type": "authorized"},
        "paid": true,
        "payment_intent": "pi_1Acme",
        "payment_method": "pm_1QxCardVisa",
        "payment_method_details": {"card": {"brand": "visa", "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"}, "country": "US", "exp_month": 12, "exp_year": 2034, "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit", "last4": "4242", "network": "visa"}, "type": "card"},
        "receipt_url": "https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8xTest",
        "refunded": amount_refunded == amount,
        "refunds": {"object": "list", "data": refunds, "has_more": false, "total_count": count, "url": format!("/v1/charges/{id}/refunds")},
        "status": "succeeded"
    })
}

pub fn dispute(id: &str, charge: &str, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": CREATED,
        "currency": "usd",
        "evidence_details": {"due_by": CREATED + 864_000, "has_evidence": false, "past_due": false, "submission_count": 0},
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "payment_intent": "pi_1Acme",
        "reason": "fraudulent",
        "status": "needs_response"
    })
}

/// A webhook event envelope.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": created,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind
    })
}

pub fn balance_transaction(id: &str, kind: &str, source: Option<&str>, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": CREATED + 172_800,
        "balance_type": "payments",
        "created": CREATED,
        "currency": "usd",
        "description": null,
        "exchange_rate": null,
        "fee": if kind == "charge" { 175 } else { 0 },
        "fee_details": [],
        "net": amount,
        "reporting_category": kind,
        "source": source,
        "status": "pending",
        "type": kind
    })
}

/// A list page as Stripe returns it.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

/// A credit note as `POST /v1/credit_notes` returns it: `pre_payment` for an
/// open invoice (lowers `amount_due`), `post_payment` with
/// `out_of_band_amount` for a paid one.
pub fn credit_note(
    id: &str,
    invoice: &str,
    amount: i64,
    out_of_band: bool,
    tally_note: &str,
) -> Value {
    let (pre, post) = if out_of_band {
        (0, amount)
    } else {
        (amount, 0)
    };
    json!({
        "id": id,
        "object": "credit_note",
        "amount": amount,
        "amount_shipping": 0,
        "created": CREATED,
        "currency": "usd",
        "customer": "cus_Q1stripeAcme",
        "customer_balance_transaction": null,
        "discount_amount": 0,
        "discount_amounts": [],
        "effective_at": CREATED,
        "invoice": invoice,
        "lines": {
            "object": "list",
            "data": [{
                "id": format!("cnli_{id}"),
                "object": "credit_note_line_item",
                "amount": amount,
                "description": "Credit",
                "discount_amount": 0,
                "discount_amounts": [],
                "invoice_line_item": null,
                "livemode": false,
                "metadata": {},
                "pretax_credit_amounts": [],
                "quantity": 1,
                "tax_rates": [],
                "type": "custom_line_item",
                "unit_amount": amount,
                "unit_amount_decimal": amount.to_string()
            }],
            "has_more": false,
            "url": format!("/v1/credit_notes/{id}/lines")
        },
        "livemode": false,
        "memo": null,
        "metadata": {"tally_credit_note_id": tally_note},
        "number": "7D3E2A1B-0001-CN-01",
        "out_of_band_amount": if out_of_band { json!(amount) } else { Value::Null },
        "pdf": format!("https://pay.stripe.com/credit_notes/acct_1Test/test_{id}/pdf"),
        "post_payment_amount": post,
        "pre_payment_amount": pre,
        "pretax_credit_amounts": [],
        "reason": "order_change",
        "refunds": [],
        "shipping_cost": null,
        "status": "issued",
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "total": amount,
        "total_excluding_tax": amount,
        "total_taxes": [],
        "type": if out_of_band { "post_payment" } else { "pre_payment" },
        "voided_at": null
    })
}
