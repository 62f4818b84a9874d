//! Subscriptions made by an accepted quote, in the quote's transaction: a new one on the
//! quote's plan version from its start (no trial, anchored on the start, the quote named
//! in its metadata), or an amendment — the plan change at the quote's start, which is a
//! billing period boundary of the subscription. Written and published like every change
//! (`commit_change`); the caller (quotes) writes the audit entries and the idempotency
//! record with its own.
//!
//! A new subscription carries the quote's terms (none when they are the list price); the
//! quote checked them against the plan version from the same start, on which the
//! subscription is anchored. An amendment switches the plan only: amending the terms of a
//! subscription that has some is refused, as `ChangePlan` refuses it, until contract
//! amendments exist (docs/architecture.md, "Invoicing: quotes").

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_domain::ids::SubscriptionId;
use tally_domain::terms::SubscriptionTermsSpec;
use tally_proto::events::subscription_event::{self, Kind};
use tally_proto::invoicing as proto;

use crate::error::Result;
use crate::plans::PlanInfo;
use crate::quotes::model::{Offer, Quote};
use crate::wire::timestamp;

use super::changes::switch_plan;
use super::store as subscription_store;
use super::{Phase, Policy, Subscription, Subscriptions, precondition};

impl Subscriptions<'_> {
    /// The subscription `quote` makes for `customer` on `plan` (the quote's version).
    pub(crate) async fn create_for_quote(
        &self,
        connection: &mut PgConnection,
        customer: &proto::Customer,
        plan: &PlanInfo,
        quote: &Quote,
        now: DateTime<Utc>,
    ) -> Result<proto::Subscription> {
        let start_at = quote.offer.starts_at;
        if start_at < self.backdate_limit(now) {
            return Err(precondition(format!(
                "quote {} starts at {start_at}, before the backdating window of {} days: make a revision with a later start",
                quote.id, self.config.backdate_window_days
            )));
        }
        let mut metadata = HashMap::from([("quote_id".to_owned(), quote.id.clone())]);
        if let Some(number) = &quote.number {
            metadata.insert("quote_number".to_owned(), number.clone());
        }
        let mut subscription = Subscription {
            id: self.ids.mint::<SubscriptionId>().into(),
            customer_id: customer.id.clone(),
            currency: plan.currency,
            interval: plan.interval,
            start_at,
            billing_anchor_at: start_at,
            trial_end_at: None,
            cancel_at: None,
            canceled_at: None,
            cancel_reason: String::new(),
            cancel_proration: Policy::Prorate,
            past_due: false,
            version: 0,
            metadata,
            created_at: now,
            updated_at: now,
            billed_through: None,
            phases: vec![Phase {
                plan_id: plan.plan_id.clone(),
                plan_version_id: plan.id.clone(),
                start_at,
                end_at: None,
                policy: Policy::Prorate,
            }],
            pauses: Vec::new(),
            terms: contract_terms(&quote.offer.terms),
        };
        let kind = Kind::Created(subscription_event::Created {
            plan_version_id: plan.id.clone(),
            start_at: Some(timestamp(start_at)),
        });
        self.commit_change(connection, &mut subscription, start_at, now, kind)
            .await
    }

    /// The amendment `offer` makes to `subscription_id`: its plan from the offer's start
    /// on (a boundary, so nothing is prorated). Returns the subscription before and after.
    pub(crate) async fn amend_for_quote(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        plan: &PlanInfo,
        offer: &Offer,
        now: DateTime<Utc>,
    ) -> Result<(proto::Subscription, proto::Subscription)> {
        let mut subscription =
            subscription_store::load(&mut *connection, subscription_id, true).await?;
        let at = offer.starts_at;
        refuse_terms(&subscription)?;
        if subscription.ended_by(now) || subscription.cancel_at.is_some_and(|end| end <= at) {
            return Err(precondition(format!(
                "subscription {subscription_id} ends before the amendment's start {at}"
            )));
        }
        if let Some(billed) = subscription.billed_through
            && at < billed
        {
            return Err(precondition(format!(
                "the amendment starts at {at}, inside a period already invoiced (subscription {subscription_id} is billed through {billed}): make a revision with a later start"
            )));
        }
        let before = subscription.to_proto(now)?;
        let from = switch_plan(&mut subscription, plan, at, Policy::Prorate);
        let kind = Kind::PlanChanged(subscription_event::PlanChanged {
            from_plan_version_id: from,
            to_plan_version_id: plan.id.clone(),
            proration_policy: Policy::Prorate.to_wire() as i32,
        });
        let after = self
            .commit_change(connection, &mut subscription, at, now, kind)
            .await?;
        Ok((before, after))
    }
}

/// The terms a quote gives a subscription: `None` for the list price.
fn contract_terms(spec: &SubscriptionTermsSpec) -> Option<SubscriptionTermsSpec> {
    let list_price =
        SubscriptionTermsSpec::list_price(spec.plan.clone(), spec.currency, spec.starts_at);
    (*spec != list_price).then(|| spec.clone())
}

/// An amendment is refused on a subscription with contract terms: they were checked
/// against its plan version, and replacing or moving them is not supported yet.
pub(crate) fn refuse_terms(subscription: &Subscription) -> Result<()> {
    if subscription.terms.is_some() {
        return Err(precondition(format!(
            "subscription {} has contract terms: amending a contract is not supported yet (quote a new subscription, or cancel and re-quote)",
            subscription.id
        )));
    }
    Ok(())
}
