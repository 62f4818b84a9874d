//! The Orb webhook endpoint over HTTP: a signed event is recorded once, a
//! duplicate is acknowledged without effect, a forged, stale or unsigned one
//! is refused with the reason.

use std::sync::Arc;

use serde_json::json;
use tally_connectors::ExternalBiller;
use tally_connectors::orb::webhook::sign;
use tally_connectors::orb::{Jitter, OrbWebhookSecret};
use tally_connectors::webhooks::{self, WEBHOOK_PATH, WebhookState};
use tally_runtime::Shutdown;

use crate::billing_fake::{BillingHarness, fixture};

pub const SECRET: &str = "orb_webhook_secret_1";

/// An `invoice.issued` event as Orb sends it (expanded payload).
pub fn invoice_issued(id: &str) -> String {
    json!({
        "id": id,
        "created_at": "2026-12-07T11:59:30+00:00",
        "type": "invoice.issued",
        "payload_style": "expanded",
        "properties": {"automatically_marked_as_paid": false},
        "invoice": fixture("invoice"),
    })
    .to_string()
}

struct Endpoint {
    h: BillingHarness,
    url: String,
    http: reqwest::Client,
    shutdown: Shutdown,
}

async fn endpoint() -> Endpoint {
    let h = BillingHarness::open(Jitter::None).await;
    let biller: Arc<dyn ExternalBiller> = Arc::new(
        h.client
            .clone()
            .with_webhook_secret(Some(OrbWebhookSecret::new(SECRET))),
    );
    let router = webhooks::router(WebhookState::new(
        h.database.pool.clone(),
        Arc::clone(&h.clock),
        Some(biller),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = Shutdown::new();
    let (address, _task) = webhooks::serve_on(router, listener, shutdown.clone()).unwrap();
    Endpoint {
        h,
        url: format!("http://{address}{WEBHOOK_PATH}"),
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl Endpoint {
    async fn post(
        &self,
        body: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.http.post(&self.url).body(body.to_owned());
        if let Some(timestamp) = timestamp {
            request = request.header("X-Orb-Timestamp", timestamp);
        }
        if let Some(signature) = signature {
            request = request.header("X-Orb-Signature", signature);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn recorded(&self, id: &str) -> i64 {
        webhooks::store::count(&self.h.database.pool, id)
            .await
            .unwrap()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The service clock is 2026-12-07T12:00:00Z.
const NOW: &str = "2026-12-07T12:00:00.000000";

#[tokio::test]
async fn a_signed_event_is_recorded_once_and_its_redelivery_acknowledged() {
    let e = endpoint().await;
    let secret = OrbWebhookSecret::new(SECRET);
    let body = invoice_issued("whe_1");
    let signature = sign(&secret, NOW, body.as_bytes());
    assert_eq!(
        e.post(&body, Some(NOW), Some(&signature)).await,
        (200, "received".into())
    );
    // Orb redelivers (same id, a fresh timestamp and signature).
    let later = "2026-12-07T12:01:00+00:00";
    let again = sign(&secret, later, body.as_bytes());
    assert_eq!(
        e.post(&body, Some(later), Some(&again)).await,
        (200, "duplicate".into())
    );
    assert_eq!(e.recorded("whe_1").await, 1);
}

#[tokio::test]
async fn a_forged_stale_or_unsigned_event_is_refused_with_the_reason() {
    let e = endpoint().await;
    let body = invoice_issued("whe_2");
    let forged = sign(&OrbWebhookSecret::new("a guess"), NOW, body.as_bytes());
    let (status, reason) = e.post(&body, Some(NOW), Some(&forged)).await;
    assert_eq!(status, 400);
    assert!(reason.contains("forged"), "{reason}");

    // Signed with the right secret, but the body was changed on the way.
    let signature = sign(&OrbWebhookSecret::new(SECRET), NOW, body.as_bytes());
    let tampered = body.replace("whe_2", "whe_3");
    let (status, reason) = e.post(&tampered, Some(NOW), Some(&signature)).await;
    assert_eq!((status, reason.contains("forged")), (400, true), "{reason}");

    let stale_at = "2026-12-07T11:54:59+00:00";
    let stale = sign(&OrbWebhookSecret::new(SECRET), stale_at, body.as_bytes());
    let (status, reason) = e.post(&body, Some(stale_at), Some(&stale)).await;
    assert_eq!(status, 400);
    assert!(
        reason.contains("stale") && reason.contains("301 s"),
        "{reason}"
    );

    let (status, reason) = e.post(&body, None, Some(&signature)).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "missing X-Orb-Timestamp header")
    );
    let (status, reason) = e.post(&body, Some(NOW), None).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "missing X-Orb-Signature header")
    );
    assert_eq!(e.recorded("whe_2").await + e.recorded("whe_3").await, 0);
}

#[tokio::test]
async fn without_a_webhook_secret_every_event_is_refused() {
    let h = BillingHarness::open(Jitter::None).await;
    let router = webhooks::router(WebhookState::new(
        h.database.pool.clone(),
        Arc::clone(&h.clock),
        Some(Arc::new(h.client.clone())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = Shutdown::new();
    let (address, _task) = webhooks::serve_on(router, listener, shutdown.clone()).unwrap();
    let body = invoice_issued("whe_4");
    let signature = sign(&OrbWebhookSecret::new(SECRET), NOW, body.as_bytes());
    let response = reqwest::Client::new()
        .post(format!("http://{address}{WEBHOOK_PATH}"))
        .header("X-Orb-Timestamp", NOW)
        .header("X-Orb-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("ORB_WEBHOOK_SECRET")
    );
    shutdown.trigger();
}
