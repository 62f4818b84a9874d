//! The HTTP side of the Stripe Billing adapter: async-stripe's client
//! sending its typed list requests, one page at a time, each retried on its
//! own on 429, 5xx, timeouts and connection failures with a doubling
//! backoff. Only reads: an import never writes to the source account, so
//! no call carries an idempotency key.
//!
//! Logged: the path (without its query) and the failure; never the key
//! (async-stripe marks the header sensitive) nor a body (customer data).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use stripe::{RequestStrategy, StripeRequest};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_types::List;

use crate::import::SourceError;

/// Stripe, as the errors name it.
pub(super) const SOURCE: &str = "Stripe";

/// Where the import's Stripe key comes from.
pub const API_KEY_VARIABLE: &str = "STRIPE_BILLING_API_KEY";

/// The secret (or restricted, read-only) key of the Stripe account to read.
/// Its `Debug` never shows it.
#[derive(Clone)]
pub struct StripeBillingKey(String);

impl StripeBillingKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// `STRIPE_BILLING_API_KEY`, when set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(API_KEY_VARIABLE)
            .ok()
            .filter(|key| !key.trim().is_empty())
            .map(Self)
    }
}

impl fmt::Debug for StripeBillingKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("StripeBillingKey(<redacted>)")
    }
}

/// Where the account is and how hard to try.
#[derive(Debug, Clone)]
pub struct StripeBillingSettings {
    /// Base URL without `/v1` (`https://api.stripe.com`; tests: a fake).
    pub api_base_url: String,
    /// Tries of one page, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry, doubled per retry.
    pub retry_base_delay: Duration,
    /// Longest backoff.
    pub retry_max_delay: Duration,
    /// One request taking longer is abandoned and retried.
    pub request_timeout: Duration,
}

impl Default for StripeBillingSettings {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.stripe.com".to_owned(),
            max_attempts: 5,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(8),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// async-stripe's client with the retry rule above.
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: stripe::Client,
    settings: StripeBillingSettings,
}

enum Outcome<T> {
    Done(T),
    Retry(String),
    Fail(SourceError),
}

impl Http {
    pub(super) fn new(
        settings: StripeBillingSettings,
        key: &StripeBillingKey,
    ) -> Result<Self, SourceError> {
        // async-stripe appends `v1/…` to the base: it must end with `/`.
        let client = stripe::ClientBuilder::new(key.0.as_str())
            .url(format!("{}/", settings.api_base_url.trim_end_matches('/')))
            .timeout(settings.request_timeout)
            .app_info(
                "tally-migrate",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            )
            .build()
            .map_err(|error| unreadable(format!("cannot build the client: {error}")))?;
        Ok(Self { client, settings })
    }

    /// Every object of a list, following `starting_after` while `has_more`.
    pub(super) async fn list_all<R, T>(
        &self,
        first_page: impl Fn(Option<&str>) -> R,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, SourceError>
    where
        R: StripeRequest<Output = List<T>>,
        List<T>: miniserde::Deserialize,
    {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.send(&first_page(after.as_deref())).await?;
            let has_more = page.has_more;
            after = page.data.last().map(&id_of);
            all.extend(page.data);
            if !has_more || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// One GET, retried while Stripe may answer later.
    pub(super) async fn send<R>(&self, request: &R) -> Result<R::Output, SourceError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let path = request.build().path;
        let mut last = String::new();
        let attempts = self.settings.max_attempts.max(1);
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(self.delay_before_retry(attempt - 1)).await;
            }
            let answer = request
                .customize()
                .request_strategy(RequestStrategy::Once)
                .send(&self.client)
                .await;
            match answer.map_or_else(outcome, Outcome::Done) {
                Outcome::Done(output) => return Ok(output),
                Outcome::Fail(error) => {
                    tracing::warn!(%path, attempt, %error, "stripe billing read failed");
                    return Err(error);
                }
                Outcome::Retry(reason) => {
                    tracing::warn!(%path, attempt, %reason, "stripe billing read failed; retrying");
                    last = reason;
                }
            }
        }
        Err(SourceError::Unavailable {
            source_name: SOURCE,
            message: last,
            attempts,
        })
    }

    fn delay_before_retry(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.settings
            .retry_base_delay
            .saturating_mul(factor)
            .min(self.settings.retry_max_delay)
    }
}

/// How a failed call continues: 429 and 5xx (and an error body that is not
/// Stripe's object, a proxy's page) are retried, 401/403 are the key, any
/// other status is the request.
fn outcome<T>(error: stripe::StripeError) -> Outcome<T> {
    match error {
        stripe::StripeError::Stripe(body, status) => {
            let message = body.message.clone().unwrap_or_default();
            if status == 429 || status >= 500 {
                Outcome::Retry(format!("HTTP {status}: {message}"))
            } else if status == 401 || status == 403 {
                Outcome::Fail(SourceError::Unauthorized {
                    source_name: SOURCE,
                    status,
                    variable: API_KEY_VARIABLE,
                })
            } else {
                Outcome::Fail(SourceError::Refused {
                    source_name: SOURCE,
                    status,
                    reason: message,
                })
            }
        }
        stripe::StripeError::JSONDeserialize(message)
            if message == "error deserializing Stripe error" =>
        {
            Outcome::Retry("an error answer that is not Stripe's error object".into())
        }
        stripe::StripeError::JSONDeserialize(message) => Outcome::Fail(unreadable(message)),
        stripe::StripeError::Timeout => Outcome::Retry("timed out".into()),
        stripe::StripeError::ClientError(message) => {
            Outcome::Retry(format!("connection failed: {message}"))
        }
        stripe::StripeError::ConfigError(message) => Outcome::Fail(unreadable(message)),
    }
}

pub(super) fn unreadable(message: impl Into<String>) -> SourceError {
    SourceError::Unreadable {
        source_name: SOURCE,
        message: message.into(),
    }
}

/// `limit` and `starting_after`, as every Stripe list takes them.
#[derive(Debug, Clone, serde::Serialize)]
struct PageQuery {
    limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    starting_after: Option<String>,
}

/// A page of a list async-stripe's enabled features have no request for
/// (`GET /v1/prices` lives in `async-stripe-product`, which nothing else
/// here needs; an invoice's further lines): the path and the page, parsed
/// into async-stripe's own `List<T>`.
#[derive(Debug, Clone)]
pub(super) struct ListPage<T> {
    path: String,
    query: PageQuery,
    item: PhantomData<fn() -> T>,
}

impl<T> ListPage<T> {
    /// 100 objects of `path` (`/prices`) after `starting_after`.
    pub(super) fn new(path: impl Into<String>, starting_after: Option<&str>) -> Self {
        Self {
            path: path.into(),
            query: PageQuery {
                limit: 100,
                starting_after: starting_after.map(str::to_owned),
            },
            item: PhantomData,
        }
    }
}

impl<T> StripeRequest for ListPage<T> {
    type Output = List<T>;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(StripeMethod::Get, self.path.clone()).query(&self.query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let key = StripeBillingKey::new("sk_test_1");
        let http = Http::new(
            StripeBillingSettings {
                retry_base_delay: Duration::from_millis(100),
                retry_max_delay: Duration::from_millis(350),
                ..StripeBillingSettings::default()
            },
            &key,
        )
        .unwrap();
        let delays: Vec<u128> = (1..=4)
            .map(|retry| http.delay_before_retry(retry).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(format!("{key:?}"), "StripeBillingKey(<redacted>)");
    }
}
