//! Wiremock responders for the calls payments makes.

use serde_json::Value;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fixtures;
use crate::support::{CHARGE, PAYMENT_INTENT, STRIPE_CUSTOMER, STRIPE_INVOICE};

fn json(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("Request-Id", "req_1Mock")
        .set_body_json(body)
}

/// Customer creation and invoice items.
pub async fn customer_and_items(server: &MockServer, currency: &str) {
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(json(200, fixtures::customer(STRIPE_CUSTOMER, "cus_000100")))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .respond_with(json(200, fixtures::invoice_item("ii_1Line", 100, currency)))
        .mount(server)
        .await;
}

/// Invoice creation (draft) and finalization (open, `amount_due` minor units).
pub async fn invoice(server: &MockServer, tally_invoice: &str, currency: &str, amount_due: i64) {
    Mock::given(method("POST"))
        .and(path("/v1/invoices"))
        .respond_with(json(
            200,
            fixtures::invoice(
                STRIPE_INVOICE,
                tally_invoice,
                "draft",
                currency,
                0,
                0,
                0,
                None,
                None,
            ),
        ))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/finalize")))
        .respond_with(json(
            200,
            fixtures::invoice(
                STRIPE_INVOICE,
                tally_invoice,
                "open",
                currency,
                amount_due,
                0,
                0,
                Some(PAYMENT_INTENT),
                None,
            ),
        ))
        .mount(server)
        .await;
}

/// `/pay` succeeds.
pub async fn pay_succeeds(server: &MockServer, tally_invoice: &str, currency: &str, amount: i64) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/pay")))
        .respond_with(json(200, paid_invoice(tally_invoice, currency, amount, 1)))
        .mount(server)
        .await;
}

/// `/pay` is declined.
pub async fn pay_declined(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/pay")))
        .respond_with(json(
            402,
            fixtures::card_declined(PAYMENT_INTENT, "ch_1Declined"),
        ))
        .mount(server)
        .await;
}

/// `/send` succeeds.
pub async fn send_succeeds(server: &MockServer, tally_invoice: &str, amount: i64) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/send")))
        .respond_with(json(
            200,
            fixtures::invoice(
                STRIPE_INVOICE,
                tally_invoice,
                "open",
                "usd",
                amount,
                0,
                0,
                None,
                None,
            ),
        ))
        .mount(server)
        .await;
}

/// `/pay` is declined once, then answers as mounted otherwise.
pub async fn pay_declined_once(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/pay")))
        .respond_with(json(
            402,
            fixtures::card_declined(PAYMENT_INTENT, "ch_1Declined"),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
}

/// `/void` succeeds.
pub async fn void_succeeds(server: &MockServer, tally_invoice: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}/void")))
        .respond_with(json(
            200,
            fixtures::invoice(
                STRIPE_INVOICE,
                tally_invoice,
                "void",
                "usd",
                0,
                0,
                0,
                None,
                None,
            ),
        ))
        .mount(server)
        .await;
}

/// The invoice as paid.
pub fn paid_invoice(tally_invoice: &str, currency: &str, amount: i64, attempts: u32) -> Value {
    fixtures::invoice(
        STRIPE_INVOICE,
        tally_invoice,
        "paid",
        currency,
        amount,
        amount,
        attempts,
        Some(PAYMENT_INTENT),
        Some(CHARGE),
    )
}

/// Everything for a charge-automatically invoice paid at the first attempt.
pub async fn happy_path(server: &MockServer, tally_invoice: &str, currency: &str, amount: i64) {
    customer_and_items(server, currency).await;
    invoice(server, tally_invoice, currency, amount).await;
    pay_succeeds(server, tally_invoice, currency, amount).await;
}

/// `GET /v1/invoices/in_…` answers `body`.
pub async fn current_invoice(server: &MockServer, body: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{STRIPE_INVOICE}")))
        .respond_with(json(200, body))
        .mount(server)
        .await;
}

/// `GET /v1/payment_intents/pi_…` answers `body`, and the invoice payment
/// links it to its invoice. `body` may name the invoice as the 2024-06-20
/// shape did (`invoice`); that field is served as the invoice payment, not
/// on the PaymentIntent, as the API version async-stripe uses does.
pub async fn current_payment_intent(server: &MockServer, body: Value) {
    let (body, invoice) = without_invoice(body);
    Mock::given(method("GET"))
        .and(path_regex("^/v1/payment_intents/.+$"))
        .respond_with(json(200, body.clone()))
        .mount(server)
        .await;
    invoice_payment(server, &body, invoice).await;
}

/// `GET /v1/charges/ch_…` answers `body` (its `invoice` served as the
/// invoice payment of its PaymentIntent, as for [`current_payment_intent`]).
pub async fn current_charge(server: &MockServer, body: Value) {
    let (body, invoice) = without_invoice(body);
    Mock::given(method("GET"))
        .and(path(format!("/v1/charges/{CHARGE}")))
        .respond_with(json(200, body.clone()))
        .mount(server)
        .await;
    let intent = serde_json::json!({"id": body["payment_intent"].clone(), "currency": body["currency"].clone(), "amount": body["amount"].clone()});
    invoice_payment(server, &intent, invoice).await;
}

fn without_invoice(mut body: Value) -> (Value, Option<String>) {
    let invoice = body
        .as_object_mut()
        .and_then(|object| object.remove("invoice"))
        .and_then(|invoice| invoice.as_str().map(str::to_owned));
    (body, invoice)
}

/// `GET /v1/invoice_payments?payment[payment_intent]=…` lists the payment of
/// `invoice` by the PaymentIntent `intent` (none without an invoice).
async fn invoice_payment(server: &MockServer, intent: &Value, invoice: Option<String>) {
    let Some(intent_id) = intent["id"].as_str() else {
        return;
    };
    let data = match invoice {
        Some(invoice) => vec![fixtures::invoice_payment(
            &invoice,
            intent_id,
            intent["amount"].as_i64().unwrap_or(0),
            intent["currency"].as_str().unwrap_or("usd"),
        )],
        None => Vec::new(),
    };
    Mock::given(method("GET"))
        .and(path("/v1/invoice_payments"))
        .and(query_param("payment[payment_intent]", intent_id))
        .respond_with(json(
            200,
            fixtures::list("/v1/invoice_payments", data, false),
        ))
        .mount(server)
        .await;
}

/// Any response, for error cases.
pub fn respond(status: u16, body: Value) -> ResponseTemplate {
    json(status, body)
}
