//! A running payments for tests: its own database, a manual clock, predictable
//! ids, Stripe played by wiremock, the gRPC API and the webhook endpoint on
//! free ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use prost::Message as _;
use serde_json::Value;
use tally_bus::consumer::{HandlerError, MessageHandler};
use tally_bus::{InProcessBus, Message, SharedBus};
use tally_domain::money::{Currency, Money};
use tally_payments::ledger::{self, Book};
use tally_payments::stripe::signature;
use tally_payments::{
    InvoiceEventsHandler, Payments, PaymentsDeps, SecretKey, StripeSecrets, WebhookSecret,
};
use tally_proto::common;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event};
use tally_proto::invoicing::invoice_service_server::{InvoiceService, InvoiceServiceServer};
use tally_proto::invoicing::{
    Address, CollectionMode, CreditNote, CreditNoteLine, CreditNoteReason, Customer, Invoice,
    InvoiceLine,
};
use tally_proto::invoicing::{
    RefundReservation, RefundReservationStatus, ReserveRefundRequest, ReserveRefundResponse,
};
use tally_proto::payments::payment_service_client::PaymentServiceClient;
use tally_proto::payments::{GetPaymentRequest, ListPaymentsRequest, Payment};
use tally_runtime::auth::AuthLayer;
use tally_runtime::clock::Clock;
use tally_runtime::config::PaymentsConfig;
use tally_runtime::peer::Peer;
use tally_runtime::{ManualClock, Shutdown, server};
use tally_testkit::SequentialIds;
use tally_testkit::postgres::{TestDatabase, database};
use tonic::transport::Channel;
use wiremock::MockServer;

pub const STRIPE_SECRET_KEY: &str = "sk_test_51TallySecretKeyNeverLogged";
pub const WEBHOOK_SECRET: &str = "whsec_TallySigningSecretNeverLogged";
pub const STRIPE_CUSTOMER: &str = "cus_Q1stripeAcme";
pub const STRIPE_INVOICE: &str = "in_1Acme";
pub const PAYMENT_INTENT: &str = "pi_1Acme";
pub const CHARGE: &str = "ch_1Acme";

/// The instant every test starts at.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

/// The config tests run with: Stripe at `stripe_uri`, fast retries, a short
/// timeout, dunning at days 1 and 3, giving up at day 5.
pub fn config(stripe_uri: &str) -> PaymentsConfig {
    PaymentsConfig {
        stripe_api_base_url: stripe_uri.to_owned(),
        stripe_max_attempts: 4,
        stripe_retry_base_delay_ms: 10,
        stripe_retry_max_delay_ms: 40,
        stripe_request_timeout_ms: 300,
        webhook_listen_addr: "127.0.0.1:0".parse().unwrap(),
        dunning_retry_days: vec![1, 3],
        dunning_final_after_days: 5,
        dunning_cancel_subscription: true,
        ..PaymentsConfig::default()
    }
}

/// Invoicing as payments sees it, for payments' own tests: `ReserveRefund`
/// against a creditable balance per invoice that a test sets (an invoice it
/// never set takes anything), idempotent by refund id like the real one.
/// The real rule, its races and its figures are tested in invoicing
/// (`crates/invoicing/tests/it/refund_balance.rs`).
#[derive(Debug, Clone, Default)]
pub struct FakeInvoicing {
    state: Arc<Mutex<FakeInvoicingState>>,
}

#[derive(Debug, Default)]
struct FakeInvoicingState {
    creditable: HashMap<String, rust_decimal::Decimal>,
    reservations: HashMap<String, (String, rust_decimal::Decimal)>,
    unavailable: bool,
}

impl FakeInvoicing {
    /// What remains creditable on `invoice_id` (e.g. after credit notes).
    pub fn set_creditable(&self, invoice_id: &str, amount: rust_decimal::Decimal) {
        self.state
            .lock()
            .unwrap()
            .creditable
            .insert(invoice_id.to_owned(), amount);
    }

    /// Makes `ReserveRefund` answer UNAVAILABLE (or answer again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.lock().unwrap().unavailable = unavailable;
    }

    /// The refund ids reserved, sorted, with their invoice and amount.
    pub fn reservations(&self) -> Vec<(String, String, String)> {
        let mut reservations: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .reservations
            .iter()
            .map(|(refund, (invoice, amount))| {
                (refund.clone(), invoice.clone(), amount.to_string())
            })
            .collect();
        reservations.sort();
        reservations
    }
}

#[tonic::async_trait]
impl InvoiceService for FakeInvoicing {
    async fn reserve_refund(
        &self,
        request: tonic::Request<ReserveRefundRequest>,
    ) -> Result<tonic::Response<ReserveRefundResponse>, tonic::Status> {
        let request = request.into_inner();
        let amount: rust_decimal::Decimal =
            request.amount.as_ref().unwrap().amount.parse().unwrap();
        let mut state = self.state.lock().unwrap();
        if state.unavailable {
            return Err(tonic::Status::unavailable("invoicing is restarting"));
        }
        let reservation = RefundReservation {
            refund_id: request.refund_id.clone(),
            invoice_id: request.invoice_id.clone(),
            amount: request.amount.clone(),
            status: RefundReservationStatus::Held as i32,
            credit_note_id: String::new(),
        };
        if let Some((invoice, held)) = state.reservations.get(&request.refund_id) {
            if *invoice != request.invoice_id || *held != amount {
                return Err(tonic::Status::already_exists("reserved otherwise"));
            }
            return Ok(tonic::Response::new(ReserveRefundResponse {
                reservation: Some(reservation),
                balance: None,
            }));
        }
        if let Some(creditable) = state.creditable.get_mut(&request.invoice_id) {
            if amount > *creditable {
                return Err(tonic::Status::failed_precondition(format!(
                    "refund {} of {amount} USD exceeds the {creditable} USD still creditable on invoice {}",
                    request.refund_id, request.invoice_id
                )));
            }
            *creditable -= amount;
        }
        state.reservations.insert(
            request.refund_id.clone(),
            (request.invoice_id.clone(), amount),
        );
        Ok(tonic::Response::new(ReserveRefundResponse {
            reservation: Some(reservation),
            balance: None,
        }))
    }
}

/// Serves `fake` on a free port; its address.
async fn serve_invoicing(fake: FakeInvoicing, shutdown: &Shutdown) -> String {
    let address = server::GrpcServer::new(
        move |routes: tonic::service::Routes| routes.add_service(InvoiceServiceServer::new(fake)),
        vec!["tally.invoicing.v1.InvoiceService"],
    )
    .spawn_on_loopback(AuthLayer::disabled(), shutdown)
    .await
    .expect("the fake invoicing serves");
    format!("http://{address}")
}

pub struct Harness {
    pub db: TestDatabase,
    pub clock: ManualClock,
    pub stripe: MockServer,
    pub invoicing: FakeInvoicing,
    pub payments: Payments,
    pub handler: InvoiceEventsHandler,
    pub client: PaymentServiceClient<Channel>,
    pub webhook_url: String,
    pub grpc_url: String,
    pub http: reqwest::Client,
    pub shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn harness() -> Harness {
    harness_on(Arc::new(InProcessBus::new())).await
}

/// [`harness`] on `bus`.
pub async fn harness_on(bus: SharedBus) -> Harness {
    harness_with(bus, test_secrets()).await
}

/// The Stripe keys tests run with.
pub fn test_secrets() -> StripeSecrets {
    StripeSecrets {
        api_key: Some(SecretKey::new(STRIPE_SECRET_KEY)),
        webhook_secret: Some(WebhookSecret::new(WEBHOOK_SECRET)),
    }
}

/// Payments on `bus` with `secrets`, Stripe played by a fresh mock server.
pub async fn harness_with(bus: SharedBus, secrets: StripeSecrets) -> Harness {
    let stripe = MockServer::start().await;
    let db = database().await;
    let clock = ManualClock::new(start_time());
    let shutdown = Shutdown::new();
    let invoicing = FakeInvoicing::default();
    let invoicing_url = serve_invoicing(invoicing.clone(), &shutdown).await;
    let payments = Payments::start(PaymentsDeps {
        pool: db.pool.clone(),
        bus,
        clock: Arc::new(clock.clone()),
        ids: Arc::new(SequentialIds::default()),
        config: config(&stripe.uri()),
        secrets,
        invoicing: Peer::lazy(&invoicing_url, None).unwrap(),
    })
    .await
    .expect("payments starts");
    let (webhook_address, _) = payments
        .spawn_webhook_listener(None, &shutdown)
        .await
        .expect("the webhook endpoint listens");
    let address = payments
        .grpc_server(16 * 1024 * 1024)
        .spawn_on_loopback(AuthLayer::disabled(), &shutdown)
        .await
        .expect("server runs");
    let client = PaymentServiceClient::connect(format!("http://{address}"))
        .await
        .expect("client connects");
    let handler = InvoiceEventsHandler::new(payments.core().clone());
    Harness {
        db,
        clock,
        stripe,
        invoicing,
        payments,
        handler,
        client,
        webhook_url: format!("http://{webhook_address}/webhooks/stripe"),
        grpc_url: format!("http://{address}"),
        http: reqwest::Client::new(),
        shutdown,
    }
}

/// An invoice as invoicing would finalize it.
#[derive(Debug, Clone)]
pub struct InvoiceSpec {
    pub invoice_id: String,
    pub customer_id: String,
    pub currency: String,
    /// (line id, amount)
    pub lines: Vec<(String, String)>,
    pub mode: CollectionMode,
    pub version: u64,
}

impl InvoiceSpec {
    pub fn usd(invoice_id: &str, lines: &[(&str, &str)]) -> Self {
        Self {
            invoice_id: invoice_id.to_owned(),
            customer_id: "cus_000100".to_owned(),
            currency: "USD".to_owned(),
            lines: lines
                .iter()
                .map(|(id, amount)| ((*id).to_owned(), (*amount).to_owned()))
                .collect(),
            mode: CollectionMode::ChargeAutomatically,
            version: 2,
        }
    }

    pub fn total(&self) -> String {
        let currency = Currency::from_code(&self.currency).unwrap();
        let total: rust_decimal::Decimal = self
            .lines
            .iter()
            .map(|(_, amount)| amount.parse::<rust_decimal::Decimal>().unwrap())
            .sum();
        Money::new(total, currency)
            .round(tally_domain::money::RoundingMode::HalfEven)
            .amount()
            .to_string()
    }

    fn money(&self, amount: &str) -> common::Money {
        common::Money {
            currency: self.currency.clone(),
            amount: amount.to_owned(),
        }
    }

    fn snapshot(&self) -> (Invoice, Customer) {
        let invoice = Invoice {
            id: self.invoice_id.clone(),
            number: "TALLY-000042".into(),
            customer_id: self.customer_id.clone(),
            subscription_id: "sub_000200".into(),
            collection_mode: self.mode.into(),
            currency: self.currency.clone(),
            lines: self
                .lines
                .iter()
                .map(|(id, amount)| InvoiceLine {
                    id: id.clone(),
                    description: format!("Line {id}"),
                    amount: Some(self.money(amount)),
                    ..Default::default()
                })
                .collect(),
            total: Some(self.money(&self.total())),
            amount_due: Some(self.money(&self.total())),
            version: self.version,
            ..Default::default()
        };
        let customer = Customer {
            id: self.customer_id.clone(),
            external_id: "acme".into(),
            name: "Acme GmbH".into(),
            billing_email: "billing@acme.test".into(),
            billing_address: Some(Address {
                line1: "Unter den Linden 1".into(),
                city: "Berlin".into(),
                postal_code: "10117".into(),
                country: "DE".into(),
                ..Default::default()
            }),
            currency: self.currency.clone(),
            collection_mode: self.mode.into(),
            net_terms_days: 14,
            ..Default::default()
        };
        (invoice, customer)
    }

    pub fn finalized(&self) -> InvoiceEvent {
        let (invoice, customer) = self.snapshot();
        InvoiceEvent {
            event_id: format!("ievt_{}_finalized", self.invoice_id),
            invoice_id: self.invoice_id.clone(),
            customer_id: self.customer_id.clone(),
            occurred_at: None,
            invoice: Some(invoice),
            customer: Some(customer),
            kind: Some(invoice_event::Kind::Finalized(invoice_event::Finalized {
                amount_due: Some(self.money(&self.total())),
            })),
        }
    }

    /// Finalized with `amount_due` less than the total (the rest settled
    /// from the wallet before finalization).
    pub fn finalized_with_due(&self, amount_due: &str) -> InvoiceEvent {
        let mut event = self.finalized();
        let due = self.money(amount_due);
        event.invoice.as_mut().unwrap().amount_due = Some(due.clone());
        event.kind = Some(invoice_event::Kind::Finalized(invoice_event::Finalized {
            amount_due: Some(due),
        }));
        event
    }

    /// A `CreditNoteIssued` for `amount` (`refund_id` set when a payments
    /// refund caused it).
    pub fn credit_note(
        &self,
        credit_note_id: &str,
        amount: &str,
        reason: CreditNoteReason,
        refund_id: &str,
    ) -> InvoiceEvent {
        let (mut invoice, customer) = self.snapshot();
        invoice.version = self.version + 1;
        let note = CreditNote {
            id: credit_note_id.to_owned(),
            number: "TALLY-CN-000001".into(),
            invoice_id: self.invoice_id.clone(),
            customer_id: self.customer_id.clone(),
            reason: reason.into(),
            memo: "Seats reduced".into(),
            lines: vec![CreditNoteLine {
                invoice_line_id: self.lines[0].0.clone(),
                description: "Seats reduced".into(),
                amount: Some(self.money(amount)),
            }],
            total: Some(self.money(amount)),
            credited_to_balance: false,
            refund_id: refund_id.to_owned(),
            created_at: None,
            refund_amount: None,
        };
        InvoiceEvent {
            event_id: format!("ievt_{credit_note_id}_issued"),
            invoice_id: self.invoice_id.clone(),
            customer_id: self.customer_id.clone(),
            occurred_at: None,
            invoice: Some(invoice),
            customer: Some(customer),
            kind: Some(invoice_event::Kind::CreditNoteIssued(
                invoice_event::CreditNoteIssued {
                    credit_note: Some(note),
                    credit_grant: None,
                },
            )),
        }
    }

    /// A `CreditNoteIssued` for `amount`, `refund` of which invoicing asks
    /// payments to refund (`CreditNote.refund_amount`).
    pub fn credit_note_refunding(
        &self,
        credit_note_id: &str,
        amount: &str,
        refund: &str,
        reason: CreditNoteReason,
    ) -> InvoiceEvent {
        let mut event = self.credit_note(credit_note_id, amount, reason, "");
        if let Some(invoice_event::Kind::CreditNoteIssued(issued)) = &mut event.kind {
            issued.credit_note.as_mut().unwrap().refund_amount = Some(self.money(refund));
        }
        event
    }

    pub fn voided(&self) -> InvoiceEvent {
        let (mut invoice, customer) = self.snapshot();
        invoice.version = self.version + 1;
        InvoiceEvent {
            event_id: format!("ievt_{}_voided", self.invoice_id),
            invoice_id: self.invoice_id.clone(),
            customer_id: self.customer_id.clone(),
            occurred_at: None,
            invoice: Some(invoice),
            customer: Some(customer),
            kind: Some(invoice_event::Kind::Voided(invoice_event::Voided {
                reason: "duplicate".into(),
            })),
        }
    }
}

/// The bus message invoicing would publish for `event`.
pub fn message(event: &InvoiceEvent) -> Message {
    Message::new("tally.events.v1.InvoiceEvent", 1, event.encode_to_vec())
        .with_id(event.event_id.clone())
        .with_ordering_key(event.customer_id.clone())
}

impl Harness {
    /// Hands `event` to the invoice-events handler, as the consumer would.
    pub async fn deliver(&self, event: &InvoiceEvent) -> Result<(), HandlerError> {
        self.handler.handle(&message(event), 1).await
    }

    /// The payment of `invoice_id`, as `GetPayment` returns it.
    pub async fn payment_of(&self, invoice_id: &str) -> Payment {
        let mut client = self.client.clone();
        let listed = client
            .list_payments(ListPaymentsRequest {
                invoice_id: invoice_id.into(),
                ..Default::default()
            })
            .await
            .expect("payments are listed")
            .into_inner()
            .payments;
        assert_eq!(listed.len(), 1, "one payment per invoice");
        client
            .get_payment(GetPaymentRequest {
                payment_id: listed[0].id.clone(),
            })
            .await
            .expect("the payment is found")
            .into_inner()
            .payment
            .unwrap()
    }

    /// Every `PaymentEvent` written to the outbox, in order.
    pub async fn payment_events(&self) -> Vec<PaymentEvent> {
        let rows: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT message_id, topic, payload FROM payments.outbox ORDER BY seq")
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, topic, payload)| {
                assert_eq!(topic, "payment-events");
                let event = PaymentEvent::decode(payload.as_slice()).unwrap();
                assert_eq!(event.event_id, id, "the message id is the event id");
                event
            })
            .collect()
    }

    /// Balance of a ledger book.
    pub async fn balance(&self, book: Book, currency: Currency) -> Money {
        let mut connection = self.db.pool.acquire().await.unwrap();
        ledger::balance(&mut connection, book, currency)
            .await
            .unwrap()
    }

    /// Balance of a ledger book in US dollars.
    pub async fn usd(&self, book: Book) -> rust_decimal::Decimal {
        self.balance(book, Currency::USD).await.amount()
    }

    /// Posts a signed webhook (signed now, on the service clock).
    pub async fn webhook(&self, event: &Value) -> (u16, String) {
        let body = serde_json::to_vec(event).unwrap();
        let signature = signature::sign(
            &WebhookSecret::new(WEBHOOK_SECRET),
            self.clock.now().timestamp(),
            &body,
        );
        self.post_webhook(body, Some(signature)).await
    }

    /// Posts `body` with `signature` as the `Stripe-Signature` header.
    pub async fn post_webhook(&self, body: Vec<u8>, signature: Option<String>) -> (u16, String) {
        let mut request = self
            .http
            .post(&self.webhook_url)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = request.send().await.expect("the webhook endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Requests Stripe received for `method` and `path`.
    pub async fn stripe_requests(&self, method: &str, path: &str) -> Vec<wiremock::Request> {
        self.stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|request| request.method.as_str() == method && request.url.path() == path)
            .collect()
    }

    /// The `Idempotency-Key`s Stripe received on `POST path`, in order.
    pub async fn keys(&self, path: &str) -> Vec<String> {
        self.stripe_requests("POST", path)
            .await
            .iter()
            .map(idempotency_key)
            .collect()
    }

    /// The reason a sync failed (asserting the invoice is `sync_failed`).
    pub async fn sync_error(&self, invoice_id: &str) -> String {
        let (status, error): (String, String) = sqlx::query_as(
            "SELECT status, sync_error FROM payments.invoices WHERE invoice_id = $1",
        )
        .bind(invoice_id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        assert_eq!(status, "sync_failed");
        error
    }

    /// Count of rows in a payments table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM payments.{table}"
        )))
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

/// The form fields of a request body.
pub fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// One form field.
pub fn field(request: &wiremock::Request, key: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

/// The `Idempotency-Key` of a request.
pub fn idempotency_key(request: &wiremock::Request) -> String {
    request
        .headers
        .get("Idempotency-Key")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
