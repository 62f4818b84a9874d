//! The HTTP side of the adapter: the `Idempotency-Key` on every POST, retries
//! with backoff on 429, 5xx, 409 idempotency races and timeouts (reusing the
//! same key), and Stripe's error object turned into a [`StripeError`].
//!
//! Two transports share that loop: async-stripe's client sending its typed
//! requests ([`HttpStripe::send`], API version pinned by async-stripe), and a
//! raw form-encoded client for the calls still on `payments.stripe_api_version`
//! ([`HttpStripe::post`], [`HttpStripe::get`]; see the module doc of
//! [`super`]). async-stripe's own retry strategies cannot express our policy
//! (a key derived from Tally ids *and* several tries, our backoff, 409), so
//! each try is one async-stripe call with `RequestStrategy::Idempotent(key)`.
//!
//! What is logged: method, path, status, attempt and Stripe's request id. The
//! secret key (in the `Authorization` header), request bodies and response
//! bodies never are — bodies can carry customer data.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use tally_runtime::config::PaymentsConfig;

use super::StripeError;

/// The Stripe secret key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key read from `STRIPE_API_KEY`.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretKey(<redacted>)")
    }
}

/// Form parameters of one call, in Stripe's bracket notation
/// (`metadata[tally_invoice_id]`).
pub type Form = Vec<(String, String)>;

/// Retries and timeouts of Stripe calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry, doubled per retry.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
    /// Per-try timeout.
    pub request_timeout: Duration,
}

impl RetryPolicy {
    fn delay_before_retry(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// A Stripe API client with the retry rules above.
#[derive(Debug, Clone)]
pub struct HttpStripe {
    http: reqwest::Client,
    /// async-stripe's client; `None` without a secret key.
    typed: Option<stripe::Client>,
    base_url: String,
    api_version: String,
    secret_key: Option<SecretKey>,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: RawErrorBody,
}

#[derive(Deserialize, Default)]
struct RawErrorBody {
    #[serde(rename = "type", default)]
    error_type: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    payment_intent: Option<Value>,
    #[serde(default)]
    charge: Option<String>,
}

/// Stripe's error object, from either transport.
#[derive(Default)]
struct ErrorBody {
    error_type: String,
    code: String,
    decline_code: String,
    message: String,
    param: String,
    payment_intent: Option<String>,
    charge: Option<String>,
    request_id: String,
}

impl ErrorBody {
    fn from_raw(body: RawErrorBody, request_id: String) -> Self {
        let payment_intent = match body.payment_intent {
            Some(Value::String(id)) => Some(id),
            Some(Value::Object(object)) => {
                object.get("id").and_then(Value::as_str).map(str::to_owned)
            }
            _ => None,
        };
        Self {
            error_type: body.error_type,
            code: body.code.unwrap_or_default(),
            decline_code: body.decline_code.unwrap_or_default(),
            message: body.message.unwrap_or_default(),
            param: body.param.unwrap_or_default(),
            payment_intent,
            charge: body.charge,
            request_id,
        }
    }

    /// async-stripe does not expose response headers: the request id is
    /// read from the dashboard log link Stripe puts in the error.
    fn from_typed(body: &stripe::ApiErrors) -> Self {
        let request_id = body
            .request_log_url
            .as_deref()
            .and_then(|url| url.rsplit('/').next())
            .unwrap_or("")
            .to_owned();
        Self {
            error_type: body.type_.as_str().to_owned(),
            code: body
                .code
                .as_ref()
                .map(|code| code.as_str().to_owned())
                .unwrap_or_default(),
            decline_code: body.decline_code.clone().unwrap_or_default(),
            message: body.message.clone().unwrap_or_default(),
            param: body.param.clone().unwrap_or_default(),
            payment_intent: body
                .payment_intent
                .as_ref()
                .map(|intent| intent.id.as_str().to_owned()),
            charge: body.charge.clone(),
            request_id,
        }
    }
}

enum Outcome<T> {
    Done(T),
    Retry(String),
    Fail(StripeError),
}

/// How a failed async-stripe call continues. Its client answers an error
/// status as `Stripe(error, status)` when the body is Stripe's error object,
/// and with a fixed "error deserializing Stripe error" when it is not (a
/// proxy's HTML page on a 502, say): the status is then unknown, and it is
/// retried like a 5xx — Stripe itself always answers 4xx with its object.
fn typed_outcome<T>(error: stripe::StripeError) -> Outcome<T> {
    match error {
        stripe::StripeError::Stripe(body, status) => {
            if status == 429 || status == 409 || status >= 500 {
                let body = ErrorBody::from_typed(&body);
                return Outcome::Retry(format!("HTTP {status} (request {})", body.request_id));
            }
            Outcome::Fail(error_from(status, ErrorBody::from_typed(&body)))
        }
        stripe::StripeError::JSONDeserialize(message)
            if message == "error deserializing Stripe error" =>
        {
            Outcome::Retry("an error answer that is not Stripe's error object".into())
        }
        stripe::StripeError::JSONDeserialize(message) => {
            Outcome::Fail(StripeError::Malformed(message))
        }
        stripe::StripeError::Timeout => Outcome::Retry("timed out".into()),
        stripe::StripeError::ClientError(message) => {
            Outcome::Retry(format!("connection failed: {message}"))
        }
        stripe::StripeError::ConfigError(message) => Outcome::Fail(StripeError::Transport(message)),
    }
}

impl HttpStripe {
    /// A client for `config`'s base URL and API version; without a secret key
    /// every call fails with [`StripeError::NotConfigured`].
    pub fn new(
        config: &PaymentsConfig,
        secret_key: Option<SecretKey>,
    ) -> Result<Self, StripeError> {
        let retry = RetryPolicy {
            max_attempts: config.stripe_max_attempts.max(1),
            base_delay: Duration::from_millis(config.stripe_retry_base_delay_ms),
            max_delay: Duration::from_millis(config.stripe_retry_max_delay_ms),
            request_timeout: Duration::from_millis(config.stripe_request_timeout_ms),
        };
        let http = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .build()
            .map_err(|error| StripeError::Transport(error.to_string()))?;
        let base_url = config.stripe_api_base_url.trim_end_matches('/').to_owned();
        let typed = match &secret_key {
            // async-stripe appends `v1/…` to the base: it must end with `/`.
            Some(key) => Some(
                stripe::ClientBuilder::new(key.0.as_str())
                    .url(format!("{base_url}/"))
                    .timeout(retry.request_timeout)
                    .app_info("tally", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
                    .build()
                    .map_err(|error| StripeError::Transport(error.to_string()))?,
            ),
            None => None,
        };
        Ok(Self {
            http,
            typed,
            base_url,
            api_version: config.stripe_api_version.clone(),
            secret_key,
            retry,
        })
    }

    /// `POST {path}` with `form` and `Idempotency-Key: {idempotency_key}`,
    /// retried with the same key.
    pub async fn post(
        &self,
        path: &str,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<Value, StripeError> {
        let body = encode_form(form);
        self.send_with_retries("POST", path, Some((body, idempotency_key)))
            .await
    }

    /// `GET {path}?{query}`, retried.
    pub async fn get(&self, path: &str, query: &Form) -> Result<Value, StripeError> {
        let path = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", encode_form(query))
        };
        self.send_with_retries("GET", &path, None).await
    }

    /// Sends one of async-stripe's typed requests: a POST with
    /// `Idempotency-Key: {idempotency_key}` (the same on every try), a GET
    /// without (`None`); retried like the raw calls.
    pub async fn send<R>(
        &self,
        request: &R,
        idempotency_key: Option<&str>,
    ) -> Result<R::Output, StripeError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let Some(client) = &self.typed else {
            return Err(StripeError::NotConfigured);
        };
        let strategy = match idempotency_key {
            Some(key) => RequestStrategy::Idempotent(
                IdempotencyKey::new(key)
                    .map_err(|error| StripeError::Malformed(error.to_string()))?,
            ),
            None => RequestStrategy::Once,
        };
        let built = request.build();
        let method = if built.body.is_some() { "POST" } else { "GET" };
        let path = format!("/v1{}", built.path);
        self.with_retries(method, &path, || async {
            let answer = request
                .customize()
                .request_strategy(strategy.clone())
                .send(client)
                .await;
            match answer {
                Ok(output) => Outcome::Done(output),
                Err(error) => typed_outcome(error),
            }
        })
        .await
    }

    async fn send_with_retries(
        &self,
        method: &'static str,
        path: &str,
        post: Option<(String, &str)>,
    ) -> Result<Value, StripeError> {
        let Some(secret_key) = &self.secret_key else {
            return Err(StripeError::NotConfigured);
        };
        self.with_retries(method, path, || {
            let url = format!("{}{path}", self.base_url);
            let mut request = match &post {
                Some((body, key)) => self
                    .http
                    .post(url)
                    .header("Idempotency-Key", *key)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone()),
                None => self.http.get(url),
            };
            request = request
                .header("Authorization", format!("Bearer {}", secret_key.0))
                .header("Stripe-Version", &self.api_version);
            self.try_once(request)
        })
        .await
    }

    /// Runs `try_once` up to `max_attempts` times with backoff while it asks
    /// for a retry; logs each failure (method and path only).
    async fn with_retries<T, F, Fut>(
        &self,
        method: &'static str,
        path: &str,
        try_once: F,
    ) -> Result<T, StripeError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let mut last_reason = String::new();
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.delay_before_retry(attempt - 1)).await;
            }
            match try_once().await {
                Outcome::Done(value) => return Ok(value),
                Outcome::Fail(error) => {
                    tracing::warn!(method, path = %path_only(path), attempt, error = %error, "stripe call failed");
                    return Err(error);
                }
                Outcome::Retry(reason) => {
                    tracing::warn!(method, path = %path_only(path), attempt, %reason, "stripe call failed; retrying (a POST with the same idempotency key)");
                    last_reason = reason;
                }
            }
        }
        Err(StripeError::Unavailable {
            attempts: self.retry.max_attempts,
            reason: last_reason,
        })
    }

    async fn try_once(&self, request: reqwest::RequestBuilder) -> Outcome<Value> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Outcome::Retry("timed out".into()),
            Err(error) if error.is_connect() || error.is_request() => {
                return Outcome::Retry(format!("connection failed: {}", without_url(&error)));
            }
            Err(error) => return Outcome::Retry(format!("transport: {}", without_url(&error))),
        };
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("Stripe-Should-Retry")
            .and_then(|value| value.to_str().ok())
            .map(|value| value == "true");
        let request_id = response
            .headers()
            .get("Request-Id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) if error.is_timeout() => return Outcome::Retry("timed out reading".into()),
            Err(error) => return Outcome::Retry(format!("reading: {}", without_url(&error))),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Outcome::Done(value),
                Err(error) => Outcome::Fail(StripeError::Malformed(format!(
                    "response of request {request_id} is not JSON: {error}"
                ))),
            };
        }
        let retryable = match should_retry {
            Some(explicit) => explicit,
            None => status == 429 || status == 409 || status >= 500,
        };
        if retryable {
            return Outcome::Retry(format!("HTTP {status} (request {request_id})"));
        }
        let body = serde_json::from_slice::<ErrorEnvelope>(&bytes)
            .map(|envelope| envelope.error)
            .unwrap_or_default();
        Outcome::Fail(error_from(status, ErrorBody::from_raw(body, request_id)))
    }
}

fn error_from(status: u16, body: ErrorBody) -> StripeError {
    if body.error_type == "card_error" || status == 402 {
        return StripeError::Declined {
            code: body.code,
            decline_code: body.decline_code,
            message: body.message,
            payment_intent: body.payment_intent,
            charge: body.charge,
        };
    }
    StripeError::Rejected {
        status,
        error_type: body.error_type,
        code: body.code,
        message: body.message,
        param: body.param,
        request_id: body.request_id,
    }
}

/// The path without its query (queries may carry ids we prefer not to log).
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// A transport error's text without the URL (which holds no secret, but
/// keeps logs short and stable).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<stripe>");
    }
    text
}

fn encode_form(form: &Form) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            request_timeout: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=4)
            .map(|retry| policy.delay_before_retry(retry).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let key = SecretKey::new("sk_test_visible");
        assert!(!format!("{key:?}").contains("visible"));
    }

    #[test]
    fn forms_use_bracket_keys() {
        let form = vec![("metadata[tally_invoice_id]".to_owned(), "inv_1".to_owned())];
        assert_eq!(encode_form(&form), "metadata%5Btally_invoice_id%5D=inv_1");
    }
}
