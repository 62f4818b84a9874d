//! A subscription's contract terms: read from a request, checked against the plan version
//! with the domain (`SubscriptionTerms::new`), kept as the domain's spec on the
//! subscription (`invoicing.subscriptions.terms`) and published with every snapshot.
//!
//! The domain prices terms on the subscription's billing cycle from the contract start
//! (the subscription's start): a subscription with terms is anchored on its start, or on
//! a calendar boundary of its interval (the first period is then a stub). Any other
//! anchor (a trial ending mid-period, an anchor of the caller's choosing) is refused until
//! the domain takes a cycle anchor of its own.

use chrono::{DateTime, Utc};
use tally_domain::plan::{AnchorPolicy, Plan, PlanSpec};
use tally_domain::subscription::PlanRef;
use tally_domain::terms::{SubscriptionTerms, SubscriptionTermsSpec};
use tally_proto::convert::catalog::plan_version;
use tally_proto::convert::terms::{TermsContext, subscription_terms, terms_violation};
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result};
use crate::plans::PlanInfo;
use crate::rating::RatingClient;

/// Where the terms sit: the subscription's plan version, start and billing anchor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TermsOn<'a> {
    /// The plan version (`pv_…`) as invoicing keeps it.
    pub plan: &'a PlanInfo,
    /// The contract start.
    pub start_at: DateTime<Utc>,
    /// The subscription's billing anchor.
    pub billing_anchor_at: DateTime<Utc>,
}

/// Reads `terms` (at `field`) and checks them against the plan version: `None` when the
/// request has none. A broken rule is INVALID_ARGUMENT on the term's path.
pub(crate) async fn checked_terms(
    rating: &RatingClient,
    terms: Option<&proto::SubscriptionTerms>,
    on: TermsOn<'_>,
    field: &str,
) -> Result<Option<SubscriptionTermsSpec>> {
    let Some(terms) = terms else {
        return Ok(None);
    };
    let plan = terms_plan(rating, on).await?;
    let context = TermsContext {
        plan: PlanRef::from(&plan),
        currency: plan.currency(),
        starts_at: on.start_at,
    };
    let spec = subscription_terms(terms, context, field)?;
    let checked = SubscriptionTerms::new(spec, &plan)
        .map_err(|error| InvoicingError::from(terms_violation(&error, field)))?;
    Ok(Some(checked.spec().clone()))
}

/// The domain plan version terms are checked and priced with, anchored as the
/// subscription is (module docs).
pub(crate) async fn terms_plan(rating: &RatingClient, on: TermsOn<'_>) -> Result<Plan> {
    let wire = rating.plan_version(&on.plan.id).await?;
    let plan = plan_version(&wire).map_err(|violation| {
        InvoicingError::internal(format!(
            "plan version {} from rating does not read as a plan: {violation}",
            on.plan.id
        ))
    })?;
    if on.billing_anchor_at == on.start_at {
        return Ok(plan);
    }
    let calendar = Plan::new(PlanSpec {
        anchor: AnchorPolicy::Calendar,
        ..plan.spec().clone()
    })
    .map_err(InvoicingError::internal)?;
    let cycle = calendar.cycle_for(on.start_at);
    let on_calendar = cycle
        .index_of(on.billing_anchor_at)
        .and_then(|index| cycle.boundary(index))
        .is_ok_and(|boundary| boundary == on.billing_anchor_at);
    if !on_calendar {
        return Err(InvoicingError::invalid(
            "billing_anchor_at",
            format!(
                "a subscription with terms is anchored on its start or on a calendar boundary of its interval (the terms' billing cycle); {} is neither (a trial moves the anchor: set trial_days to 0)",
                on.billing_anchor_at
            ),
        ));
    }
    Ok(calendar)
}
