//! `QuoteService`: quotes that become subscriptions (docs/architecture.md, "Invoicing:
//! quotes").
//!
//! A quote offers a published plan version with negotiated terms, from a start, for a
//! term, until an expiry; the domain prices its preview (`tally_domain::quote`). It is a
//! draft, then open (numbered, immutable: a change is a new revision), then accepted,
//! declined, expired (read from the clock) or canceled. Accepting executes it in one
//! transaction keyed by the revision (`accept.rs`): the customer for a new one, the
//! subscription (or the amendment of one, co-terminating with its current term), the audit
//! entries.
//!
//! * [`mapping`] — the wire `QuoteContent` and `Quote`;
//! * [`model`] — the stored quote;
//! * [`store`] — its SQL;
//! * `lifecycle` — create, preview, finalize, decline, cancel, read;
//! * `accept` — executing a signed quote.

mod accept;
mod api;
mod lifecycle;
pub(crate) mod mapping;
pub(crate) mod model;
pub(crate) mod store;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_domain::money::LINE_ROUNDING;
use tally_domain::plan::Plan;
use tally_domain::quote::{QuoteError, contract_end, preview};
use tally_domain::subscription::PlanRef;
use tally_domain::terms::SubscriptionTerms;
use tally_proto::convert::terms::{TermsContext, subscription_terms, terms_violation};

use crate::error::{InvoicingError, Result};
use crate::plans::{self, PlanInfo};
use crate::{customers, subscriptions};

use self::mapping::Content;
use self::model::{Offer, Party};

crate::feature_service!(
    /// `QuoteService`'s logic: writing, pricing, numbering and executing quotes.
    Quotes,
    quotes
);

fn precondition(message: String) -> InvoicingError {
    InvoicingError::FailedPrecondition(message)
}

impl Quotes<'_> {
    /// The plan version a quote names, as invoicing keeps it and as the domain prices it;
    /// refused unless published. Asks rating (call it outside a transaction).
    async fn quoted_plan(&self, id: &str) -> Result<(PlanInfo, Plan)> {
        let version = self.rating.plan_version(id).await?;
        let info = plans::from_wire(&version)?;
        let plan = tally_proto::convert::catalog::plan_version(&version).map_err(|violation| {
            InvoicingError::internal(format!(
                "rating's plan version {id} is not one the domain accepts: {violation:?}"
            ))
        })?;
        Ok((info, plan))
    }

    /// Checks `content` against the customer, the subscription it amends and the plan
    /// version (`plan`, from [`Quotes::quoted_plan`]), and prices it.
    async fn offer(
        &self,
        connection: &mut PgConnection,
        content: Content,
        (info, plan): &(PlanInfo, Plan),
        now: DateTime<Utc>,
    ) -> Result<Offer> {
        let currency = info.currency;
        if let Party::Customer(id) = &content.party {
            let customer = customers::load(&mut *connection, id, false).await?;
            if customers::is_archived(&customer) {
                return Err(precondition(format!("customer {id} is archived")));
            }
            if customer.currency != currency.code() {
                return Err(precondition(format!(
                    "plan version {} is in {}, customer {id} in {}",
                    info.id,
                    currency.code(),
                    customer.currency
                )));
            }
        }
        if content.expires_at <= now {
            return Err(InvoicingError::invalid(
                "quote.expires_at",
                format!("{} is not after now ({now})", content.expires_at),
            ));
        }
        let spec = subscription_terms(
            &content.terms,
            TermsContext {
                plan: PlanRef::from(plan),
                currency,
                starts_at: content.starts_at,
            },
            "quote.terms",
        )?;
        let terms = SubscriptionTerms::new(spec, plan)
            .map_err(|error| InvoicingError::from(terms_violation(&error, "quote.terms")))?;
        let ends_at = match &content.amends_subscription_id {
            Some(subscription_id) => {
                self.co_terminus(connection, &content, subscription_id, info, &terms)
                    .await?
            }
            None => contract_end(&terms, content.term_months).map_err(term_error)?,
        };
        let preview = preview(&terms, ends_at, LINE_ROUNDING).map_err(term_error)?;
        Ok(Offer {
            party: content.party,
            amends_subscription_id: content.amends_subscription_id,
            plan_version_id: info.id.clone(),
            currency,
            terms: terms.spec().clone(),
            starts_at: content.starts_at,
            term_months: content.term_months,
            ends_at,
            expires_at: content.expires_at,
            preview,
            memo: content.memo,
        })
    }

    /// The end of an amendment: the subscription's current term's (the last quote
    /// accepted for it), or `term_months` from the amendment when it has none. The
    /// amendment starts on one of the subscription's billing period boundaries, with the
    /// same customer, currency and interval.
    async fn co_terminus(
        &self,
        connection: &mut PgConnection,
        content: &Content,
        subscription_id: &str,
        info: &PlanInfo,
        terms: &SubscriptionTerms,
    ) -> Result<DateTime<Utc>> {
        let subscription =
            subscriptions::store::load(&mut *connection, subscription_id, false).await?;
        subscriptions::refuse_terms(&subscription)?;
        let customer = match &content.party {
            Party::Customer(id) => id.as_str(),
            Party::New(_) => "",
        };
        if subscription.customer_id != customer {
            return Err(InvoicingError::invalid(
                "quote.amends_subscription_id",
                format!("subscription {subscription_id} is not customer {customer}'s"),
            ));
        }
        if subscription.currency != info.currency || subscription.interval != info.interval {
            return Err(precondition(format!(
                "plan version {} bills in {} every {}; subscription {subscription_id} in {} every {}: an amendment keeps both",
                info.id,
                info.currency.code(),
                plans::interval_name(info.interval),
                subscription.currency.code(),
                plans::interval_name(subscription.interval),
            )));
        }
        let period = subscription.period_containing(content.starts_at)?;
        if period.start() != content.starts_at || content.starts_at < subscription.start_at {
            return Err(precondition(format!(
                "an amendment starts on a billing period boundary of subscription {subscription_id}: {} is inside {} – {}",
                content.starts_at,
                period.start(),
                period.end()
            )));
        }
        let ends_at = match store::term_end(&mut *connection, subscription_id).await? {
            Some(end) => end,
            None => contract_end(terms, content.term_months).map_err(term_error)?,
        };
        if ends_at <= content.starts_at {
            return Err(precondition(format!(
                "subscription {subscription_id}'s term ends at {ends_at}, not after the amendment's start {}",
                content.starts_at
            )));
        }
        Ok(ends_at)
    }
}

/// A term the domain refuses, on `quote.term_months` (or the whole quote).
fn term_error(error: QuoteError) -> InvoicingError {
    match error {
        QuoteError::TermNotWholePeriods { .. } => {
            InvoicingError::invalid("quote.term_months", error.to_string())
        }
        QuoteError::EndNotOnCycle { .. } | QuoteError::EmptyContract { .. } => {
            precondition(error.to_string())
        }
        QuoteError::Terms(error) => terms_violation(&error, "quote.terms").into(),
        QuoteError::Transition { .. } => precondition(error.to_string()),
        QuoteError::Period(_) | QuoteError::Money(_) => InvoicingError::internal(error),
    }
}
