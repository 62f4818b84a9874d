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
//!
//! The endpoint and its errors are here; `envelope` reads a verified body,
//! `dispatch` plans an event and applies it in one transaction, `ownership`
//! decides whether an object is Tally's without a Stripe read, and
//! `invoices`, `refunds` and `disputes` move payments' state for each kind
//! of object.

mod dispatch;
mod disputes;
mod envelope;
mod invoices;
mod ownership;
mod refunds;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tally_runtime::Shutdown;
use tokio::task::JoinHandle;

use crate::core::Core;
use crate::error::PaymentsError;
use crate::metrics;
use crate::stripe::StripeError;
use crate::stripe::signature::{self, WebhookSecret};

use self::envelope::envelope;

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
    tally_runtime::http::serve_router(router, listener, shutdown, "stripe webhook endpoint")
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
