//! Creating and listing subscriptions, and the payment-driven state changes
//! (past due) that payment events make.

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_domain::ids::{CustomerId, PlanId, PlanVersionId, SubscriptionId};
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_proto::convert::optional_id;
use tally_proto::events::subscription_event::{self, Kind};
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{optional_instant, timestamp};
use crate::{customers, paging, plans};

use super::changes::Finished;
use super::store as subscription_store;
use super::{Phase, Policy, Subscription, Subscriptions, precondition};

impl Subscriptions<'_> {
    pub(super) async fn create_subscription(
        &self,
        request: proto::CreateSubscriptionRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Subscription> {
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        violations.id::<CustomerId>(&request.customer_id, "customer_id");
        violations.id::<PlanVersionId>(&request.plan_version_id, "plan_version_id");
        customers::validate_metadata(&request.metadata, &mut violations);
        let start_at = optional_instant(request.start_at.as_ref(), "start_at")?;
        let anchor = optional_instant(request.billing_anchor_at.as_ref(), "billing_anchor_at")?;
        violations.into_result()?;
        let hash = {
            let mut hashed = request.clone();
            hashed.metadata.clear();
            request_hash(&hashed.encode_to_vec(), &[&request.metadata])
        };
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        const METHOD: &str = "CreateSubscription";
        if let Some(id) = idem.claim(&mut transaction).await? {
            return self.replayed(&mut transaction, &id, now).await;
        }
        let customer = customers::load(&mut transaction, &request.customer_id, true).await?;
        if customers::is_archived(&customer) {
            return Err(precondition(format!(
                "customer {} is archived",
                customer.id
            )));
        }
        let plan = plans::published(
            &mut transaction,
            &self.rating,
            &request.plan_version_id,
            "plan_version_id",
            now,
        )
        .await?;
        if plan.currency.code() != customer.currency {
            return Err(precondition(format!(
                "plan version {} is in {}, customer {} in {}",
                plan.id,
                plan.currency.code(),
                customer.id,
                customer.currency
            )));
        }
        let start_at = start_at.unwrap_or(now);
        if start_at < self.backdate_limit(now) {
            return Err(InvoicingError::invalid(
                "start_at",
                format!(
                    "{start_at} is before the backdating window of {} days",
                    self.config.backdate_window_days
                ),
            ));
        }
        let trial_days = request.trial_days.unwrap_or(plan.trial_days);
        if trial_days > 730 {
            return Err(InvoicingError::invalid("trial_days", "must be at most 730"));
        }
        let trial_end_at =
            (trial_days > 0).then(|| start_at + Duration::days(i64::from(trial_days)));
        let billing_anchor_at = anchor.or(trial_end_at).unwrap_or(start_at);
        if billing_anchor_at < start_at {
            return Err(InvoicingError::invalid(
                "billing_anchor_at",
                format!("{billing_anchor_at} is before start_at {start_at}"),
            ));
        }
        let terms = super::terms::checked_terms(
            &self.rating,
            request.terms.as_ref(),
            super::terms::TermsOn {
                plan: &plan,
                start_at,
                billing_anchor_at,
            },
            "terms",
        )
        .await?;
        let mut subscription = Subscription {
            id: self.ids.mint::<SubscriptionId>().into(),
            customer_id: customer.id.clone(),
            currency: plan.currency,
            interval: plan.interval,
            start_at,
            billing_anchor_at,
            trial_end_at,
            cancel_at: None,
            canceled_at: None,
            cancel_reason: String::new(),
            cancel_proration: Policy::Prorate,
            past_due: false,
            version: 0,
            metadata: request.metadata.clone(),
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
            terms,
        };
        let kind = Kind::Created(subscription_event::Created {
            plan_version_id: plan.id.clone(),
            start_at: Some(timestamp(start_at)),
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, start_at, now, kind)
            .await?;
        let finished = Finished {
            action: "created",
            reason: String::new(),
            before: None,
            snapshot,
        };
        self.finish_change(transaction, &idem, finished, (origin, now))
            .await
    }

    pub(super) async fn list_subscriptions(
        &self,
        request: proto::ListSubscriptionsRequest,
    ) -> Result<proto::ListSubscriptionsResponse> {
        let mut statuses = Vec::new();
        for (index, value) in request.statuses.iter().enumerate() {
            match proto::SubscriptionStatus::try_from(*value) {
                Ok(proto::SubscriptionStatus::Unspecified) | Err(_) => {
                    return Err(InvoicingError::invalid(
                        format!("statuses[{index}]"),
                        format!("{value} is not a subscription status"),
                    ));
                }
                Ok(status) => statuses.push(status),
            }
        }
        let limit = paging::page_size(request.page_size);
        let mut before = paging::after(&request.page_token, "subscriptions")?;
        let now = self.clock.now();
        optional_id::<CustomerId>(&request.customer_id, "customer_id")?;
        optional_id::<PlanId>(&request.plan_id, "plan_id")?;
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let plan = (!request.plan_id.is_empty()).then_some(request.plan_id.as_str());
        let mut connection = self.pool.acquire().await?;
        // The status follows from the clock, so it is filtered here, reading
        // pages until enough match.
        let mut matching = Vec::new();
        loop {
            let page = subscription_store::list(
                &mut connection,
                customer,
                plan,
                before.as_deref(),
                limit + 1,
            )
            .await?;
            let exhausted = i64::try_from(page.len()).unwrap_or(i64::MAX) <= limit;
            before = page.last().map(|subscription| subscription.id.clone());
            for subscription in page {
                if statuses.is_empty() || statuses.contains(&subscription.wire_status(now)) {
                    matching.push(subscription);
                }
            }
            if exhausted || i64::try_from(matching.len()).unwrap_or(i64::MAX) > limit {
                break;
            }
        }
        let (page, next_page_token) =
            paging::finish(matching, limit, "subscriptions", |subscription| {
                &subscription.id
            });
        Ok(proto::ListSubscriptionsResponse {
            subscriptions: page
                .iter()
                .map(|subscription| subscription.to_proto(now))
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }

    /// Moves a subscription in or out of past_due (payment outcomes).
    pub(crate) async fn set_past_due(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        past_due: bool,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut subscription =
            subscription_store::load(&mut *connection, subscription_id, true).await?;
        if subscription.past_due == past_due || subscription.ended_by(now) {
            return Ok(());
        }
        let from = subscription.wire_status(now);
        let to_domain = if past_due {
            Status::PastDue
        } else {
            Status::Active
        };
        if let Some(status) = subscription.status_at(now)
            && status != to_domain
            && !status.can_transition_to(to_domain)
        {
            return Ok(());
        }
        subscription.past_due = past_due;
        let to = subscription.wire_status(now);
        let kind = Kind::StateChanged(subscription_event::StateChanged {
            from_status: from as i32,
            to_status: to as i32,
            reason,
        });
        self.commit_change(connection, &mut subscription, now, now, kind)
            .await?;
        Ok(())
    }
}
