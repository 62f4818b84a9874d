//! Why a Stripe call failed.

/// Why a Stripe call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// `STRIPE_API_KEY` is not set.
    #[error("Stripe is not configured (STRIPE_API_KEY is not set)")]
    NotConfigured,
    /// 429, 5xx, timeouts or connection failures on every try.
    #[error("Stripe unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        /// Tries made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The payment method was declined (`card_error`, HTTP 402): a failed
    /// attempt, never retried by the client.
    #[error("payment declined: {code} {decline_code} ({message})")]
    Declined {
        /// Stripe's error code, e.g. `card_declined`.
        code: String,
        /// The issuer's decline code, e.g. `insufficient_funds`.
        decline_code: String,
        /// Stripe's message, safe to show (never card data).
        message: String,
        /// The PaymentIntent of the attempt.
        payment_intent: Option<String>,
        /// The charge of the attempt.
        charge: Option<String>,
    },
    /// Stripe refused the request (4xx other than 402, 409 and 429): permanent.
    #[error(
        "Stripe refused the request (HTTP {status} {error_type} {code}: {message}; param `{param}`, request {request_id})"
    )]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Stripe's error type, e.g. `invalid_request_error`.
        error_type: String,
        /// Stripe's error code.
        code: String,
        /// Stripe's message.
        message: String,
        /// The parameter at fault.
        param: String,
        /// Stripe's `Request-Id`.
        request_id: String,
    },
    /// A network-level failure building the client.
    #[error("Stripe transport: {0}")]
    Transport(String),
    /// An answer payments cannot read.
    #[error("unexpected Stripe response: {0}")]
    Malformed(String),
}

impl StripeError {
    /// Whether Stripe answered that the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Rejected { status: 404, .. })
    }

    /// Whether trying again later (same idempotency key) may succeed.
    /// A missing key counts: once it is configured the same call can succeed,
    /// so nothing is recorded as refused by Stripe.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StripeError::Unavailable { .. }
                | StripeError::Transport(_)
                | StripeError::NotConfigured
        )
    }

    /// A short code for a failed attempt: the decline code, else Stripe's
    /// code, else a name for the kind of failure.
    pub fn failure_code(&self) -> String {
        match self {
            StripeError::Declined {
                code, decline_code, ..
            } => {
                if decline_code.is_empty() {
                    code.clone()
                } else {
                    decline_code.clone()
                }
            }
            StripeError::Rejected { code, .. } if !code.is_empty() => code.clone(),
            StripeError::Rejected { .. } => "stripe_rejected".into(),
            StripeError::NotConfigured => "stripe_not_configured".into(),
            StripeError::Unavailable { .. } | StripeError::Transport(_) => {
                "stripe_unavailable".into()
            }
            StripeError::Malformed(_) => "stripe_malformed_response".into(),
        }
    }

    /// A message safe to show and store (Stripe's own, never card data).
    pub fn failure_message(&self) -> String {
        match self {
            StripeError::Declined { message, .. } | StripeError::Rejected { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}
