//! The Orb adapter: a hand-written client of Orb's REST API on reqwest
//! (rustls). Only `POST /v1/ingest` so far. Orb's shapes ([`wire`]) never
//! leave this module: callers hand in [`OrbEvent`]s and get an
//! [`IngestAnswer`] or an [`OrbError`].
//!
//! Retries ([`OrbClient::ingest`]): 408, 409, 429, 5xx, timeouts and
//! connection failures are retried with the same body — Orb ingests an
//! idempotency key at most once, so a retry can never count an event twice —
//! waiting what `retry-after-ms` / `retry-after` says, else an exponential
//! backoff, at most `orb_retry_max_delay_ms` (a longer wait, or the last
//! try failing, is left to the bus's redelivery). Any other 4xx is Orb
//! refusing the payload: [`IngestAnswer::Refused`], never retried as is.

mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tally_runtime::config::ConnectorsConfig;

/// The environment variable holding Orb's API key.
pub const API_KEY_VARIABLE: &str = "ORB_API_KEY";

/// Orb's secret API key (never printed).
#[derive(Clone)]
pub struct OrbApiKey(String);

impl OrbApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// `ORB_API_KEY`, when set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(API_KEY_VARIABLE)
            .ok()
            .filter(|key| !key.is_empty())
            .map(Self)
    }
}

impl fmt::Debug for OrbApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("OrbApiKey(…)")
    }
}

/// One usage event for Orb, in Tally's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrbEvent {
    /// What Orb de-duplicates by.
    pub idempotency_key: String,
    /// The Orb customer's external id.
    pub external_customer_id: String,
    /// Orb's event name (Tally's event type).
    pub event_name: String,
    /// When the usage happened.
    pub timestamp: DateTime<Utc>,
    /// Tally's properties (strings; exact numbers are sent as numbers).
    pub properties: BTreeMap<String, String>,
}

/// What Orb answered to one ingestion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAnswer {
    /// 200: every event was ingested (or had been) except those listed, by
    /// idempotency key, with Orb's validation errors.
    Accepted {
        /// Idempotency key → Orb's reason.
        failed: BTreeMap<String, String>,
    },
    /// A 4xx refusing the payload: nothing of the request was ingested.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Orb's reason for the request (title, detail, general errors).
        reason: String,
        /// Orb's reasons per idempotency key, when it named keys.
        per_key: BTreeMap<String, String>,
    },
}

/// A request that did not get an answer about its events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrbError {
    /// Worth retrying later (429, 5xx, a timeout, a connection failure).
    #[error("Orb is unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// How long Orb asked to wait.
        retry_after: Option<Duration>,
    },
    /// Orb refused the key (401, 403): nothing can be sent until an
    /// operator fixes `ORB_API_KEY`; the events wait on the bus.
    #[error("Orb refused the API key (HTTP {status}): check ORB_API_KEY")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
}

/// A waiting strategy between retries: real sleeps in service, recorded in tests.
#[async_trait]
pub trait Pause: Send + Sync + fmt::Debug {
    /// Waits `delay`.
    async fn pause(&self, delay: Duration);
}

/// Sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

#[async_trait]
impl Pause for Sleep {
    async fn pause(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// An answer and how many requests it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Orb's answer.
    pub answer: IngestAnswer,
    /// Requests made, the first included.
    pub attempts: u32,
}

/// An error after the requests it took.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (after {attempts} requests)")]
pub struct NotSent {
    /// The last error.
    pub error: OrbError,
    /// Requests made.
    pub attempts: u32,
}

/// Orb's API.
#[derive(Debug, Clone)]
pub struct OrbClient {
    http: reqwest::Client,
    ingest_url: String,
    api_key: OrbApiKey,
    batch_events: usize,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    pause: Arc<dyn Pause>,
}

impl OrbClient {
    /// A client of the Orb API at `config.orb_api_base_url`.
    pub fn new(config: &ConnectorsConfig, api_key: OrbApiKey) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.orb_request_timeout_ms))
            .user_agent(concat!("tally-connectors/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            ingest_url: format!(
                "{}/v1/ingest",
                config.orb_api_base_url.trim_end_matches('/')
            ),
            api_key,
            batch_events: config.orb_batch_events.max(1),
            max_attempts: config.orb_max_attempts.max(1),
            base_delay: Duration::from_millis(config.orb_retry_base_delay_ms),
            max_delay: Duration::from_millis(config.orb_retry_max_delay_ms),
            pause: Arc::new(Sleep),
        })
    }

    /// The same client waiting with `pause` between retries (tests record the delays).
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> Self {
        self.pause = pause;
        self
    }

    /// Most events in one request (`connectors.orb_batch_events`).
    pub fn batch_events(&self) -> usize {
        self.batch_events
    }

    /// Sends `events` in one request, retrying what may pass later.
    pub async fn ingest(&self, events: &[OrbEvent]) -> Result<Sent, NotSent> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.ingest_once(events).await {
                Ok(answer) => return Ok(Sent { answer, attempts }),
                Err(error) => error,
            };
            let OrbError::Unavailable { retry_after, .. } = &error else {
                return Err(NotSent { error, attempts });
            };
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempts));
            if attempts >= self.max_attempts || delay > self.max_delay {
                return Err(NotSent { error, attempts });
            }
            tracing::warn!(%error, attempts, delay_ms = delay.as_millis(), "orb ingest failed; retrying");
            self.pause.pause(delay).await;
        }
    }

    /// The exponential backoff after `attempts` failed tries.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// One request.
    async fn ingest_once(&self, events: &[OrbEvent]) -> Result<IngestAnswer, OrbError> {
        let body = wire::IngestRequest {
            events: events.iter().map(wire::IngestEvent::from_event).collect(),
        };
        let body = serde_json::to_vec(&body).map_err(|error| OrbError::Unavailable {
            message: format!("cannot encode the request: {error}"),
            retry_after: None,
        })?;
        let response = self
            .http
            .post(&self.ingest_url)
            .bearer_auth(&self.api_key.0)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| OrbError::Unavailable {
                message: format!("request failed: {error}"),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|error| OrbError::Unavailable {
                message: format!("reading the response failed: {error}"),
                retry_after: None,
            })?;
        answer(status, &bytes, retry_after)
    }
}

/// What a response means.
fn answer(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<IngestAnswer, OrbError> {
    match status {
        200..=299 => {
            let parsed: wire::IngestionResponse =
                serde_json::from_slice(body).map_err(|error| OrbError::Unavailable {
                    message: format!("unreadable 2xx body from Orb ({error})"),
                    retry_after: None,
                })?;
            Ok(IngestAnswer::Accepted {
                failed: parsed
                    .validation_failed
                    .into_iter()
                    .map(|failed| (failed.idempotency_key, failed.validation_errors.join("; ")))
                    .collect(),
            })
        }
        401 | 403 => Err(OrbError::Unauthorized { status }),
        // 409: a request Idempotency-Key still in flight; 408: Orb gave up waiting.
        408 | 409 | 429 | 500..=599 => Err(OrbError::Unavailable {
            message: format!("HTTP {status}: {}", problem(body).0),
            retry_after,
        }),
        _ => {
            let (reason, per_key) = problem(body);
            Ok(IngestAnswer::Refused {
                status,
                reason: if reason.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {reason}")
                },
                per_key,
            })
        }
    }
}

fn problem(body: &[u8]) -> (String, BTreeMap<String, String>) {
    serde_json::from_slice::<wire::Problem>(body)
        .unwrap_or_default()
        .reasons()
}

/// `retry-after-ms` (milliseconds, as Orb's SDKs read it) or `retry-after`
/// (seconds; an HTTP date is ignored: the backoff applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    if let Some(milliseconds) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(milliseconds / 1000.0));
    }
    number("retry-after").map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(
            answer(200, br#"{"validation_failed":[]}"#, None),
            Ok(IngestAnswer::Accepted { failed }) if failed.is_empty()
        ));
        assert!(matches!(
            answer(429, b"{}", Some(Duration::from_secs(2))),
            Err(OrbError::Unavailable { retry_after: Some(delay), .. }) if delay == Duration::from_secs(2)
        ));
        assert!(matches!(
            answer(503, b"", None),
            Err(OrbError::Unavailable { .. })
        ));
        assert!(matches!(
            answer(401, b"", None),
            Err(OrbError::Unauthorized { status: 401 })
        ));
        assert!(matches!(
            answer(400, br#"{"title":"bad","validation_errors":["x"]}"#, None),
            Ok(IngestAnswer::Refused { status: 400, reason, .. }) if reason == "HTTP 400: bad: x"
        ));
        assert!(matches!(
            answer(413, b"", None),
            Ok(IngestAnswer::Refused { status: 413, reason, .. }) if reason == "HTTP 413"
        ));
    }
}
