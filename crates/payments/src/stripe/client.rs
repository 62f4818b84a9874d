//! The HTTP side of the adapter: async-stripe's client sending its typed
//! requests, with our retry loop around each call: the `Idempotency-Key` on
//! every POST (derived from Tally ids, the same on every try), retries with
//! backoff on 429, 5xx, 409 idempotency races, timeouts and connection
//! failures, and Stripe's error object turned into a [`StripeError`].
//!
//! async-stripe's own strategies cannot express that policy (`Idempotent`
//! sends once with a given key; `Retry` / `ExponentialBackoff` retry with a
//! random key and their own backoff), so each try is one async-stripe call
//! with `RequestStrategy::Idempotent(key)`.
//!
//! What is logged: method, path, attempt and the failure (status, Stripe's
//! request id). The secret key (in the `Authorization` header, which
//! async-stripe marks sensitive), request bodies and response bodies never
//! are — bodies can carry customer and card data.

use std::fmt;
use std::time::Duration;

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
    /// async-stripe's client; `None` without a secret key.
    client: Option<stripe::Client>,
    retry: RetryPolicy,
}

/// Stripe's error object, as payments reads it.
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
    /// A client for `config`'s base URL, timeouts and retries; without a
    /// secret key every call fails with [`StripeError::NotConfigured`].
    /// `payments.stripe_api_version` must be the version async-stripe's
    /// types are generated for (it sends that one, and reads its shapes).
    pub fn new(
        config: &PaymentsConfig,
        secret_key: Option<SecretKey>,
    ) -> Result<Self, StripeError> {
        let pinned = stripe_client_core::VERSION.as_str();
        if config.stripe_api_version != pinned {
            return Err(StripeError::Transport(format!(
                "payments.stripe_api_version is `{}`, but async-stripe speaks `{pinned}` only",
                config.stripe_api_version
            )));
        }
        let retry = RetryPolicy {
            max_attempts: config.stripe_max_attempts.max(1),
            base_delay: Duration::from_millis(config.stripe_retry_base_delay_ms),
            max_delay: Duration::from_millis(config.stripe_retry_max_delay_ms),
            request_timeout: Duration::from_millis(config.stripe_request_timeout_ms),
        };
        let client = match &secret_key {
            // async-stripe appends `v1/…` to the base: it must end with `/`.
            Some(key) => Some(
                stripe::ClientBuilder::new(key.0.as_str())
                    .url(format!(
                        "{}/",
                        config.stripe_api_base_url.trim_end_matches('/')
                    ))
                    .timeout(retry.request_timeout)
                    .app_info("tally", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
                    .build()
                    .map_err(|error| StripeError::Transport(error.to_string()))?,
            ),
            None => None,
        };
        Ok(Self { client, retry })
    }

    /// Sends one of async-stripe's typed requests: a POST with
    /// `Idempotency-Key: {idempotency_key}` (the same on every try), a GET
    /// without (`None`).
    pub async fn send<R>(
        &self,
        request: &R,
        idempotency_key: Option<&str>,
    ) -> Result<R::Output, StripeError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let Some(client) = &self.client else {
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
    fn another_api_version_is_refused() {
        let config = PaymentsConfig {
            stripe_api_version: "2024-06-20".into(),
            ..PaymentsConfig::default()
        };
        let error = HttpStripe::new(&config, None).unwrap_err();
        assert!(error.to_string().contains("2026-09-30.endive"), "{error}");
        assert!(HttpStripe::new(&PaymentsConfig::default(), None).is_ok());
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let key = SecretKey::new("sk_test_visible");
        assert!(!format!("{key:?}").contains("visible"));
    }
}
