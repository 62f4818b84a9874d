//! A stateful Stripe on wiremock: enough of Stripe's API for what payments
//! does (customers, invoices and their items, finalize, pay, send, void,
//! refunds, reads of invoices, charges and PaymentIntents, and the lists
//! reconciliation reads, balance transactions included), answering every
//! call with a complete object as Stripe's API reference shows it.
//!
//! Why stateful: the amounts Stripe answers must follow from what payments
//! sent (a finalized invoice is due the sum of its items), and the webhook
//! flow needs Stripe's *current* state of an invoice paid out of band. Why
//! complete objects: payments' adapter is moving to async-stripe, which
//! parses strictly, so every object carries the fields of API version
//! 2024-06-20 (what payments sends as `Stripe-Version`) plus the ones
//! async-stripe's generated types require (e.g. `issuer`,
//! `amount_overpaid`, `quantity_decimal`). Idempotency keys behave as on
//! Stripe: the same key replays the first answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::stripe_objects::{
    CreditNoteParts, Ids, InvoiceParts, balance_transaction, card_declined, charge, credit_note,
    customer, declined_charge, declined_payment_intent, invoice, invoice_item, line_of,
    payment_intent, refund,
};

pub use crate::stripe_objects::event;

/// The webhook signing secret the payments process is given.
pub const WEBHOOK_SECRET: &str = "whsec_e2eSigningSecretForTallyTests";

/// The invoice item payments created, as Stripe stored it.
#[derive(Debug, Clone)]
pub struct Item {
    pub amount: i64,
    pub tally_line_id: String,
}

#[derive(Debug, Default)]
struct State {
    /// Seconds since the epoch: objects' `created` (the test moves it with
    /// the services' manual clocks).
    now: i64,
    counter: u64,
    customers: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    /// Items per invoice, in creation order.
    items: BTreeMap<String, Vec<Value>>,
    payment_intents: BTreeMap<String, Value>,
    charges: BTreeMap<String, Value>,
    refunds: BTreeMap<String, Value>,
    balance_transactions: BTreeMap<String, Value>,
    credit_notes: BTreeMap<String, Value>,
    /// Tally customer id → how many of its next `/pay` calls the card declines.
    declines: BTreeMap<String, u32>,
    /// Idempotency key → (status, body) of the first answer.
    replays: HashMap<String, (u16, Value)>,
    /// POSTs that came without an `Idempotency-Key`.
    posts_without_key: Vec<String>,
}

/// The fake Stripe: a wiremock server and its state.
#[derive(Debug, Clone)]
pub struct FakeStripe {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

struct Responder {
    state: Arc<Mutex<State>>,
}

impl FakeStripe {
    pub async fn start(now: i64) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            now,
            ..State::default()
        }));
        Mock::given(any())
            .respond_with(Responder {
                state: Arc::clone(&state),
            })
            .mount(&server)
            .await;
        Self {
            server: Arc::new(server),
            state,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_now(&self, now: i64) {
        self.state().now = now;
    }

    /// The Stripe invoice made for a Tally invoice (`metadata.tally_invoice_id`).
    pub fn invoice_of(&self, tally_invoice_id: &str) -> Option<Value> {
        self.state()
            .invoices
            .values()
            .find(|invoice| invoice["metadata"]["tally_invoice_id"] == tally_invoice_id)
            .cloned()
    }

    /// The items of a Stripe invoice.
    pub fn items_of(&self, stripe_invoice_id: &str) -> Vec<Item> {
        self.state()
            .items
            .get(stripe_invoice_id)
            .map(|items| {
                items
                    .iter()
                    .map(|item| Item {
                        amount: item["amount"].as_i64().unwrap_or_default(),
                        tally_line_id: item["metadata"]["tally_line_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The charge that paid a Stripe invoice, as Stripe has it now.
    pub fn charge_of(&self, stripe_invoice_id: &str) -> Option<Value> {
        let state = self.state();
        let charge = state.invoices.get(stripe_invoice_id)?["charge"]
            .as_str()?
            .to_owned();
        state.charges.get(&charge).cloned()
    }

    /// POST paths that came without an idempotency key (Tally must send one on each).
    pub fn posts_without_key(&self) -> Vec<String> {
        self.state().posts_without_key.clone()
    }

    /// How many POSTs carried an idempotency key.
    pub fn keyed_posts(&self) -> usize {
        self.state().replays.len()
    }

    /// The card of a Tally customer declines its next `count` charges
    /// (`insufficient_funds`), as Stripe answers `/pay` then: HTTP 402, a
    /// failed charge, the PaymentIntent waiting for a new payment method.
    pub fn decline_next_payments(&self, tally_customer_id: &str, count: u32) {
        self.state()
            .declines
            .insert(tally_customer_id.to_owned(), count);
    }

    /// The customer pays an open invoice outside `/pay` (a bank transfer
    /// of a `send_invoice` invoice): Stripe marks it paid with a charge.
    /// Returns the `invoice.paid` event's `data.object`.
    pub fn pay_out_of_band(&self, stripe_invoice_id: &str) -> Value {
        let mut state = self.state();
        let state = &mut *state;
        state.settle(stripe_invoice_id)
    }
}

impl State {
    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_1E2e{:012}", self.counter)
    }

    fn create_customer(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let id = self.next_id("cus");
        let customer = customer(&id, form, self.now);
        self.customers.insert(id, customer.clone());
        (200, customer)
    }

    fn update_customer(&mut self, id: &str, form: &BTreeMap<String, String>) -> (u16, Value) {
        let Some(existing) = self.customers.get(id) else {
            return not_found("customer", id);
        };
        let updated = customer(id, form, existing["created"].as_i64().unwrap_or(self.now));
        self.customers.insert(id.to_owned(), updated.clone());
        (200, updated)
    }

    fn create_invoice(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let id = self.next_id("in");
        let customer_id = form.get("customer").cloned().unwrap_or_default();
        let Some(customer) = self.customers.get(&customer_id).cloned() else {
            return not_found("customer", &customer_id);
        };
        let metadata: BTreeMap<String, String> = form
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("metadata[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .map(|name| (name.to_owned(), value.clone()))
            })
            .collect();
        let invoice = invoice(InvoiceParts {
            id: &id,
            customer: &customer,
            currency: form.get("currency").map_or("usd", String::as_str),
            collection_method: form
                .get("collection_method")
                .map_or("charge_automatically", String::as_str),
            days_until_due: form
                .get("days_until_due")
                .and_then(|days| days.parse().ok()),
            metadata: &metadata,
            created: self.now,
        });
        self.invoices.insert(id.clone(), invoice.clone());
        self.items.insert(id, Vec::new());
        (200, invoice)
    }

    fn create_invoice_item(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let invoice_id = form.get("invoice").cloned().unwrap_or_default();
        let Some(invoice) = self.invoices.get(&invoice_id) else {
            return not_found("invoice", &invoice_id);
        };
        if invoice["status"] != "draft" {
            return invalid(
                "You can only add invoice items to draft invoices.",
                "invoice",
            );
        }
        let Some(amount) = form
            .get("amount")
            .and_then(|amount| amount.parse::<i64>().ok())
        else {
            return invalid("Invalid integer: amount", "amount");
        };
        let id = self.next_id("ii");
        let item = invoice_item(&id, &invoice_id, amount, form, self.now);
        self.items.entry(invoice_id).or_default().push(item.clone());
        (200, item)
    }

    fn finalize(&mut self, invoice_id: &str) -> (u16, Value) {
        let items = self.items.get(invoice_id).cloned().unwrap_or_default();
        let number_seed = self.counter;
        let now = self.now;
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
        if invoice["status"] != "draft" {
            return (200, invoice.clone());
        }
        let total: i64 = items
            .iter()
            .filter_map(|item| item["amount"].as_i64())
            .sum();
        let lines: Vec<Value> = items.iter().map(|item| line_of(item, invoice_id)).collect();
        let count = lines.len();
        invoice["status"] = json!("open");
        invoice["number"] = json!(format!("E2E0{number_seed:04}-0001"));
        invoice["amount_due"] = json!(total);
        invoice["amount_remaining"] = json!(total);
        invoice["subtotal"] = json!(total);
        invoice["subtotal_excluding_tax"] = json!(total);
        invoice["total"] = json!(total);
        invoice["total_excluding_tax"] = json!(total);
        invoice["lines"]["data"] = json!(lines);
        invoice["lines"]["total_count"] = json!(count);
        invoice["status_transitions"]["finalized_at"] = json!(now);
        invoice["effective_at"] = json!(now);
        if invoice["collection_method"] == "send_invoice" {
            let days = invoice["days_until_due"].as_i64().unwrap_or(30);
            invoice["due_date"] = json!(now + days * 86_400);
        }
        let hosted = format!("https://invoice.stripe.com/i/acct_1E2eTally/test_{invoice_id}");
        invoice["hosted_invoice_url"] = json!(hosted);
        invoice["invoice_pdf"] = json!(format!("{hosted}/pdf"));
        (200, invoice.clone())
    }

    /// Marks an open invoice paid with a new charge (and its PaymentIntent,
    /// the one of an earlier declined attempt if there was one).
    fn settle(&mut self, invoice_id: &str) -> Value {
        let earlier_intent = self
            .invoices
            .get(invoice_id)
            .and_then(|invoice| invoice["payment_intent"].as_str())
            .map(str::to_owned);
        let payment_intent_id = earlier_intent.unwrap_or_else(|| self.next_id("pi"));
        let charge_id = self.next_id("ch");
        let now = self.now;
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return Value::Null;
        };
        if invoice["status"] == "paid" {
            return invoice.clone();
        }
        let amount = invoice["amount_due"].as_i64().unwrap_or_default();
        let currency = invoice["currency"].as_str().unwrap_or("usd").to_owned();
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        invoice["status"] = json!("paid");
        invoice["paid"] = json!(true);
        invoice["attempted"] = json!(true);
        invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
        invoice["amount_paid"] = json!(amount);
        invoice["amount_remaining"] = json!(0);
        invoice["charge"] = json!(charge_id);
        invoice["payment_intent"] = json!(payment_intent_id);
        invoice["status_transitions"]["paid_at"] = json!(now);
        let paid = invoice.clone();
        let ids = Ids {
            invoice: invoice_id,
            payment_intent: &payment_intent_id,
            charge: &charge_id,
            customer: &customer,
        };
        self.payment_intents.insert(
            payment_intent_id.clone(),
            payment_intent(&ids, amount, &currency, now),
        );
        let charge = charge(&ids, amount, &currency, now);
        self.record_balance_transaction(&charge, "charge", amount);
        self.charges.insert(charge_id.clone(), charge);
        paid
    }

    fn pay(&mut self, invoice_id: &str) -> (u16, Value) {
        let Some(invoice) = self.invoices.get(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
        if invoice["status"] == "paid" {
            return (200, invoice.clone());
        }
        if invoice["status"] != "open" {
            return invalid("Invoice is not open and cannot be paid.", "invoice");
        }
        let customer = invoice["customer"].as_str().unwrap_or_default();
        let tally_customer = self
            .customers
            .get(customer)
            .and_then(|customer| customer["metadata"]["tally_customer_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        match self.declines.get_mut(&tally_customer) {
            Some(left) if *left > 0 => {
                *left -= 1;
                self.decline(invoice_id)
            }
            _ => (200, self.settle(invoice_id)),
        }
    }

    /// A declined attempt: a failed charge, the PaymentIntent asking for
    /// another payment method, the invoice still open with one more attempt.
    fn decline(&mut self, invoice_id: &str) -> (u16, Value) {
        let Some(invoice) = self.invoices.get(invoice_id).cloned() else {
            return not_found("invoice", invoice_id);
        };
        let payment_intent_id = invoice["payment_intent"]
            .as_str()
            .map_or_else(|| self.next_id("pi"), str::to_owned);
        let charge_id = self.next_id("ch");
        let now = self.now;
        let amount = invoice["amount_due"].as_i64().unwrap_or_default();
        let currency = invoice["currency"].as_str().unwrap_or("usd").to_owned();
        let ids = Ids {
            invoice: invoice_id,
            payment_intent: &payment_intent_id,
            charge: &charge_id,
            customer: invoice["customer"].as_str().unwrap_or_default(),
        };
        let charge = declined_charge(&ids, amount, &currency, now);
        let intent = declined_payment_intent(&ids, amount, &currency, now);
        self.charges.insert(charge_id.clone(), charge);
        self.payment_intents
            .insert(payment_intent_id.clone(), intent.clone());
        if let Some(invoice) = self.invoices.get_mut(invoice_id) {
            invoice["attempted"] = json!(true);
            invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
            invoice["charge"] = json!(charge_id);
            invoice["payment_intent"] = json!(payment_intent_id);
        }
        (402, card_declined(&charge_id, intent))
    }

    fn set_status(&mut self, invoice_id: &str, status: &str) -> (u16, Value) {
        let now = self.now;
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
        if status == "void" {
            invoice["status"] = json!("void");
            invoice["amount_remaining"] = json!(0);
            invoice["status_transitions"]["voided_at"] = json!(now);
        } else if status == "uncollectible" {
            invoice["status"] = json!("uncollectible");
            invoice["status_transitions"]["marked_uncollectible_at"] = json!(now);
        }
        (200, invoice.clone())
    }

    fn create_refund(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let charge_id = form.get("charge").cloned().unwrap_or_default();
        let Some(charge) = self.charges.get(&charge_id).cloned() else {
            return not_found("charge", &charge_id);
        };
        let captured = charge["amount"].as_i64().unwrap_or_default();
        let refunded = charge["amount_refunded"].as_i64().unwrap_or_default();
        let amount = form
            .get("amount")
            .and_then(|amount| amount.parse::<i64>().ok())
            .unwrap_or(captured - refunded);
        if amount <= 0 || refunded + amount > captured {
            return invalid(
                &format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                    captured - refunded
                ),
                "amount",
            );
        }
        let id = self.next_id("re");
        let refund = refund(&id, &charge, amount, form, self.now);
        self.record_balance_transaction(&refund, "refund", -amount);
        self.refunds.insert(id, refund.clone());
        if let Some(charge) = self.charges.get_mut(&charge_id) {
            charge["amount_refunded"] = json!(refunded + amount);
            charge["refunded"] = json!(refunded + amount == captured);
            let list = &mut charge["refunds"];
            if let Some(data) = list["data"].as_array_mut() {
                data.insert(0, refund.clone());
            }
            list["total_count"] = json!(list["data"].as_array().map_or(0, Vec::len));
        }
        (200, refund)
    }

    /// `POST /v1/credit_notes`: `invoice`, and `amount` (or `refund_amount`),
    /// optionally `refund`, `reason`, `memo`, `metadata[…]`. Payments does
    /// not issue Stripe credit notes today (a refund is a Tally credit note);
    /// this answers as Stripe would if it starts to.
    fn create_credit_note(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let invoice_id = form.get("invoice").cloned().unwrap_or_default();
        let Some(invoice) = self.invoices.get(&invoice_id).cloned() else {
            return not_found("invoice", &invoice_id);
        };
        let paid = invoice["status"] == "paid";
        if !paid && invoice["status"] != "open" {
            return invalid(
                "You can only create credit notes for open or paid invoices.",
                "invoice",
            );
        }
        let Some(amount) = ["amount", "refund_amount"]
            .iter()
            .find_map(|key| form.get(*key).and_then(|amount| amount.parse::<i64>().ok()))
        else {
            return invalid("Missing required param: amount.", "amount");
        };
        let credited = invoice["post_payment_credit_notes_amount"]
            .as_i64()
            .unwrap_or(0)
            + invoice["pre_payment_credit_notes_amount"]
                .as_i64()
                .unwrap_or(0);
        if amount <= 0 || credited + amount > invoice["total"].as_i64().unwrap_or(0) {
            return invalid(
                "The sum of credit amount, refund amount and out of band amount must be less than or equal to the invoice total.",
                "amount",
            );
        }
        let id = self.next_id("cn");
        let line_id = self.next_id("cnli");
        let sequence = self.credit_notes.len() + 1;
        let note = credit_note(CreditNoteParts {
            id: &id,
            line_id: &line_id,
            invoice: &invoice,
            amount,
            sequence,
            form,
            created: self.now,
        });
        let field = if paid {
            "post_payment_credit_notes_amount"
        } else {
            "pre_payment_credit_notes_amount"
        };
        if let Some(invoice) = self.invoices.get_mut(&invoice_id) {
            invoice[field] = json!(invoice[field].as_i64().unwrap_or(0) + amount);
            if !paid {
                let remaining = invoice["amount_remaining"].as_i64().unwrap_or(0) - amount;
                invoice["amount_remaining"] = json!(remaining);
                invoice["amount_due"] = json!(remaining);
            }
        }
        self.credit_notes.insert(id, note.clone());
        (200, note)
    }

    /// The balance transaction a charge or refund names in `balance_transaction`.
    fn record_balance_transaction(&mut self, source: &Value, kind: &str, amount: i64) {
        let id = source["balance_transaction"].as_str().unwrap_or_default();
        let transaction = balance_transaction(id, source, kind, amount);
        self.balance_transactions.insert(id.to_owned(), transaction);
    }

    /// `GET /v1/<resource>?created[gte]=…&created[lt]=…&limit=…&starting_after=…`:
    /// newest first, as Stripe lists.
    fn list(&self, resource: &str, query: &BTreeMap<String, String>) -> (u16, Value) {
        let table = match resource {
            "invoices" => &self.invoices,
            "charges" => &self.charges,
            "refunds" => &self.refunds,
            "balance_transactions" => &self.balance_transactions,
            "credit_notes" => &self.credit_notes,
            _ => return not_found("resource", resource),
        };
        let bound = |key: &str, default: i64| {
            query
                .get(key)
                .and_then(|value| value.parse::<i64>().ok())
                .unwrap_or(default)
        };
        let (from, to) = (
            bound("created[gte]", i64::MIN),
            bound("created[lt]", i64::MAX),
        );
        let limit = usize::try_from(bound("limit", 10)).unwrap_or(10);
        let mut objects: Vec<&Value> = table
            .values()
            .filter(|object| {
                let created = object["created"].as_i64().unwrap_or_default();
                from <= created && created < to
            })
            .collect();
        objects.sort_by_key(|object| {
            std::cmp::Reverse((
                object["created"].as_i64().unwrap_or_default(),
                object["id"].as_str().unwrap_or_default().to_owned(),
            ))
        });
        if let Some(after) = query.get("starting_after") {
            let position = objects
                .iter()
                .position(|object| object["id"] == after.as_str());
            objects.drain(..position.map_or(0, |index| index + 1));
        }
        let has_more = objects.len() > limit;
        objects.truncate(limit);
        (
            200,
            json!({"object": "list", "data": objects, "has_more": has_more, "url": format!("/v1/{resource}")}),
        )
    }

    fn get(&self, path: &str, query: &BTreeMap<String, String>) -> (u16, Value) {
        let resource = path.trim_start_matches("/v1/");
        if !resource.contains('/') {
            return self.list(resource, query);
        }
        let mut parts = path.trim_start_matches("/v1/").splitn(2, '/');
        let (kind, id) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let table = match kind {
            "customers" => &self.customers,
            "invoices" => &self.invoices,
            "payment_intents" => &self.payment_intents,
            "charges" => &self.charges,
            "refunds" => &self.refunds,
            "balance_transactions" => &self.balance_transactions,
            "credit_notes" => &self.credit_notes,
            _ => return not_found("resource", path),
        };
        match table.get(id) {
            Some(object) => (200, object.clone()),
            None => not_found(kind.trim_end_matches('s'), id),
        }
    }

    fn post(&mut self, path: &str, form: &BTreeMap<String, String>) -> (u16, Value) {
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match segments.as_slice() {
            ["customers"] => self.create_customer(form),
            ["customers", id] => self.update_customer(id, form),
            ["invoices"] => self.create_invoice(form),
            ["invoiceitems"] => self.create_invoice_item(form),
            ["invoices", id, "finalize"] => self.finalize(id),
            ["invoices", id, "pay"] => self.pay(id),
            ["invoices", id, "send"] => match self.invoices.get(*id) {
                Some(invoice) => (200, invoice.clone()),
                None => not_found("invoice", id),
            },
            ["invoices", id, "void"] => self.set_status(id, "void"),
            ["invoices", id, "mark_uncollectible"] => self.set_status(id, "uncollectible"),
            ["refunds"] => self.create_refund(form),
            ["credit_notes"] => self.create_credit_note(form),
            _ => not_found("resource", path),
        }
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let path = request.url.path().to_owned();
        let (status, body) = if request.method.as_str() == "GET" {
            let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
            state.get(&path, &query)
        } else {
            let form: BTreeMap<String, String> = form_urlencoded::parse(&request.body)
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect();
            let key = request
                .headers
                .get("Idempotency-Key")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            match key {
                Some(key) => match state.replays.get(&key) {
                    Some(first) => first.clone(),
                    None => {
                        let answer = state.post(&path, &form);
                        state.replays.insert(key, answer.clone());
                        answer
                    }
                },
                None => {
                    state.posts_without_key.push(path.clone());
                    state.post(&path, &form)
                }
            }
        };
        let request_id = {
            state.counter += 1;
            format!("req_1E2e{:012}", state.counter)
        };
        ResponseTemplate::new(status)
            .insert_header("Request-Id", request_id.as_str())
            .insert_header("Stripe-Version", "2024-06-20")
            .set_body_json(body)
    }
}

/// `Stripe-Signature` for `payload` at `timestamp`, as Stripe computes it:
/// HMAC-SHA256 of `"{timestamp}.{payload}"` with the endpoint's secret.
pub fn signature(payload: &str, timestamp: i64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes())
        .expect("any key length works for HMAC");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("t={timestamp},v1={digest}")
}

fn error(status: u16, kind: &str, code: &str, message: &str, param: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {
            "code": code,
            "doc_url": format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")),
            "message": message,
            "param": param,
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_1E2e",
            "type": kind
        }}),
    )
}

fn not_found(object: &str, id: &str) -> (u16, Value) {
    error(
        404,
        "invalid_request_error",
        "resource_missing",
        &format!("No such {object}: '{id}'"),
        "id",
    )
}

fn invalid(message: &str, param: &str) -> (u16, Value) {
    error(
        400,
        "invalid_request_error",
        "parameter_invalid",
        message,
        param,
    )
}

/// The fake itself, without processes: amounts follow from what was sent,
/// states move as Stripe's do, lists page by creation time.
#[test]
fn the_fake_follows_stripes_rules() {
    let form = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    };
    let mut state = State {
        now: 1_796_000_000,
        ..State::default()
    };
    let (_, customer) = state.post("/v1/customers", &form(&[("name", "Acme AI")]));
    let customer = customer["id"].as_str().unwrap().to_owned();
    let (_, invoice) = state.post(
        "/v1/invoices",
        &form(&[("customer", &customer), ("currency", "usd")]),
    );
    let invoice = invoice["id"].as_str().unwrap().to_owned();
    for amount in ["49900", "-10000"] {
        let item = form(&[
            ("invoice", &invoice),
            ("amount", amount),
            ("currency", "usd"),
        ]);
        assert_eq!(state.post("/v1/invoiceitems", &item).0, 200);
    }
    let (_, open) = state.post(&format!("/v1/invoices/{invoice}/finalize"), &form(&[]));
    assert_eq!(
        (open["status"].clone(), open["amount_due"].clone()),
        (json!("open"), json!(39900))
    );
    let late_item = form(&[("invoice", &invoice), ("amount", "1")]);
    assert_eq!(
        state.post("/v1/invoiceitems", &late_item).0,
        400,
        "only drafts take items"
    );

    let (_, paid) = state.post(&format!("/v1/invoices/{invoice}/pay"), &form(&[]));
    assert_eq!(paid["status"], "paid");
    let charge = paid["charge"].as_str().unwrap().to_owned();
    let refund = form(&[("charge", &charge), ("amount", "10000")]);
    let (_, refund) = state.post("/v1/refunds", &refund);
    assert_eq!(refund["status"], "succeeded");
    let too_much = form(&[("charge", &charge), ("amount", "30000")]);
    assert_eq!(state.post("/v1/refunds", &too_much).0, 400);
    let (_, charge) = state.get(&format!("/v1/charges/{charge}"), &form(&[]));
    assert_eq!(charge["amount_refunded"], 10000);
    assert_eq!(charge["refunds"]["data"][0]["id"], refund["id"]);

    let note = form(&[
        ("invoice", &invoice),
        ("amount", "10000"),
        ("refund", refund["id"].as_str().unwrap()),
    ]);
    let (_, note) = state.post("/v1/credit_notes", &note);
    assert_eq!(
        (
            note["type"].clone(),
            note["refunds"][0]["amount_refunded"].clone()
        ),
        (json!("post_payment"), json!(10000))
    );

    // Two balance transactions (the charge, the refund), newest first, in pages.
    let page = form(&[("limit", "1"), ("created[gte]", "0")]);
    let (_, first) = state.get("/v1/balance_transactions", &page);
    assert_eq!(first["has_more"], true);
    let after = first["data"][0]["id"].as_str().unwrap().to_owned();
    let next = form(&[("limit", "1"), ("starting_after", &after)]);
    let (_, second) = state.get("/v1/balance_transactions", &next);
    assert_eq!(second["has_more"], false);
    let kinds = [&first["data"][0]["type"], &second["data"][0]["type"]];
    assert_eq!(kinds, [&json!("refund"), &json!("charge")]);
    let outside = form(&[("created[lt]", "1")]);
    assert_eq!(state.get("/v1/invoices", &outside).1["data"], json!([]));
}
