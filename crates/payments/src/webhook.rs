//! The Stripe webhook endpoint: `POST /webhooks/stripe`.
//!
//! 1. The `Stripe-Signature` is checked against the raw body (signing
//!    secret, timestamp tolerance on the service clock, constant-time
//!    comparison, any of several `v1` signatures) before anything is parsed;
//!    a bad, stale or missing signature and a malformed body get 400 and
//!    change nothing.
//! 2. An event id already applied answers 200 at once (Stripe redelivers).
//! 3. Events can arrive in any order and describe the object as it was, so
//!    payments fetches the object's *current* state from Stripe (invoice,
//!    PaymentIntent → its invoice, charge with its refunds) and moves its own
//!    state toward it; only forward moves happen (a late `payment_failed`
//!    after `paid` changes nothing).
//! 4. The effect, the ledger entries, the `PaymentEvent` (outbox) and the
//!    event id are committed in one transaction.
//!
//! An event about a Tally invoice payments does not know yet answers 503, so
//! Stripe delivers it again later; an event about anything else is recorded
//! as ignored (200, the reason as its outcome). Whether an object is Tally's
//! is decided from the event and payments' own rows before any Stripe read
//! (Tally's invoices, customers and refunds carry `tally_…_id` metadata;
//! its PaymentIntents and charges belong to customers it mapped), so another
//! integration's events cost no Stripe call and are acknowledged even
//! without `STRIPE_API_KEY`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use tally_proto::events::payment_event::{self, Kind};
use tally_runtime::Shutdown;
use tokio::task::JoinHandle;

use crate::core::{AttemptOutcome, Core};
use crate::error::PaymentsError;
use crate::ledger::{self, Book};
use crate::store::{self, PaymentKey, PaymentRow, PaymentState};
use crate::stripe::signature::{self, WebhookSecret};
use crate::stripe::{
    RemoteCharge, RemoteDispute, RemoteInvoice, RemoteInvoiceStatus, RemoteRefundStatus,
    StripeError,
};
use crate::wire::money;
use crate::{events, metrics};

/// The path Stripe posts to.
pub const WEBHOOK_PATH: &str = "/webhooks/stripe";

/// What the endpoint needs.
#[derive(Debug, Clone)]
pub struct WebhookState {
    core: Core,
    secret: Option<WebhookSecret>,
    tolerance_seconds: i64,
}

impl WebhookState {
    /// The endpoint over `core`; without a secret every delivery is refused.
    pub fn new(core: Core, secret: Option<WebhookSecret>, tolerance_seconds: u64) -> Self {
        Self {
            core,
            secret,
            tolerance_seconds: i64::try_from(tolerance_seconds).unwrap_or(i64::MAX),
        }
    }
}

/// The router serving [`WEBHOOK_PATH`].
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .with_state(Arc::new(state))
}

/// Serves `router` on `address` until `shutdown`.
pub async fn serve(
    router: Router,
    address: SocketAddr,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    serve_on(router, listener, shutdown)
}

/// Serves `router` on a listener already bound (so a taken port is found
/// before anything else starts) until `shutdown`.
pub fn serve_on(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "stripe webhook endpoint listening");
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "webhook accept failed");
                        continue;
                    }
                },
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(error) = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "webhook connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
}

/// A verified event's envelope.
#[derive(Debug, Clone)]
struct Envelope {
    id: String,
    kind: String,
    created: DateTime<Utc>,
    object: Value,
}

fn envelope(body: &[u8]) -> Result<Envelope, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("event `{field}` is missing"))
    };
    let id = text("id")?;
    let kind = text("type")?;
    let created = value
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
        .ok_or("event `created` is missing")?;
    let object = value
        .get("data")
        .and_then(|data| data.get("object"))
        .filter(|object| object.is_object())
        .cloned()
        .ok_or("event `data.object` is missing")?;
    Ok(Envelope {
        id,
        kind,
        created,
        object,
    })
}

/// The id `field` of an event's object names: a string, or an expanded
/// object's `id`; `None` when absent, null or empty.
fn reference(object: &Value, field: &str) -> Option<String> {
    let value = object.get(field)?;
    value
        .as_str()
        .or_else(|| value.get("id").and_then(Value::as_str))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// `metadata.<key>` of an event's object, when set and not empty.
fn metadata<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(key))
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

#[tracing::instrument(name = "stripe.webhook", skip_all, fields(stripe_event_id = tracing::field::Empty))]
async fn receive(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(secret) = &state.secret else {
        tracing::error!("webhook refused: STRIPE_WEBHOOK_SECRET is not set");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook secret not configured".into(),
        );
    };
    let header = headers
        .get("Stripe-Signature")
        .and_then(|value| value.to_str().ok());
    let now = state.core.clock.now();
    if let Err(error) = signature::verify(secret, header, &body, now, state.tolerance_seconds) {
        metrics::webhook("unverified", "rejected");
        tracing::warn!(%error, "webhook refused");
        return (StatusCode::BAD_REQUEST, error.to_string());
    }
    let event = match envelope(&body) {
        Ok(event) => event,
        Err(reason) => {
            metrics::webhook("malformed", "rejected");
            tracing::warn!(%reason, "webhook refused");
            return (StatusCode::BAD_REQUEST, reason);
        }
    };
    let span = tracing::Span::current();
    span.record("stripe_event_id", event.id.as_str());
    match state.apply(&event).await {
        Ok(outcome) => {
            metrics::webhook(&event.kind, outcome);
            tracing::info!(event_id = %event.id, event_type = %event.kind, outcome, "webhook applied");
            (StatusCode::OK, outcome.to_owned())
        }
        Err(WebhookError::NotYetKnown(invoice)) => {
            metrics::webhook(&event.kind, "deferred");
            tracing::info!(event_id = %event.id, %invoice, "webhook about an invoice not collected yet; Stripe will redeliver");
            (StatusCode::SERVICE_UNAVAILABLE, "not known yet".into())
        }
        Err(WebhookError::Payments(error)) => {
            metrics::webhook(&event.kind, "failed");
            tracing::error!(event_id = %event.id, event_type = %event.kind, %error, "webhook failed; Stripe will redeliver");
            let status = if error.is_transient() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, "failed".into())
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("invoice {0} is not known yet")]
    NotYetKnown(String),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(error: sqlx::Error) -> Self {
        WebhookError::Payments(error.into())
    }
}

impl From<StripeError> for WebhookError {
    fn from(error: StripeError) -> Self {
        WebhookError::Payments(error.into())
    }
}

/// What an event asks for, worked out from Stripe's current state.
#[derive(Debug)]
enum Plan {
    /// Nothing to do (not Tally's, or a type payments does not act on).
    Ignore(&'static str),
    /// Move the payment toward the Stripe invoice's current state.
    Invoice {
        payment_id: String,
        invoice: RemoteInvoice,
        failure: (String, String),
    },
    /// Record the charge's refunds.
    Refunds {
        payment_id: String,
        charge: RemoteCharge,
    },
    /// Refresh what payments knows of a Stripe customer.
    Customer {
        stripe_customer_id: String,
        has_default_payment_method: bool,
    },
    /// Record a dispute.
    Dispute {
        payment_id: String,
        dispute: RemoteDispute,
    },
}

impl WebhookState {
    async fn apply(&self, event: &Envelope) -> Result<&'static str, WebhookError> {
        let seen: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM payments.webhook_events WHERE stripe_event_id = $1")
                .bind(&event.id)
                .fetch_optional(&self.core.pool)
                .await?;
        if seen.is_some() {
            return Ok("duplicate");
        }
        let plan = self.plan(event).await?;
        let now = self.core.clock.now();
        let mut transaction = self.core.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO payments.webhook_events (stripe_event_id, event_type, stripe_created_at, received_at, outcome) \
             VALUES ($1, $2, $3, $4, '') ON CONFLICT DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(event.created)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok("duplicate");
        }
        let outcome = self.execute(&mut transaction, event, plan, now).await?;
        sqlx::query("UPDATE payments.webhook_events SET outcome = $2 WHERE stripe_event_id = $1")
            .bind(&event.id)
            .bind(outcome)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn plan(&self, event: &Envelope) -> Result<Plan, WebhookError> {
        let object_id = event
            .object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match event.kind.as_str() {
            "invoice.paid"
            | "invoice.payment_succeeded"
            | "invoice.payment_failed"
            | "invoice.payment_action_required"
            | "invoice.finalized"
            | "invoice.voided"
            | "invoice.marked_uncollectible" => {
                let tally_invoice = metadata(&event.object, "tally_invoice_id").map(str::to_owned);
                self.plan_invoice(&object_id, tally_invoice).await
            }
            "payment_intent.succeeded" | "payment_intent.payment_failed" => {
                let known = [PaymentKey::StripePaymentIntent(&object_id)];
                if let Some(reason) = self.foreign_payment(&event.object, &known).await? {
                    return Ok(Plan::Ignore(reason));
                }
                let intent = self.core.stripe.get_payment_intent(&object_id).await?;
                let Some(stripe_invoice) = intent.invoice.clone() else {
                    return Ok(Plan::Ignore("ignored: not an invoice payment"));
                };
                self.plan_invoice(&stripe_invoice, None).await
            }
            "charge.refunded" | "charge.refund.updated" => {
                let charge_id = if event.kind == "charge.refund.updated" {
                    let refund = &event.object;
                    if let Some(reason) = self.foreign_refund(&object_id, refund).await? {
                        return Ok(Plan::Ignore(reason));
                    }
                    reference(refund, "charge").unwrap_or_default()
                } else {
                    let intent = reference(&event.object, "payment_intent").unwrap_or_default();
                    let known = [
                        PaymentKey::StripeCharge(&object_id),
                        PaymentKey::StripePaymentIntent(&intent),
                    ];
                    if let Some(reason) = self.foreign_payment(&event.object, &known).await? {
                        return Ok(Plan::Ignore(reason));
                    }
                    object_id
                };
                let charge = self.core.stripe.get_charge(&charge_id).await?;
                let Some(payment) = self.payment_of_charge(&charge).await? else {
                    return Ok(Plan::Ignore("ignored: not a Tally charge"));
                };
                Ok(Plan::Refunds {
                    payment_id: payment.id,
                    charge,
                })
            }
            "customer.updated" => {
                // Payments maps every Stripe customer it creates before
                // anything can happen to it, so an unmapped one is another
                // integration's (or another Tally's): no Stripe read for it.
                if !self.is_tally_customer(&object_id).await? {
                    return Ok(Plan::Ignore(
                        if metadata(&event.object, "tally_customer_id").is_some() {
                            "ignored: a Tally customer this installation does not map"
                        } else {
                            "ignored: not a Tally customer"
                        },
                    ));
                }
                // The current state, not the event's snapshot.
                let customer = self.core.stripe.get_customer(&object_id).await?;
                Ok(Plan::Customer {
                    stripe_customer_id: customer.id,
                    has_default_payment_method: customer.has_default_payment_method,
                })
            }
            "charge.dispute.created" => {
                let dispute = RemoteDispute::from_json(&event.object)?;
                let mut connection = self.core.pool.acquire().await?;
                let payment = store::payment(
                    &mut connection,
                    PaymentKey::StripeCharge(&dispute.charge),
                    false,
                )
                .await?;
                Ok(match payment {
                    Some(payment) => Plan::Dispute {
                        payment_id: payment.id,
                        dispute,
                    },
                    None => Plan::Ignore("ignored: not a Tally charge"),
                })
            }
            _ => Ok(Plan::Ignore("ignored: event type not handled")),
        }
    }

    /// Why a PaymentIntent or charge is not Tally's, when the event and
    /// payments' own rows prove it (no Stripe read): Tally collects only
    /// through Stripe invoices of the Stripe customers it created and mapped
    /// first, so a payment that payments does not know by any of `known`, and
    /// whose `customer` is absent or unmapped, belongs to another integration.
    async fn foreign_payment(
        &self,
        object: &Value,
        known: &[PaymentKey<'_>],
    ) -> Result<Option<&'static str>, WebhookError> {
        if self.any_payment(known).await? {
            return Ok(None);
        }
        let Some(customer) = reference(object, "customer") else {
            return Ok(Some("ignored: no customer, not a Tally payment"));
        };
        if self.is_tally_customer(&customer).await? {
            // Tally's customer: possibly an invoice payment payments has not
            // linked yet; Stripe's current state decides.
            return Ok(None);
        }
        Ok(Some("ignored: not a Tally customer's payment"))
    }

    /// Why a refund (`charge.refund.updated`) is not Tally's, without a
    /// Stripe read: Tally's own refunds carry `metadata.tally_refund_id`; a
    /// refund made in the dashboard matters only once `charge.refunded`
    /// recorded it (by its id) or the charge is a known payment's.
    async fn foreign_refund(
        &self,
        stripe_refund_id: &str,
        refund: &Value,
    ) -> Result<Option<&'static str>, WebhookError> {
        if metadata(refund, "tally_refund_id").is_some() {
            return Ok(None);
        }
        let recorded: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM payments.refunds WHERE stripe_refund_id = $1")
                .bind(stripe_refund_id)
                .fetch_optional(&self.core.pool)
                .await?;
        if recorded.is_some() {
            return Ok(None);
        }
        let charge = reference(refund, "charge").unwrap_or_default();
        let intent = reference(refund, "payment_intent").unwrap_or_default();
        let known = [
            PaymentKey::StripeCharge(&charge),
            PaymentKey::StripePaymentIntent(&intent),
        ];
        if self.any_payment(&known).await? {
            return Ok(None);
        }
        Ok(Some("ignored: not a Tally refund"))
    }

    /// Whether payments has a payment under any of `keys` (empty ids skipped).
    async fn any_payment(&self, keys: &[PaymentKey<'_>]) -> Result<bool, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        for key in keys {
            let id = match *key {
                PaymentKey::Id(id)
                | PaymentKey::Invoice(id)
                | PaymentKey::StripeInvoice(id)
                | PaymentKey::StripeCharge(id)
                | PaymentKey::StripePaymentIntent(id) => id,
            };
            if !id.is_empty()
                && store::payment(&mut connection, *key, false)
                    .await?
                    .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether payments created (and mapped) this Stripe customer.
    async fn is_tally_customer(&self, stripe_customer_id: &str) -> Result<bool, WebhookError> {
        let known: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM payments.stripe_customers WHERE stripe_customer_id = $1",
        )
        .bind(stripe_customer_id)
        .fetch_optional(&self.core.pool)
        .await?;
        Ok(known.is_some())
    }

    async fn plan_invoice(
        &self,
        stripe_invoice_id: &str,
        tally_invoice: Option<String>,
    ) -> Result<Plan, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        let mut payment = store::payment(
            &mut connection,
            PaymentKey::StripeInvoice(stripe_invoice_id),
            false,
        )
        .await?;
        if payment.is_none()
            && let Some(tally_invoice) = &tally_invoice
        {
            payment =
                store::payment(&mut connection, PaymentKey::Invoice(tally_invoice), false).await?;
            if payment.is_none() {
                return Err(WebhookError::NotYetKnown(tally_invoice.clone()));
            }
        }
        drop(connection);
        let Some(payment) = payment else {
            return Ok(Plan::Ignore("ignored: not a Tally invoice"));
        };
        let invoice = self.core.stripe.get_invoice(stripe_invoice_id).await?;
        let mut failure = (String::new(), String::new());
        if invoice.status == RemoteInvoiceStatus::Open
            && invoice.attempt_count > payment.attempt_count
            && let Some(intent) = &invoice.payment_intent
        {
            let intent = self.core.stripe.get_payment_intent(intent).await?;
            failure = if intent.failure_code.is_empty() && intent.status == "requires_action" {
                // 3-D Secure or another step only the customer can take.
                (
                    "authentication_required".into(),
                    "The customer must authenticate the payment.".into(),
                )
            } else {
                (intent.failure_code, intent.failure_message)
            };
        }
        Ok(Plan::Invoice {
            payment_id: payment.id,
            invoice,
            failure,
        })
    }

    async fn payment_of_charge(
        &self,
        charge: &RemoteCharge,
    ) -> Result<Option<PaymentRow>, WebhookError> {
        let mut connection = self.core.pool.acquire().await?;
        if let Some(payment) =
            store::payment(&mut connection, PaymentKey::StripeCharge(&charge.id), false).await?
        {
            return Ok(Some(payment));
        }
        if let Some(intent) = &charge.payment_intent
            && let Some(payment) = store::payment(
                &mut connection,
                PaymentKey::StripePaymentIntent(intent),
                false,
            )
            .await?
        {
            return Ok(Some(payment));
        }
        match &charge.invoice {
            Some(invoice) => {
                Ok(
                    store::payment(&mut connection, PaymentKey::StripeInvoice(invoice), false)
                        .await?,
                )
            }
            None => Ok(None),
        }
    }

    async fn execute(
        &self,
        connection: &mut PgConnection,
        event: &Envelope,
        plan: Plan,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let payment_id = match &plan {
            Plan::Ignore(outcome) => return Ok(outcome),
            Plan::Customer {
                stripe_customer_id,
                has_default_payment_method,
            } => {
                sqlx::query(
                    "UPDATE payments.stripe_customers SET has_default_payment_method = $2, synced_at = $3 \
                     WHERE stripe_customer_id = $1",
                )
                .bind(stripe_customer_id)
                .bind(has_default_payment_method)
                .bind(now)
                .execute(&mut *connection)
                .await?;
                return Ok("customer refreshed");
            }
            Plan::Invoice { payment_id, .. }
            | Plan::Refunds { payment_id, .. }
            | Plan::Dispute { payment_id, .. } => payment_id.clone(),
        };
        let Some(mut payment) =
            store::payment(connection, PaymentKey::Id(&payment_id), true).await?
        else {
            return Ok("ignored: payment gone");
        };
        let event_id = format!("pevt_{}", event.id);
        let outcome = match plan {
            Plan::Ignore(outcome) => outcome,
            Plan::Customer { .. } => "customer refreshed",
            Plan::Invoice {
                invoice, failure, ..
            } => {
                self.move_toward_invoice(connection, &mut payment, invoice, failure, &event_id, now)
                    .await?
            }
            Plan::Refunds { charge, .. } => {
                self.record_refunds(connection, &mut payment, &charge, now)
                    .await?
            }
            Plan::Dispute { dispute, .. } => {
                self.record_dispute(connection, &mut payment, &dispute, &event_id, now)
                    .await?
            }
        };
        Ok(outcome)
    }

    async fn move_toward_invoice(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        invoice: RemoteInvoice,
        (failure_code, failure_message): (String, String),
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        match invoice.status {
            RemoteInvoiceStatus::Paid => {
                if invoice.payment_intent.is_some() {
                    payment.stripe_payment_intent_id = invoice.payment_intent.clone();
                }
                if payment.attempt_count < invoice.attempt_count.max(1)
                    && payment.status.is_collectible()
                {
                    let number = invoice.attempt_count.max(payment.attempt_count + 1);
                    store::insert_attempt(
                        connection,
                        &payment.id,
                        &store::Attempt {
                            number,
                            attempted_at: now,
                            succeeded: true,
                            failure_code: String::new(),
                            failure_message: String::new(),
                            stripe_payment_intent_id: invoice
                                .payment_intent
                                .clone()
                                .unwrap_or_default(),
                            stripe_charge_id: invoice.charge.clone().unwrap_or_default(),
                        },
                    )
                    .await?;
                    payment.attempt_count = number;
                }
                let moved = self
                    .core
                    .mark_succeeded(connection, payment, invoice.charge, event_id, now)
                    .await?;
                Ok(if moved {
                    "payment succeeded"
                } else {
                    "already settled"
                })
            }
            RemoteInvoiceStatus::Open => {
                if invoice.attempt_count <= payment.attempt_count
                    || !payment.status.is_collectible()
                {
                    return Ok("no change");
                }
                let outcome = AttemptOutcome::Failed {
                    code: if failure_code.is_empty() {
                        "payment_failed".into()
                    } else {
                        failure_code
                    },
                    message: failure_message,
                    payment_intent: invoice.payment_intent,
                    charge: invoice.charge,
                };
                self.core
                    .apply_attempt(connection, payment, invoice.attempt_count, &outcome, now)
                    .await?;
                Ok("payment failed")
            }
            RemoteInvoiceStatus::Uncollectible => {
                let moved = self
                    .core
                    .mark_uncollectible(connection, payment, event_id, now)
                    .await?;
                Ok(if moved {
                    "marked uncollectible"
                } else {
                    "already settled"
                })
            }
            RemoteInvoiceStatus::Void => {
                if !payment.status.is_collectible() {
                    return Ok("already settled");
                }
                payment.status = PaymentState::Canceled;
                payment.next_retry_at = None;
                payment.updated_at = now;
                store::update_payment(connection, payment).await?;
                crate::core::set_invoice_status(connection, &payment.invoice_id, "void", now)
                    .await?;
                Ok("payment canceled")
            }
            RemoteInvoiceStatus::Draft => Ok("no change"),
        }
    }

    async fn record_refunds(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        charge: &RemoteCharge,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let mut recorded = 0;
        for remote in &charge.refunds {
            let known: Option<(String, String)> = sqlx::query_as(
                "SELECT id, status FROM payments.refunds WHERE payment_id = $1 \
                 AND (stripe_refund_id = $2 OR id = $3) LIMIT 1",
            )
            .bind(&payment.id)
            .bind(&remote.id)
            .bind(remote.tally_refund_id.as_deref().unwrap_or(""))
            .fetch_optional(&mut *connection)
            .await?;
            let refund_id = match known {
                Some((_, status)) if status != "pending" => continue,
                Some((id, _)) => id,
                None => {
                    // Refunded in the Stripe dashboard: Tally learns it here.
                    let reserved = store::refunds_total(&mut *connection, &payment.id).await?
                        + remote.amount.amount();
                    if remote.amount.currency() != payment.amount.currency()
                        || reserved > payment.amount.amount()
                    {
                        // Stripe and Tally disagree about the payment itself:
                        // left for reconciliation, not forced into the books.
                        tracing::error!(payment_id = %payment.id, stripe_refund_id = %remote.id, "a Stripe refund does not fit the payment; not recorded");
                        continue;
                    }
                    let id = self.core.ids.new_id("ref");
                    sqlx::query(
                        "INSERT INTO payments.refunds (id, payment_id, invoice_id, amount, currency, reason, memo, \
                         status, stripe_refund_id, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'requested_by_customer', 'refunded in Stripe', 'pending', $6, $7, $7)",
                    )
                    .bind(&id)
                    .bind(&payment.id)
                    .bind(&payment.invoice_id)
                    .bind(remote.amount.amount())
                    .bind(remote.amount.currency().code())
                    .bind(&remote.id)
                    .bind(now)
                    .execute(&mut *connection)
                    .await?;
                    id
                }
            };
            match remote.status {
                RemoteRefundStatus::Succeeded => {
                    if self
                        .core
                        .record_refund_succeeded(connection, payment, &refund_id, &remote.id, now)
                        .await?
                    {
                        recorded += 1;
                    }
                }
                RemoteRefundStatus::Failed => {
                    // Through the core, so invoicing hears `RefundFailed` and
                    // releases what it reserved for the refund (a bare status
                    // update kept that amount reserved forever).
                    if self
                        .core
                        .record_refund_failed(
                            connection,
                            payment,
                            &refund_id,
                            crate::core::RefundFailure {
                                reason: &remote.failure_reason,
                                code: "",
                                stripe_refund_id: Some(&remote.id),
                            },
                            now,
                        )
                        .await?
                    {
                        recorded += 1;
                    }
                }
                RemoteRefundStatus::Pending => {
                    sqlx::query(
                        "UPDATE payments.refunds SET stripe_refund_id = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(&refund_id)
                    .bind(&remote.id)
                    .bind(now)
                    .execute(&mut *connection)
                    .await?;
                }
            }
        }
        Ok(if recorded > 0 {
            "refunds recorded"
        } else {
            "no change"
        })
    }

    async fn record_dispute(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        dispute: &RemoteDispute,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let inserted = sqlx::query(
            "INSERT INTO payments.disputes (stripe_dispute_id, payment_id, stripe_charge_id, amount, currency, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&dispute.id)
        .bind(&payment.id)
        .bind(&dispute.charge)
        .bind(dispute.amount.amount())
        .bind(dispute.amount.currency().code())
        .bind(&dispute.reason)
        .bind(now)
        .execute(&mut *connection)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok("already recorded");
        }
        payment.status = PaymentState::Disputed;
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        let withdrawn = ledger::transfer(
            &format!("dispute:{}:created", dispute.id),
            now,
            Book::Disputes,
            Book::StripeBalance,
            dispute.amount,
        )
        .map_err(PaymentsError::from)?;
        ledger::post(connection, &withdrawn, now)
            .await
            .map_err(PaymentsError::from)?;
        events::publish(
            connection,
            event_id.to_owned(),
            payment,
            now,
            Kind::DisputeCreated(payment_event::DisputeCreated {
                stripe_dispute_id: dispute.id.clone(),
                stripe_charge_id: dispute.charge.clone(),
                amount: Some(money(&dispute.amount)),
                reason: dispute.reason.clone(),
            }),
        )
        .await?;
        Ok("dispute recorded")
    }
}
