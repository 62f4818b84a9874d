//! The Orb webhook endpoint: `POST /webhooks/orb`, beside the gRPC server
//! like payments' Stripe endpoint.
//!
//! 1. The delivery is verified by the biller ([`crate::orb::webhook`]:
//!    `X-Orb-Signature` over `X-Orb-Timestamp` and the raw body, the
//!    timestamp within five minutes of the service clock) before anything is
//!    read or written; a forged, stale or unsigned one gets 400 with the
//!    reason and changes nothing; without a secret, 503.
//! 2. The event is recorded once by its id (`connectors.orb_webhook_events`):
//!    Orb redelivers until it gets a 2xx, and a repeat answers 200
//!    `duplicate` without effect.
//!
//! What an event changes in Tally (an Orb invoice issued, for parity) comes
//! with the parity reports; today events are recorded.

pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sqlx::PgPool;
use tally_runtime::{SharedClock, Shutdown};
use tokio::task::JoinHandle;

use crate::biller::{ExternalBiller, WebhookDelivery, WebhookRefusal};

/// The path Orb posts to.
pub const WEBHOOK_PATH: &str = "/webhooks/orb";

/// What the endpoint needs.
#[derive(Clone)]
pub struct WebhookState {
    pool: PgPool,
    clock: SharedClock,
    biller: Option<Arc<dyn ExternalBiller>>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebhookState")
            .field("biller", &self.biller.as_ref().map(|biller| biller.name()))
            .finish_non_exhaustive()
    }
}

impl WebhookState {
    /// The endpoint recording in `pool`; without a biller every delivery is refused.
    pub fn new(pool: PgPool, clock: SharedClock, biller: Option<Arc<dyn ExternalBiller>>) -> Self {
        Self {
            pool,
            clock,
            biller,
        }
    }
}

/// The router serving [`WEBHOOK_PATH`].
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .with_state(Arc::new(state))
}

/// Serves `router` on a listener already bound until `shutdown`.
pub fn serve_on(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    tally_runtime::http::serve_router(router, listener, shutdown, "orb webhook endpoint")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[tracing::instrument(name = "orb.webhook", skip_all)]
async fn receive(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(biller) = &state.biller else {
        tracing::error!("orb webhook refused: ORB_API_KEY is not set");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Orb connector is not configured (ORB_API_KEY)".into(),
        );
    };
    let delivery = WebhookDelivery {
        timestamp: header(&headers, "X-Orb-Timestamp"),
        signature: header(&headers, "X-Orb-Signature"),
        body: &body,
    };
    let event = match biller.verify_webhook(&delivery, state.clock.now()) {
        Ok(event) => event,
        Err(WebhookRefusal::NoSecret) => {
            tracing::error!("orb webhook refused: ORB_WEBHOOK_SECRET is not set");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                WebhookRefusal::NoSecret.to_string(),
            );
        }
        Err(refusal) => {
            tracing::warn!(%refusal, "orb webhook refused");
            return (StatusCode::BAD_REQUEST, refusal.to_string());
        }
    };
    match store::record_once(&state.pool, &event, state.clock.now()).await {
        Ok(true) => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, "orb webhook received");
            (StatusCode::OK, "received".into())
        }
        Ok(false) => {
            tracing::info!(event_id = %event.id, "orb webhook already received");
            (StatusCode::OK, "duplicate".into())
        }
        Err(error) => {
            tracing::error!(event_id = %event.id, %error, "orb webhook not recorded; Orb will redeliver");
            (StatusCode::SERVICE_UNAVAILABLE, "not recorded".into())
        }
    }
}
