//! A stateful Stripe on wiremock: enough of Stripe's API for what payments
//! does (customers, invoices and their items, finalize, pay, send, void,
//! mark uncollectible, refunds, credit notes, reads of invoices, charges,
//! PaymentIntents and invoice payments, and the lists reconciliation reads,
//! balance transactions included), answering every call with a complete
//! object as Stripe's API reference shows it.
//!
//! Why stateful: the amounts Stripe answers must follow from what payments
//! sent (a finalized invoice is due the sum of its items, less its credit
//! notes), and the webhook flow needs Stripe's *current* state of an invoice
//! paid out of band. Why complete objects of API version
//! `2026-09-30.endive`: payments speaks it through async-stripe, which parses
//! strictly (`tests` below parses every answer with async-stripe's types).
//! In that version an invoice's PaymentIntent and charge are reached through
//! its `payments` (served only when expanded, `expand[]=payments`, with the
//! PaymentIntent or charge inside expanded on request), a PaymentIntent's
//! invoice through `GET /v1/invoice_payments?payment[type]=payment_intent&
//! payment[payment_intent]=…`, and a charge carries its `refunds` only when
//! expanded. An `expand` the fake does not know is refused, as Stripe
//! refuses one it cannot expand. Idempotency keys behave as on Stripe: the
//! same key replays the first answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::stripe_objects::{
    CreditNoteParts, Ids, InvoiceParts, balance_transaction, card_declined, charge, credit_note,
    customer, decline_payment_intent, declined_charge, invoice, invoice_item, invoice_payment,
    line_of, payment_intent, refund,
};

pub use crate::stripe_objects::event;

/// The webhook signing secret the payments process is given.
pub const WEBHOOK_SECRET: &str = "whsec_e2eSigningSecretForTallyTests";

/// What an invoice answer may expand: its payments, and in them the
/// PaymentIntent or the charge.
const INVOICE_EXPANSIONS: [&str; 3] = [
    "payments",
    "payments.data.payment.payment_intent",
    "payments.data.payment.charge",
];

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
    /// Invoices as stored: without `payments`, which answers add when asked.
    invoices: BTreeMap<String, Value>,
    /// `days_until_due` of `send_invoice` invoices (not part of the object
    /// in this API version; it sets `due_date` at finalization).
    days_until_due: BTreeMap<String, i64>,
    /// Items per invoice, in creation order.
    items: BTreeMap<String, Vec<Value>>,
    invoice_payments: BTreeMap<String, Value>,
    payment_intents: BTreeMap<String, Value>,
    /// Charges as stored: with `refunds`, which answers show when expanded.
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
    /// Every POST received, replays included.
    posts: usize,
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

    /// The charge that paid a Stripe invoice, as Stripe has it now: the
    /// latest charge of its default payment's PaymentIntent.
    pub fn charge_of(&self, stripe_invoice_id: &str) -> Option<Value> {
        let state = self.state();
        let charge = state.charge_of(stripe_invoice_id)?;
        state.charges.get(&charge).cloned()
    }

    /// A charge as a webhook event carries it (`refunds` only come when
    /// expanded, which events never are).
    pub fn charge_in_event(&self, charge_id: &str) -> Option<Value> {
        let state = self.state();
        let charge = state.charges.get(charge_id)?.clone();
        Some(state.present(charge, &[]).1)
    }

    /// The Stripe credit notes of a Stripe invoice, oldest first.
    pub fn credit_notes_of(&self, stripe_invoice_id: &str) -> Vec<Value> {
        let mut notes: Vec<Value> = self
            .state()
            .credit_notes
            .values()
            .filter(|note| note["invoice"] == stripe_invoice_id)
            .cloned()
            .collect();
        notes.sort_by_key(|note| note["created"].as_i64());
        notes
    }

    /// POST paths that came without an idempotency key (Tally must send one on each).
    pub fn posts_without_key(&self) -> Vec<String> {
        self.state().posts_without_key.clone()
    }

    /// How many POSTs carried an idempotency key.
    pub fn keyed_posts(&self) -> usize {
        self.state().replays.len()
    }

    /// How many POSTs arrived, replays of an idempotency key included.
    pub fn posts(&self) -> usize {
        self.state().posts
    }

    /// Every Stripe invoice made for a Tally invoice (there should be one).
    pub fn invoices_for(&self, tally_invoice_id: &str) -> Vec<Value> {
        self.state()
            .invoices
            .values()
            .filter(|invoice| invoice["metadata"]["tally_invoice_id"] == tally_invoice_id)
            .cloned()
            .collect()
    }

    /// Every charge, succeeded or failed, of a Stripe invoice's PaymentIntent.
    pub fn charges_of_invoice(&self, stripe_invoice_id: &str) -> Vec<Value> {
        let state = self.state();
        let Some(intent) = state.default_payment_intent(stripe_invoice_id) else {
            return Vec::new();
        };
        state
            .charges
            .values()
            .filter(|charge| charge["payment_intent"] == intent.as_str())
            .cloned()
            .collect()
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
    /// of a `send_invoice` invoice): Stripe marks it paid with a charge of
    /// its PaymentIntent. Returns the `invoice.paid` event's `data.object`
    /// (as events carry it: without the `payments` only expansion adds).
    pub fn pay_out_of_band(&self, stripe_invoice_id: &str) -> Value {
        let mut state = self.state();
        let paid = state.settle(stripe_invoice_id);
        state.present(paid, &[]).1
    }
}

/// The `expand` parameters of a request (`expand[]=…` or `expand[0]=…`).
fn expansions(params: &BTreeMap<String, String>) -> Vec<String> {
    params
        .iter()
        .filter(|(key, _)| key.starts_with("expand["))
        .map(|(_, value)| value.clone())
        .collect()
}

/// A request's parameters (query or form) as a map; repeated `expand[]`
/// keep their order as `expand[0]`, `expand[1]`, ….
fn params_of(pairs: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut expanded = 0;
    for (key, value) in pairs {
        if key == "expand[]" {
            params.insert(format!("expand[{expanded}]"), value);
            expanded += 1;
        } else {
            params.insert(key, value);
        }
    }
    params
}

/// Refuses an expansion `object` does not have (only those payments uses
/// are modelled: an invoice's payments, a charge's refunds).
fn check_expand(object: &str, expand: &[String]) -> Result<(), (u16, Value)> {
    let allowed: &[&str] = match object {
        "invoice" => &INVOICE_EXPANSIONS,
        "charge" => &["refunds"],
        _ => &[],
    };
    match expand
        .iter()
        .enumerate()
        .find(|(_, path)| !allowed.contains(&path.as_str()))
    {
        Some((index, path)) => Err(invalid(
            &format!("This property cannot be expanded ({path})."),
            &format!("expand[{index}]"),
        )),
        None => Ok(()),
    }
}

fn amount_of(form: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>, (u16, Value)> {
    match form.get(key) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|_| invalid(&format!("Invalid integer: {text}"), key)),
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
        let collection_method = form
            .get("collection_method")
            .map_or("charge_automatically", String::as_str);
        if collection_method == "send_invoice" {
            let Ok(Some(days)) = amount_of(form, "days_until_due") else {
                return invalid("Missing required param: days_until_due.", "days_until_due");
            };
            self.days_until_due.insert(id.clone(), days);
        }
        let invoice = invoice(InvoiceParts {
            id: &id,
            customer: &customer,
            currency: form.get("currency").map_or("usd", String::as_str),
            collection_method,
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

    /// Finalizes a draft: due the sum of its items, with the PaymentIntent
    /// for that amount and the default invoice payment linking the two, as
    /// Stripe creates them then. An invoice due nothing is paid at once.
    fn finalize(&mut self, invoice_id: &str) -> (u16, Value) {
        let items = self.items.get(invoice_id).cloned().unwrap_or_default();
        let number_seed = self.counter;
        let now = self.now;
        let days_until_due = self.days_until_due.get(invoice_id).copied();
        let Some(draft) = self.invoices.get(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
        if draft["status"] != "draft" {
            return (200, draft.clone());
        }
        let total: i64 = items
            .iter()
            .filter_map(|item| item["amount"].as_i64())
            .sum();
        if total < 0 {
            return invalid(
                "The invoice total cannot be negative; credit the customer balance instead.",
                "invoice",
            );
        }
        let payment = if total > 0 {
            let intent_id = self.next_id("pi");
            let payment_id = self.next_id("inpay");
            Some((intent_id, payment_id))
        } else {
            None
        };
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
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
        invoice["ending_balance"] = json!(0);
        invoice["lines"]["data"] = json!(lines);
        invoice["lines"]["total_count"] = json!(count);
        invoice["status_transitions"]["finalized_at"] = json!(now);
        invoice["effective_at"] = json!(now);
        if let Some(days) = days_until_due {
            invoice["due_date"] = json!(now + days * 86_400);
        }
        let hosted = format!("https://invoice.stripe.com/i/acct_1E2eTally/test_{invoice_id}");
        invoice["hosted_invoice_url"] = json!(hosted);
        invoice["invoice_pdf"] = json!(format!("{hosted}/pdf"));
        if total == 0 {
            invoice["status"] = json!("paid");
            invoice["status_transitions"]["paid_at"] = json!(now);
        }
        let finalized = invoice.clone();
        if let Some((intent_id, payment_id)) = payment {
            let customer = finalized["customer"].as_str().unwrap_or_default();
            let currency = finalized["currency"].as_str().unwrap_or("usd");
            self.payment_intents.insert(
                intent_id.clone(),
                payment_intent(&intent_id, customer, total, currency, now),
            );
            self.invoice_payments.insert(
                payment_id.clone(),
                invoice_payment(&payment_id, &finalized, &intent_id, total, now),
            );
        }
        (200, finalized)
    }

    /// The default invoice payment of an invoice.
    fn default_payment(&self, invoice_id: &str) -> Option<&Value> {
        self.invoice_payments
            .values()
            .find(|payment| payment["invoice"] == invoice_id && payment["is_default"] == true)
    }

    fn default_payment_intent(&self, invoice_id: &str) -> Option<String> {
        self.default_payment(invoice_id)?["payment"]["payment_intent"]
            .as_str()
            .map(str::to_owned)
    }

    /// The charge of an invoice's default payment (its PaymentIntent's
    /// latest charge).
    fn charge_of(&self, invoice_id: &str) -> Option<String> {
        let intent = self.default_payment_intent(invoice_id)?;
        self.payment_intents.get(&intent)?["latest_charge"]
            .as_str()
            .map(str::to_owned)
    }

    /// Updates the default invoice payment of an invoice.
    fn update_default_payment(&mut self, invoice_id: &str, update: impl FnOnce(&mut Value)) {
        if let Some(payment) = self
            .invoice_payments
            .values_mut()
            .find(|payment| payment["invoice"] == invoice_id && payment["is_default"] == true)
        {
            update(payment);
        }
    }

    /// Marks an open invoice paid with a new charge of its PaymentIntent
    /// (the one of an earlier declined attempt, if there was one).
    fn settle(&mut self, invoice_id: &str) -> Value {
        let Some(invoice) = self.invoices.get(invoice_id) else {
            return Value::Null;
        };
        if invoice["status"] != "open" {
            return invoice.clone();
        }
        let Some(payment_intent_id) = self.default_payment_intent(invoice_id) else {
            return invoice.clone();
        };
        let charge_id = self.next_id("ch");
        let now = self.now;
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return Value::Null;
        };
        let amount = invoice["amount_remaining"].as_i64().unwrap_or_default();
        let currency = invoice["currency"].as_str().unwrap_or("usd").to_owned();
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        invoice["status"] = json!("paid");
        invoice["attempted"] = json!(true);
        invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
        invoice["amount_paid"] = json!(amount);
        invoice["amount_remaining"] = json!(0);
        invoice["status_transitions"]["paid_at"] = json!(now);
        let paid = invoice.clone();
        self.update_default_payment(invoice_id, |payment| {
            payment["status"] = json!("paid");
            payment["amount_paid"] = json!(amount);
            payment["status_transitions"]["paid_at"] = json!(now);
        });
        if let Some(intent) = self.payment_intents.get_mut(&payment_intent_id) {
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            intent["latest_charge"] = json!(charge_id);
            intent["last_payment_error"] = Value::Null;
        }
        let ids = Ids {
            payment_intent: &payment_intent_id,
            charge: &charge_id,
            customer: &customer,
        };
        let charge = charge(&ids, amount, &currency, now);
        self.record_balance_transaction(&charge, "charge", amount);
        self.charges.insert(charge_id, charge);
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
        let Some(payment_intent_id) = self.default_payment_intent(invoice_id) else {
            return invalid("Invoice has no payment to attempt.", "invoice");
        };
        let charge_id = self.next_id("ch");
        let now = self.now;
        let amount = invoice["amount_remaining"].as_i64().unwrap_or_default();
        let currency = invoice["currency"].as_str().unwrap_or("usd").to_owned();
        let ids = Ids {
            payment_intent: &payment_intent_id,
            charge: &charge_id,
            customer: invoice["customer"].as_str().unwrap_or_default(),
        };
        let charge = declined_charge(&ids, amount, &currency, now);
        let Some(intent) = self.payment_intents.get_mut(&payment_intent_id) else {
            return not_found("payment_intent", &payment_intent_id);
        };
        decline_payment_intent(intent, &ids, now);
        let intent = intent.clone();
        self.charges.insert(charge_id.clone(), charge);
        if let Some(invoice) = self.invoices.get_mut(invoice_id) {
            invoice["attempted"] = json!(true);
            invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
        }
        (402, card_declined(&charge_id, intent))
    }

    /// Voids or writes off a finalized invoice; voiding cancels its
    /// payment and PaymentIntent.
    fn set_status(&mut self, invoice_id: &str, status: &str) -> (u16, Value) {
        let now = self.now;
        let intent = self.default_payment_intent(invoice_id);
        let Some(invoice) = self.invoices.get_mut(invoice_id) else {
            return not_found("invoice", invoice_id);
        };
        if invoice["status"] != "open" && invoice["status"] != status {
            return invalid(&format!("You can only {status} open invoices."), "invoice");
        }
        if status == "void" {
            invoice["status"] = json!("void");
            invoice["amount_remaining"] = json!(0);
            invoice["status_transitions"]["voided_at"] = json!(now);
        } else if status == "uncollectible" {
            invoice["status"] = json!("uncollectible");
            invoice["status_transitions"]["marked_uncollectible_at"] = json!(now);
        }
        let answer = invoice.clone();
        if status == "void" {
            self.cancel_payment(invoice_id, intent.as_deref(), "void_invoice");
        }
        (200, answer)
    }

    /// The invoice's default payment and its PaymentIntent are canceled:
    /// nothing more will be collected.
    fn cancel_payment(&mut self, invoice_id: &str, intent: Option<&str>, reason: &str) {
        let now = self.now;
        self.update_default_payment(invoice_id, |payment| {
            payment["status"] = json!("canceled");
            payment["status_transitions"]["canceled_at"] = json!(now);
        });
        if let Some(intent) = intent.and_then(|id| self.payment_intents.get_mut(id)) {
            intent["status"] = json!("canceled");
            intent["canceled_at"] = json!(now);
            intent["cancellation_reason"] = json!(reason);
        }
    }

    fn create_refund(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let charge_id = form.get("charge").cloned().unwrap_or_default();
        let Some(charge) = self.charges.get(&charge_id).cloned() else {
            return not_found("charge", &charge_id);
        };
        if charge["status"] != "succeeded" {
            return invalid(
                &format!("Charge {charge_id} has not succeeded and cannot be refunded."),
                "charge",
            );
        }
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

    /// The refunds a credit note on a paid invoice links:
    /// `refunds[i][refund]` (an existing refund of the invoice's charge,
    /// `refunds[i][amount_refunded]` of it, all by default) and
    /// `refund_amount` (a new refund of that charge), as
    /// `[{"amount_refunded", "refund", "type"}]`.
    fn credit_note_refunds(
        &mut self,
        invoice_id: &str,
        form: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, (u16, Value)> {
        let charge = self.charge_of(invoice_id);
        let mut linked = Vec::new();
        for index in 0.. {
            let Some(refund_id) = form.get(&format!("refunds[{index}][refund]")) else {
                break;
            };
            let param = format!("refunds[{index}][refund]");
            let Some(refund) = self.refunds.get(refund_id) else {
                return Err(not_found("refund", refund_id));
            };
            if refund["charge"].as_str() != charge.as_deref() {
                return Err(invalid(
                    &format!("Refund {refund_id} does not belong to invoice {invoice_id}."),
                    &param,
                ));
            }
            let whole = refund["amount"].as_i64().unwrap_or_default();
            let amount =
                amount_of(form, &format!("refunds[{index}][amount_refunded]"))?.unwrap_or(whole);
            if amount <= 0 || amount > whole {
                return Err(invalid(
                    &format!("amount_refunded must be between 1 and {whole}."),
                    &format!("refunds[{index}][amount_refunded]"),
                ));
            }
            linked.push(json!({"amount_refunded": amount, "refund": refund_id, "type": "refund"}));
        }
        if let Some(amount) = amount_of(form, "refund_amount")? {
            let Some(charge) = charge else {
                return Err(invalid(
                    "The invoice has no charge to refund.",
                    "refund_amount",
                ));
            };
            let request = BTreeMap::from([
                ("charge".to_owned(), charge),
                ("amount".to_owned(), amount.to_string()),
            ]);
            let (status, refund) = self.create_refund(&request);
            if status != 200 {
                return Err((status, refund));
            }
            linked
                .push(json!({"amount_refunded": amount, "refund": refund["id"], "type": "refund"}));
        }
        Ok(linked)
    }

    /// `POST /v1/credit_notes`: `invoice`, `amount`, optionally `reason`,
    /// `memo`, `metadata[…]`; on a paid invoice the amount must be settled
    /// by linked or new refunds and `out_of_band_amount` (Stripe's
    /// `credit_amount`, to the customer balance, is refused: the fake keeps
    /// no balances and payments never asks for one). On an open invoice the
    /// note lowers what it asks for (`amount_due`, `amount_remaining`, its
    /// default payment and PaymentIntent); credited to nothing, the invoice
    /// is paid and its payment canceled.
    fn create_credit_note(&mut self, form: &BTreeMap<String, String>) -> (u16, Value) {
        let invoice_id = form.get("invoice").cloned().unwrap_or_default();
        let Some(invoice) = self.invoices.get(&invoice_id).cloned() else {
            return not_found("invoice", &invoice_id);
        };
        if let Some(key) = form
            .keys()
            .find(|key| *key == "credit_amount" || key.starts_with("lines["))
        {
            return invalid(
                &format!("The fake Stripe does not model `{key}` (payments never sends it)."),
                key,
            );
        }
        let paid = invoice["status"] == "paid";
        if !paid && invoice["status"] != "open" {
            return invalid(
                "You can only create credit notes for open or paid invoices.",
                "invoice",
            );
        }
        let amount = match amount_of(form, "amount") {
            Ok(Some(amount)) => amount,
            Ok(None) => return invalid("Missing required param: amount.", "amount"),
            Err(error) => return error,
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
        let out_of_band = match amount_of(form, "out_of_band_amount") {
            Ok(out_of_band) => out_of_band,
            Err(error) => return error,
        };
        let settling_params = form.keys().any(|key| {
            key == "out_of_band_amount" || key == "refund_amount" || key.starts_with("refunds[")
        });
        let mut refunds = Vec::new();
        if paid {
            if !settling_params {
                return invalid(
                    "A credit note on a paid invoice must say how the amount is returned: refunds, refund_amount or out_of_band_amount.",
                    "amount",
                );
            }
            let refunded_before: i64 = self
                .credit_notes
                .values()
                .filter(|note| note["invoice"] == invoice_id.as_str())
                .map(|note| note["post_payment_amount"].as_i64().unwrap_or(0))
                .sum();
            let settled = out_of_band.unwrap_or(0);
            if settled < 0
                || refunded_before + amount > invoice["amount_paid"].as_i64().unwrap_or(0)
            {
                return invalid(
                    "The credit note amount exceeds what the invoice was paid.",
                    "amount",
                );
            }
            refunds = match self.credit_note_refunds(&invoice_id, form) {
                Ok(refunds) => refunds,
                Err(error) => return error,
            };
            let refunded: i64 = refunds
                .iter()
                .map(|refund| refund["amount_refunded"].as_i64().unwrap_or(0))
                .sum();
            if refunded + settled != amount {
                return invalid(
                    "The sum of credit amount, refund amount and out of band amount must equal the credit note amount.",
                    "amount",
                );
            }
        } else {
            if settling_params {
                return invalid(
                    "Refunds and out of band amounts can only be credited on paid invoices.",
                    "out_of_band_amount",
                );
            }
            if amount > invoice["amount_remaining"].as_i64().unwrap_or(0) {
                return invalid(
                    "The credit note amount exceeds the invoice's amount remaining.",
                    "amount",
                );
            }
        }
        let id = self.next_id("cn");
        let line_id = self.next_id("cnli");
        let sequence = self
            .credit_notes
            .values()
            .filter(|note| note["invoice"] == invoice_id.as_str())
            .count()
            + 1;
        let note = credit_note(CreditNoteParts {
            id: &id,
            line_id: &line_id,
            invoice: &invoice,
            amount,
            out_of_band,
            refunds,
            sequence,
            form,
            created: self.now,
        });
        if paid {
            self.lower_invoice(&invoice_id, "post_payment_credit_notes_amount", amount, 0);
        } else {
            let remaining = invoice["amount_remaining"].as_i64().unwrap_or(0) - amount;
            self.lower_invoice(
                &invoice_id,
                "pre_payment_credit_notes_amount",
                amount,
                amount,
            );
            let intent = self.default_payment_intent(&invoice_id);
            if remaining > 0 {
                self.update_default_payment(&invoice_id, |payment| {
                    payment["amount_requested"] = json!(remaining);
                });
                if let Some(intent) = intent.and_then(|id| self.payment_intents.get_mut(&id)) {
                    intent["amount"] = json!(remaining);
                }
            } else {
                let now = self.now;
                if let Some(invoice) = self.invoices.get_mut(&invoice_id) {
                    invoice["status"] = json!("paid");
                    invoice["status_transitions"]["paid_at"] = json!(now);
                }
                self.cancel_payment(&invoice_id, intent.as_deref(), "automatic");
            }
        }
        self.credit_notes.insert(id, note.clone());
        (200, note)
    }

    /// Adds `amount` to the invoice's `field` and lowers what it still asks
    /// for by `due_by`.
    fn lower_invoice(&mut self, invoice_id: &str, field: &str, amount: i64, due_by: i64) {
        if let Some(invoice) = self.invoices.get_mut(invoice_id) {
            invoice[field] = json!(invoice[field].as_i64().unwrap_or(0) + amount);
            for due in ["amount_due", "amount_remaining"] {
                invoice[due] = json!(invoice[due].as_i64().unwrap_or(0) - due_by);
            }
        }
    }

    /// The balance transaction a charge or refund names in `balance_transaction`.
    fn record_balance_transaction(&mut self, source: &Value, kind: &str, amount: i64) {
        let id = source["balance_transaction"].as_str().unwrap_or_default();
        let transaction = balance_transaction(id, source, kind, amount);
        self.balance_transactions.insert(id.to_owned(), transaction);
    }

    /// `GET /v1/<resource>?created[gte]=…&created[lt]=…&limit=…&starting_after=…`:
    /// newest first, as Stripe lists. Invoice payments filter by `invoice`
    /// or by `payment[type]` (`payment_intent` or `payment_record`) with the
    /// id of that type; any other parameter is refused, as Stripe refuses
    /// unknown ones.
    fn list(&self, resource: &str, query: &BTreeMap<String, String>) -> (u16, Value) {
        let table = match resource {
            "invoices" => &self.invoices,
            "charges" => &self.charges,
            "refunds" => &self.refunds,
            "balance_transactions" => &self.balance_transactions,
            "credit_notes" => &self.credit_notes,
            "invoice_payments" => &self.invoice_payments,
            _ => return not_found("resource", resource),
        };
        let mut filters: Vec<(&str, &str)> = Vec::new();
        if resource == "invoice_payments" {
            let known = |key: &str| {
                matches!(
                    key,
                    "invoice"
                        | "limit"
                        | "starting_after"
                        | "ending_before"
                        | "payment[type]"
                        | "payment[payment_intent]"
                        | "payment[payment_record]"
                ) || key.starts_with("created[")
            };
            if let Some(unknown) = query.keys().find(|key| !known(key)) {
                return invalid(&format!("Received unknown parameter: {unknown}"), unknown);
            }
            if let Some(invoice) = query.get("invoice") {
                filters.push(("invoice", invoice.as_str()));
            }
            let payment_keys: Vec<&String> = query
                .keys()
                .filter(|key| key.starts_with("payment["))
                .collect();
            if !payment_keys.is_empty() {
                let Some(kind) = query.get("payment[type]") else {
                    return invalid("Missing required param: payment[type].", "payment[type]");
                };
                let field = match kind.as_str() {
                    "payment_intent" | "payment_record" => kind.as_str(),
                    _ => return invalid("Invalid payment[type].", "payment[type]"),
                };
                let Some(id) = query.get(&format!("payment[{field}]")) else {
                    return invalid(
                        &format!("Missing required param: payment[{field}]."),
                        &format!("payment[{field}]"),
                    );
                };
                filters.push((field, id.as_str()));
            }
        }
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
            .filter(|object| {
                filters.iter().all(|(field, wanted)| match *field {
                    "payment_intent" | "payment_record" => object["payment"][field] == *wanted,
                    _ => object[field] == *wanted,
                })
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
            "invoice_payments" => &self.invoice_payments,
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
                Some(invoice) if invoice["status"] == "draft" => {
                    invalid("You can only send finalized invoices.", "invoice")
                }
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

    /// A GET answered and rendered with its `expand`.
    fn answer_get(&self, path: &str, query: &BTreeMap<String, String>) -> (u16, Value) {
        let expand = expansions(query);
        let (status, body) = self.get(path, query);
        if status == 200 {
            self.present(body, &expand)
        } else {
            (status, body)
        }
    }

    /// A POST applied and its answer rendered with the request's `expand`
    /// (checked first: an expansion Stripe refuses changes nothing).
    fn answer_post(&mut self, path: &str, form: &BTreeMap<String, String>) -> (u16, Value) {
        let expand = expansions(form);
        let resource = path.trim_start_matches("/v1/").split('/').next();
        let object = resource.unwrap_or_default().trim_end_matches('s');
        if let Err(refused) = check_expand(object, &expand) {
            return refused;
        }
        let (status, body) = self.post(path, form);
        if status == 200 {
            self.present(body, &expand)
        } else {
            (status, body)
        }
    }

    /// An answer as Stripe renders it: includable fields only when expanded
    /// (an invoice's `payments`, a charge's `refunds`), expanded ids
    /// replaced by their objects, an expansion the object does not have
    /// refused (HTTP 400). Lists render each item unexpanded.
    fn present(&self, body: Value, expand: &[String]) -> (u16, Value) {
        let object = body["object"].as_str().unwrap_or_default().to_owned();
        if let Err(refused) = check_expand(&object, expand) {
            return refused;
        }
        let wants = |path: &str| expand.iter().any(|wanted| wanted == path);
        match object.as_str() {
            "invoice" => {
                let mut invoice = body;
                if expand.iter().any(|path| path.starts_with("payments")) {
                    let id = invoice["id"].as_str().unwrap_or_default().to_owned();
                    let mut payments: Vec<Value> = self
                        .invoice_payments
                        .values()
                        .filter(|payment| payment["invoice"] == id.as_str())
                        .cloned()
                        .collect();
                    payments.sort_by_key(|payment| {
                        std::cmp::Reverse(payment["created"].as_i64().unwrap_or_default())
                    });
                    for payment in &mut payments {
                        for (field, table) in [
                            ("payment_intent", &self.payment_intents),
                            ("charge", &self.charges),
                        ] {
                            let inner = &mut payment["payment"][field];
                            if wants(&format!("payments.data.payment.{field}"))
                                && let Some(found) = inner.as_str().and_then(|id| table.get(id))
                            {
                                *inner = self.present(found.clone(), &[]).1;
                            }
                        }
                    }
                    let count = payments.len();
                    invoice["payments"] = json!({
                        "object": "list",
                        "data": payments,
                        "has_more": false,
                        "total_count": count,
                        "url": format!("/v1/invoices/{id}/payments")
                    });
                }
                (200, invoice)
            }
            "charge" => {
                let mut charge = body;
                if !wants("refunds")
                    && let Some(fields) = charge.as_object_mut()
                {
                    fields.remove("refunds");
                }
                (200, charge)
            }
            "list" => {
                let mut list = body;
                if let Some(data) = list["data"].as_array_mut() {
                    for item in data {
                        *item = self.present(item.take(), &[]).1;
                    }
                }
                (200, list)
            }
            _ => (200, body),
        }
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let path = request.url.path().to_owned();
        let (status, body) = if request.method.as_str() == "GET" {
            let query = params_of(request.url.query_pairs().into_owned());
            state.answer_get(&path, &query)
        } else {
            state.posts += 1;
            let form = params_of(
                form_urlencoded::parse(&request.body)
                    .map(|(key, value)| (key.into_owned(), value.into_owned())),
            );
            let key = request
                .headers
                .get("Idempotency-Key")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            match key {
                Some(key) => match state.replays.get(&key) {
                    Some(first) => first.clone(),
                    None => {
                        let answer = state.answer_post(&path, &form);
                        state.replays.insert(key, answer.clone());
                        answer
                    }
                },
                None => {
                    state.posts_without_key.push(path.clone());
                    state.answer_post(&path, &form)
                }
            }
        };
        let request_id = {
            state.counter += 1;
            format!("req_1E2e{:012}", state.counter)
        };
        ResponseTemplate::new(status)
            .insert_header("Request-Id", request_id.as_str())
            .insert_header("Stripe-Version", "2026-09-30.endive")
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::State;

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// Drives the fake as payments would, keeping every answer.
    struct Driver {
        state: State,
        answers: Vec<(u16, Value)>,
    }

    impl Driver {
        fn new() -> Self {
            Self {
                state: State {
                    now: 1_796_000_000,
                    ..State::default()
                },
                answers: Vec::new(),
            }
        }

        fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
            let answer = self.state.answer_post(path, &form(pairs));
            self.answers.push(answer.clone());
            answer
        }

        fn get(&mut self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
            let answer = self.state.answer_get(path, &form(pairs));
            self.answers.push(answer.clone());
            answer
        }

        fn ok(&mut self, post: bool, path: &str, pairs: &[(&str, &str)]) -> Value {
            let (status, body) = if post {
                self.post(path, pairs)
            } else {
                self.get(path, pairs)
            };
            assert_eq!(status, 200, "{path}: {body}");
            body
        }

        /// A customer and an open invoice of `amounts`; `(invoice, intent)`.
        fn open_invoice(&mut self, collection: &str, amounts: &[&str]) -> (String, String) {
            let customer = self.ok(true, "/v1/customers", &[("name", "Acme AI")]);
            let customer = customer["id"].as_str().unwrap().to_owned();
            let mut create = vec![("customer", customer.as_str()), ("currency", "usd")];
            create.push(("collection_method", collection));
            if collection == "send_invoice" {
                create.push(("days_until_due", "30"));
            }
            let invoice = self.ok(true, "/v1/invoices", &create);
            let invoice = invoice["id"].as_str().unwrap().to_owned();
            for amount in amounts {
                let item = [
                    ("invoice", invoice.as_str()),
                    ("customer", customer.as_str()),
                    ("amount", *amount),
                    ("currency", "usd"),
                ];
                self.ok(true, "/v1/invoiceitems", &item);
            }
            self.ok(true, &format!("/v1/invoices/{invoice}/finalize"), &[]);
            let expanded = self.ok(
                false,
                &format!("/v1/invoices/{invoice}"),
                &[
                    ("expand[0]", "payments"),
                    ("expand[1]", "payments.data.payment.payment_intent"),
                ],
            );
            let intent = expanded["payments"]["data"][0]["payment"]["payment_intent"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            (invoice, intent)
        }
    }

    /// The fake itself, without processes: amounts follow from what was
    /// sent, states move as Stripe's do, includable fields come only when
    /// expanded, lists page by creation time.
    #[test]
    fn the_fake_follows_stripes_rules() {
        let mut stripe = Driver::new();
        let (invoice, intent) = stripe.open_invoice("charge_automatically", &["49900", "-10000"]);
        let path = format!("/v1/invoices/{invoice}");
        let open = stripe.ok(false, &path, &[]);
        assert_eq!(
            (open["status"].clone(), open["amount_due"].clone()),
            (json!("open"), json!(39900))
        );
        assert!(
            open.get("payments").is_none(),
            "payments only when expanded"
        );
        for gone in ["charge", "payment_intent", "paid"] {
            assert!(
                open.get(gone).is_none(),
                "no invoice `{gone}` in this version"
            );
        }
        let late_item = [("invoice", invoice.as_str()), ("amount", "1")];
        assert_eq!(
            stripe.post("/v1/invoiceitems", &late_item).0,
            400,
            "only drafts take items"
        );
        assert_eq!(
            stripe.get(&path, &[("expand[0]", "charge")]).0,
            400,
            "an invoice has no `charge` to expand"
        );

        // The PaymentIntent leads to its invoice through invoice payments only.
        let (_, pi) = stripe.get(&format!("/v1/payment_intents/{intent}"), &[]);
        assert!(pi.get("invoice").is_none());
        let by_intent = [
            ("payment[type]", "payment_intent"),
            ("payment[payment_intent]", intent.as_str()),
            ("limit", "1"),
        ];
        let listed = stripe.ok(false, "/v1/invoice_payments", &by_intent);
        assert_eq!(listed["data"][0]["invoice"], invoice.as_str());
        assert_eq!(listed["data"][0]["amount_requested"], 39900);
        let untyped = [("payment[payment_intent]", intent.as_str())];
        assert_eq!(stripe.get("/v1/invoice_payments", &untyped).0, 400);
        let by_status = [("invoice", invoice.as_str()), ("status", "open")];
        assert_eq!(
            stripe.get("/v1/invoice_payments", &by_status).0,
            400,
            "no `status` filter in this version"
        );
        let by_invoice = [("invoice", invoice.as_str())];
        let listed = stripe.ok(false, "/v1/invoice_payments", &by_invoice);
        assert_eq!(
            listed["data"][0]["payment"]["payment_intent"],
            intent.as_str()
        );

        let expand = [
            ("expand[0]", "payments"),
            ("expand[1]", "payments.data.payment.payment_intent"),
        ];
        let paid = stripe.ok(true, &format!("/v1/invoices/{invoice}/pay"), &expand);
        assert_eq!(paid["status"], "paid");
        let payment = &paid["payments"]["data"][0];
        assert_eq!(
            (payment["status"].clone(), payment["amount_paid"].clone()),
            (json!("paid"), json!(39900))
        );
        assert_eq!(payment["payment"]["payment_intent"]["status"], "succeeded");
        let charge = payment["payment"]["payment_intent"]["latest_charge"]
            .as_str()
            .unwrap()
            .to_owned();
        let refund = [("charge", charge.as_str()), ("amount", "10000")];
        let refund = stripe.ok(true, "/v1/refunds", &refund);
        assert_eq!(refund["status"], "succeeded");
        let too_much = [("charge", charge.as_str()), ("amount", "30000")];
        assert_eq!(stripe.post("/v1/refunds", &too_much).0, 400);
        let charge_path = format!("/v1/charges/{charge}");
        let plain = stripe.ok(false, &charge_path, &[]);
        assert!(plain.get("refunds").is_none() && plain.get("invoice").is_none());
        assert_eq!(plain["amount_refunded"], 10000);
        let with_refunds = stripe.ok(false, &charge_path, &[("expand[0]", "refunds")]);
        assert_eq!(with_refunds["refunds"]["data"][0]["id"], refund["id"]);

        // Credit notes on a paid invoice say how the amount goes back.
        let unsettled = [("invoice", invoice.as_str()), ("amount", "10000")];
        assert_eq!(stripe.post("/v1/credit_notes", &unsettled).0, 400);
        let refund_id = refund["id"].as_str().unwrap();
        let linked = [
            ("invoice", invoice.as_str()),
            ("amount", "10000"),
            ("refunds[0][refund]", refund_id),
        ];
        let note = stripe.ok(true, "/v1/credit_notes", &linked);
        assert_eq!(
            (
                note["type"].clone(),
                note["refunds"][0]["amount_refunded"].clone()
            ),
            (json!("post_payment"), json!(10000))
        );
        let outside = [
            ("invoice", invoice.as_str()),
            ("amount", "5000"),
            ("out_of_band_amount", "5000"),
        ];
        let note = stripe.ok(true, "/v1/credit_notes", &outside);
        assert_eq!(note["out_of_band_amount"], 5000);
        let paid = stripe.ok(false, &path, &[]);
        assert_eq!(paid["post_payment_credit_notes_amount"], 15000);
        assert_eq!(
            paid["amount_due"], 39900,
            "a paid invoice stays due what it was"
        );

        // On an open invoice a note lowers what it asks for, everywhere.
        let (open, intent) = stripe.open_invoice("send_invoice", &["49900"]);
        let open_path = format!("/v1/invoices/{open}");
        let lowered = [
            ("invoice", open.as_str()),
            ("amount", "4900"),
            ("reason", "order_change"),
        ];
        let note = stripe.ok(true, "/v1/credit_notes", &lowered);
        assert_eq!(
            (note["type"].clone(), note["pre_payment_amount"].clone()),
            (json!("pre_payment"), json!(4900))
        );
        let now_due = stripe.ok(false, &open_path, &[("expand[]", "payments")]);
        assert_eq!(
            (
                now_due["amount_due"].clone(),
                now_due["amount_remaining"].clone()
            ),
            (json!(45000), json!(45000))
        );
        assert_eq!(now_due["payments"]["data"][0]["amount_requested"], 45000);
        let pi = stripe.ok(false, &format!("/v1/payment_intents/{intent}"), &[]);
        assert_eq!(pi["amount"], 45000);
        let out_of_band = [
            ("invoice", open.as_str()),
            ("amount", "100"),
            ("out_of_band_amount", "100"),
        ];
        assert_eq!(stripe.post("/v1/credit_notes", &out_of_band).0, 400);
        let rest = [("invoice", open.as_str()), ("amount", "45000")];
        stripe.ok(true, "/v1/credit_notes", &rest);
        let credited = stripe.ok(false, &open_path, &[]);
        assert_eq!(
            (credited["status"].clone(), credited["amount_due"].clone()),
            (json!("paid"), json!(0)),
            "credited to nothing, Stripe marks it paid"
        );
        let pi = stripe.ok(false, &format!("/v1/payment_intents/{intent}"), &[]);
        assert_eq!(pi["status"], "canceled");

        // Two balance transactions (the charge, the refund), newest first, in pages.
        let (_, first) = stripe.get(
            "/v1/balance_transactions",
            &[("limit", "1"), ("created[gte]", "0")],
        );
        assert_eq!(first["has_more"], true);
        let after = first["data"][0]["id"].as_str().unwrap().to_owned();
        let next = [("limit", "1"), ("starting_after", after.as_str())];
        let (_, second) = stripe.get("/v1/balance_transactions", &next);
        assert_eq!(second["has_more"], false);
        let kinds = [&first["data"][0]["type"], &second["data"][0]["type"]];
        assert_eq!(kinds, [&json!("refund"), &json!("charge")]);
        let before = [("created[lt]", "1")];
        assert_eq!(stripe.get("/v1/invoices", &before).1["data"], json!([]));
    }

    fn parse<T: miniserde::Deserialize>(object: &Value, kind: &str) {
        let text = object.to_string();
        assert!(
            miniserde::json::from_str::<T>(&text).is_ok(),
            "async-stripe cannot read this {kind}: {text}"
        );
    }

    /// Parses a Stripe object (or a list of them) the way payments'
    /// async-stripe client does.
    fn parse_object(object: &Value) {
        match object["object"].as_str().unwrap_or_default() {
            "customer" => parse::<stripe_core::Customer>(object, "customer"),
            "invoice" => parse::<stripe_billing::Invoice>(object, "invoice"),
            "invoiceitem" => parse::<stripe_billing::InvoiceItem>(object, "invoice item"),
            "invoice_payment" => parse::<stripe_billing::InvoicePayment>(object, "invoice payment"),
            "payment_intent" => parse::<stripe_core::PaymentIntent>(object, "PaymentIntent"),
            "charge" => parse::<stripe_core::Charge>(object, "charge"),
            "refund" => parse::<stripe_core::Refund>(object, "refund"),
            "credit_note" => parse::<stripe_billing::CreditNote>(object, "credit note"),
            "balance_transaction" => {
                parse::<stripe_core::BalanceTransaction>(object, "balance transaction");
            }
            "list" => {
                for item in object["data"].as_array().unwrap() {
                    parse_object(item);
                }
            }
            other => panic!("no async-stripe type checked for `{other}`: {object}"),
        }
    }

    /// Every answer of a run like the end-to-end test's (declines and
    /// refusals included) is read by async-stripe 1.0.0-rc.10's types, as
    /// payments reads them; a bare `{"id", "object"}` is not.
    #[test]
    fn every_answer_parses_with_async_stripe() {
        let mut stripe = Driver::new();
        let (invoice, intent) = stripe.open_invoice("charge_automatically", &["49900", "-100"]);
        let customer = stripe.state.invoices[&invoice]["customer"]
            .as_str()
            .unwrap()
            .to_owned();
        let tally_customer = "cus_000100";
        stripe.ok(
            true,
            &format!("/v1/customers/{customer}"),
            &[
                ("name", "Acme"),
                ("metadata[tally_customer_id]", tally_customer),
            ],
        );
        stripe.state.declines.insert(tally_customer.to_owned(), 1);
        let expand = [
            ("expand[0]", "payments"),
            ("expand[1]", "payments.data.payment.payment_intent"),
        ];
        let pay = format!("/v1/invoices/{invoice}/pay");
        assert_eq!(stripe.post(&pay, &expand).0, 402);
        stripe.get(&format!("/v1/payment_intents/{intent}"), &[]);
        let paid = stripe.ok(true, &pay, &expand);
        let charge = paid["payments"]["data"][0]["payment"]["payment_intent"]["latest_charge"]
            .as_str()
            .unwrap()
            .to_owned();
        stripe.ok(
            false,
            &format!("/v1/invoices/{invoice}"),
            &[
                ("expand[0]", "payments"),
                ("expand[1]", "payments.data.payment.charge"),
            ],
        );
        stripe.ok(
            false,
            &format!("/v1/charges/{charge}"),
            &[("expand[0]", "refunds")],
        );
        let refund = [
            ("charge", charge.as_str()),
            ("amount", "1000"),
            ("metadata[tally_refund_id]", "ref_1"),
        ];
        let refund = stripe.ok(true, "/v1/refunds", &refund);
        stripe.ok(
            false,
            &format!("/v1/refunds/{}", refund["id"].as_str().unwrap()),
            &[],
        );
        stripe.ok(
            true,
            "/v1/credit_notes",
            &[
                ("invoice", invoice.as_str()),
                ("amount", "500"),
                ("out_of_band_amount", "500"),
            ],
        );
        let (open, _) = stripe.open_invoice("send_invoice", &["1000"]);
        stripe.ok(true, &format!("/v1/invoices/{open}/send"), &[]);
        stripe.ok(
            true,
            "/v1/credit_notes",
            &[
                ("invoice", open.as_str()),
                ("amount", "100"),
                ("memo", "goodwill"),
            ],
        );
        let (voided, _) = stripe.open_invoice("charge_automatically", &["1000"]);
        stripe.ok(true, &format!("/v1/invoices/{voided}/void"), &expand);
        let (written_off, _) = stripe.open_invoice("charge_automatically", &["1000"]);
        stripe.ok(
            true,
            &format!("/v1/invoices/{written_off}/mark_uncollectible"),
            &expand,
        );
        for resource in ["invoices", "charges", "refunds", "balance_transactions"] {
            stripe.ok(
                false,
                &format!("/v1/{resource}"),
                &[("created[gte]", "0"), ("limit", "100")],
            );
        }
        stripe.ok(
            false,
            "/v1/invoice_payments",
            &[
                ("payment[type]", "payment_intent"),
                ("payment[payment_intent]", intent.as_str()),
            ],
        );
        stripe.get("/v1/invoices/in_missing", &[]);

        let answers = std::mem::take(&mut stripe.answers);
        assert!(answers.len() > 30, "{} answers", answers.len());
        for (status, body) in &answers {
            if *status == 200 {
                parse_object(body);
            } else {
                parse::<stripe::ApiErrors>(&body["error"], "error");
                if let Some(intent) = body["error"].get("payment_intent") {
                    parse_object(intent);
                }
            }
        }
        assert!(
            miniserde::json::from_str::<stripe_billing::Invoice>(
                r#"{"id": "in_1", "object": "invoice"}"#
            )
            .is_err(),
            "the check is strict"
        );
    }
}
