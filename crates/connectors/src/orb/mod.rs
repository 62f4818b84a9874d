//! The Orb adapter: a hand-written client of Orb's REST API on reqwest
//! (rustls), and Orb's implementation of [`crate::biller::ExternalBiller`].
//! Orb's shapes ([`wire`], [`wire_billing`]) never leave this module:
//! callers hand in Tally-side values and get Tally-side answers or an
//! [`OrbError`].
//!
//! * `POST /v1/ingest` ([`OrbClient::ingest`]);
//! * `POST /v1/customers` and `POST /v1/subscriptions` ([`billing`]), each
//!   with an `Idempotency-Key` derived from Tally's id, so a retry or a
//!   redelivery is the same object in Orb;
//! * `GET /v1/invoices` with cursor pagination, amounts read exactly
//!   ([`billing`], [`wire_billing`]);
//! * webhook signatures ([`webhook`]).
//!
//! Retries: 408, 409, 429, 5xx, timeouts and connection failures are retried
//! with the same body (and the same `Idempotency-Key`) — Orb ingests an
//! idempotency key at most once and answers a repeated POST key with the
//! first answer — waiting what `retry-after-ms` / `retry-after` says, else
//! an exponential backoff, plus up to a quarter more at random ([`Jitter`]),
//! at most `orb_retry_max_delay_ms` (a longer wait, or the last try failing,
//! is left to the caller: the bus's redelivery). Any other 4xx is Orb
//! refusing the request, never retried as is.

pub mod billing;
pub mod webhook;
mod wire;
mod wire_billing;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
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

pub use crate::biller::{
    BillerError as OrbError, IngestAnswer, NotSent, Sent, UsageRecord as OrbEvent,
};

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

/// How much longer than the computed delay a retry waits, so clients
/// throttled together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Up to a quarter more, at random (in service).
    Random,
    /// Exactly the delay (tests that assert the waits).
    None,
}

impl Jitter {
    /// `delay` plus its jitter: never less than `delay`, so a `retry-after`
    /// is always honoured.
    fn apply(self, delay: Duration) -> Duration {
        match self {
            Jitter::None => delay,
            Jitter::Random => {
                use std::hash::{BuildHasher as _, Hasher as _};
                // A fresh RandomState is seeded randomly: enough spread for
                // back-off without a random-number crate.
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u128(delay.as_nanos());
                let fraction = f64::from(u32::try_from(hasher.finish() >> 40).unwrap_or(0))
                    / f64::from(1u32 << 24);
                delay.saturating_add(delay.mul_f64(fraction / 4.0))
            }
        }
    }
}

/// The environment variable holding Orb's webhook signing secret.
pub const WEBHOOK_SECRET_VARIABLE: &str = "ORB_WEBHOOK_SECRET";

/// Orb's webhook signing secret (never printed).
#[derive(Clone)]
pub struct OrbWebhookSecret(String);

impl OrbWebhookSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// `ORB_WEBHOOK_SECRET`, when set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(WEBHOOK_SECRET_VARIABLE)
            .ok()
            .filter(|secret| !secret.is_empty())
            .map(Self)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for OrbWebhookSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("OrbWebhookSecret(…)")
    }
}

/// Orb's API.
#[derive(Debug, Clone)]
pub struct OrbClient {
    http: reqwest::Client,
    base_url: String,
    api_key: OrbApiKey,
    webhook_secret: Option<OrbWebhookSecret>,
    batch_events: usize,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    pause: Arc<dyn Pause>,
    jitter: Jitter,
}

/// One HTTP exchange, before its status is read.
struct Reply {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<Duration>,
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
            base_url: config.orb_api_base_url.trim_end_matches('/').to_owned(),
            api_key,
            webhook_secret: None,
            batch_events: config.orb_batch_events.max(1),
            max_attempts: config.orb_max_attempts.max(1),
            base_delay: Duration::from_millis(config.orb_retry_base_delay_ms),
            max_delay: Duration::from_millis(config.orb_retry_max_delay_ms),
            pause: Arc::new(Sleep),
            jitter: Jitter::Random,
        })
    }

    /// The same client waiting with `pause` between retries (tests record the delays).
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> Self {
        self.pause = pause;
        self
    }

    /// The same client with another [`Jitter`].
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same client verifying webhooks with `secret`.
    pub fn with_webhook_secret(mut self, secret: Option<OrbWebhookSecret>) -> Self {
        self.webhook_secret = secret;
        self
    }

    /// Most events in one request (`connectors.orb_batch_events`).
    pub fn batch_events(&self) -> usize {
        self.batch_events
    }

    /// Sends `events` in one request, retrying what may pass later.
    pub async fn ingest(&self, events: &[OrbEvent]) -> Result<Sent, NotSent> {
        let body = wire::IngestRequest {
            events: events.iter().map(wire::IngestEvent::from_event).collect(),
        };
        let body = serde_json::to_vec(&body).map_err(|error| NotSent {
            error: OrbError::Unreadable(format!("cannot encode the request: {error}")),
            attempts: 0,
        })?;
        let url = self.url("/v1/ingest", &[])?;
        self.retrying("ingest", || async {
            let reply = self
                .send_once(reqwest::Method::POST, url.clone(), Some(&body), None)
                .await?;
            answer(reply.status, &reply.body, reply.retry_after)
        })
        .await
    }

    /// `path` (from `/v1/…`) under the base URL, with `query`.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url, NotSent> {
        let mut url =
            reqwest::Url::parse(&format!("{}{path}", self.base_url)).map_err(|error| NotSent {
                error: OrbError::Unreadable(format!(
                    "connectors.orb_api_base_url {:?} is not a URL: {error}",
                    self.base_url
                )),
                attempts: 0,
            })?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(name, value)| (*name, value.as_str())));
        }
        Ok(url)
    }

    /// Runs `attempt` until it answers, fails for good, or the retries run
    /// out: an [`OrbError::Unavailable`] is retried after what Orb asked
    /// (`retry-after`), else the exponential backoff, plus jitter.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<Sent<T>, NotSent>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OrbError>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match attempt().await {
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
            let delay = self.jitter.apply(delay);
            tracing::warn!(%error, attempts, delay_ms = delay.as_millis(), "orb {what} failed; retrying");
            self.pause.pause(delay).await;
        }
    }

    /// The exponential backoff after `attempts` failed tries.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// One request; `Err` only when no status came back.
    async fn send_once(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply, OrbError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.api_key.0)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|error| OrbError::Unavailable {
                message: format!("request failed: {error}"),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|error| OrbError::Unavailable {
                message: format!("reading the response failed: {error}"),
                retry_after: None,
            })?;
        Ok(Reply {
            status,
            body: body.to_vec(),
            retry_after,
        })
    }
}

/// A JSON object answer: 2xx parsed as `T`; 401/403 the key; 408, 409, 429
/// and 5xx worth retrying; any other status Orb refusing the request.
fn object<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, OrbError> {
    match reply.status {
        200..=299 => serde_json::from_slice(&reply.body)
            .map_err(|error| OrbError::Unreadable(format!("HTTP {}: {error}", reply.status))),
        401 | 403 => Err(OrbError::Unauthorized {
            status: reply.status,
        }),
        408 | 409 | 429 | 500..=599 => Err(OrbError::Unavailable {
            message: format!("HTTP {}: {}", reply.status, problem(&reply.body).0),
            retry_after: reply.retry_after,
        }),
        status => Err(OrbError::Refused {
            status,
            reason: problem(&reply.body).0,
        }),
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
