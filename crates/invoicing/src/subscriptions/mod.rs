//! `SubscriptionService`: the subscription lifecycle.
//!
//! Every change runs in one transaction: lock the subscription, validate the
//! move with the domain state machine (`SubscriptionStatus::can_transition_to`),
//! write the subscription with `version + 1`, enqueue the full snapshot on
//! `subscription-events` (outbox) and record the idempotency key.
//!
//! Backdating: a change may take effect in the past, back to
//! `invoicing.backdate_window_days` before now, but never before the last
//! invoiced boundary (`billed_through`): what an invoice billed is not
//! rewritten (corrections are adjustments and credit notes).

mod api;
mod cancel;
mod changes;
mod lifecycle;
pub mod model;
mod quoted;
pub(crate) mod store;
pub(crate) mod terms;

use chrono::{DateTime, Utc};
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result};
use crate::wire::optional_instant;
pub use model::{Pause, Phase, Policy, Subscription};
pub(crate) use quoted::refuse_terms;

crate::feature_service!(
    /// `SubscriptionService`'s logic: creating, changing, pausing and
    /// canceling subscriptions, and the past-due flag payments set.
    Subscriptions,
    subscriptions
);

/// When a change takes effect, as requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    Immediately,
    AtPeriodEnd,
    At(DateTime<Utc>),
}

fn timing(value: i32, effective_at: Option<&prost_types::Timestamp>) -> Result<Timing> {
    let at = optional_instant(effective_at, "effective_at")?;
    match (proto::ChangeTiming::try_from(value), at) {
        (Ok(proto::ChangeTiming::AtTime), Some(at)) => Ok(Timing::At(at)),
        (Ok(proto::ChangeTiming::AtTime), None) => Err(InvoicingError::invalid(
            "effective_at",
            "is required when timing is AT_TIME",
        )),
        (Ok(_), Some(_)) => Err(InvoicingError::invalid(
            "effective_at",
            "must be empty unless timing is AT_TIME",
        )),
        (Ok(proto::ChangeTiming::Unspecified | proto::ChangeTiming::Immediately), None) => {
            Ok(Timing::Immediately)
        }
        (Ok(proto::ChangeTiming::AtPeriodEnd), None) => Ok(Timing::AtPeriodEnd),
        (Err(_), _) => Err(InvoicingError::invalid(
            "timing",
            format!("{value} is not a change timing"),
        )),
    }
}

fn precondition(message: String) -> InvoicingError {
    InvoicingError::FailedPrecondition(message)
}

/// Checks the state machine allows `to` from the status at `at`.
fn allow(subscription: &Subscription, to: Status, at: DateTime<Utc>) -> Result<()> {
    match subscription.status_at(at) {
        Some(from) if !from.can_transition_to(to) => Err(precondition(format!(
            "subscription {} is {from:?}; it cannot become {to:?}",
            subscription.id
        ))),
        _ => Ok(()),
    }
}
