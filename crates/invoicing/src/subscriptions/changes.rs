//! Plan changes, pauses and resumes: when a change takes effect (backdating
//! within the window, never before `billed_through`), and the one transaction
//! every change commits in.

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_domain::ids::SubscriptionId;
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_proto::events::subscription_event::{self, Kind};
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{optional_instant, timestamp};
use crate::{events, plans};

use super::store as subscription_store;
use super::{
    Pause, Phase, Policy, Subscription, Subscriptions, Timing, allow, precondition, timing,
};

/// How a subscription change ends, for [`Subscriptions::finish_change`].
pub(super) struct Finished {
    /// `created`, `plan_changed`, `canceled`, `paused`, `resumed`.
    pub(super) action: &'static str,
    /// The caller's reason, if the request takes one.
    pub(super) reason: String,
    /// The subscription before (none when created).
    pub(super) before: Option<proto::Subscription>,
    /// The subscription after.
    pub(super) snapshot: proto::Subscription,
}

/// Puts `subscription` on `plan` from `at` on, with `policy` for the change: the phases
/// from `at` on are replaced (a scheduled change is superseded). Returns the plan version
/// in force before.
pub(super) fn switch_plan(
    subscription: &mut Subscription,
    plan: &plans::PlanInfo,
    at: DateTime<Utc>,
    policy: Policy,
) -> String {
    let from = subscription
        .phase_at(at)
        .or(subscription.phases.last())
        .map(|phase| phase.plan_version_id.clone())
        .unwrap_or_default();
    subscription.phases.retain(|phase| phase.start_at < at);
    if let Some(last) = subscription.phases.last_mut() {
        last.end_at = Some(at);
    }
    subscription.phases.push(Phase {
        plan_id: plan.plan_id.clone(),
        plan_version_id: plan.id.clone(),
        start_at: at,
        end_at: None,
        policy,
    });
    from
}

impl Subscriptions<'_> {
    pub(super) fn backdate_limit(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::days(i64::from(self.config.backdate_window_days))
    }

    /// Resolves when a change to `subscription` takes effect and checks the
    /// backdating rules, naming `field` for AT_TIME.
    pub(super) fn effective_instant(
        &self,
        subscription: &Subscription,
        timing: Timing,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let from = now.max(subscription.start_at);
        let at = match timing {
            Timing::Immediately => from,
            Timing::AtPeriodEnd => subscription.period_containing(from)?.end(),
            Timing::At(at) => at,
        };
        if at < self.backdate_limit(now) {
            return Err(InvoicingError::invalid(
                "effective_at",
                format!(
                    "{at} is before the backdating window of {} days",
                    self.config.backdate_window_days
                ),
            ));
        }
        if at < subscription.start_at {
            return Err(InvoicingError::invalid(
                "effective_at",
                format!(
                    "{at} is before the subscription's start {}",
                    subscription.start_at
                ),
            ));
        }
        if let Some(billed) = subscription.billed_through
            && at < billed
        {
            return Err(precondition(format!(
                "{at} is inside a period already invoiced (billed through {billed})"
            )));
        }
        Ok(at)
    }

    /// Writes the new version and publishes it.
    pub(super) async fn commit_change(
        &self,
        connection: &mut PgConnection,
        subscription: &mut Subscription,
        effective_at: DateTime<Utc>,
        now: DateTime<Utc>,
        kind: Kind,
    ) -> Result<proto::Subscription> {
        subscription.version += 1;
        subscription.updated_at = now;
        subscription_store::store(&mut *connection, subscription).await?;
        let snapshot = subscription.to_proto(now)?;
        events::subscription_changed(&mut *connection, snapshot.clone(), effective_at, now, kind)
            .await?;
        Ok(snapshot)
    }

    /// The end of every change: its idempotency record, then its audit entry
    /// (last: the chain's lock is taken after every other), then the commit.
    pub(super) async fn finish_change(
        &self,
        mut transaction: sqlx::Transaction<'static, sqlx::Postgres>,
        idem: &idempotency::Key<'_>,
        finished: Finished,
        (origin, now): (&tally_audit::Origin, DateTime<Utc>),
    ) -> Result<proto::Subscription> {
        let Finished {
            action,
            reason,
            before,
            snapshot,
        } = finished;
        idem.record(&mut transaction, &snapshot.id, now).await?;
        self.audit_subscription(
            &mut transaction,
            (action, &reason),
            before.as_ref(),
            &snapshot,
            (origin, now),
        )
        .await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    /// A replay returns the subscription as it is now.
    pub(super) async fn replayed(
        &self,
        connection: &mut PgConnection,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<proto::Subscription> {
        subscription_store::load(connection, id, false)
            .await?
            .to_proto(now)
    }

    /// Common start of every change: validation of the key and id, the
    /// idempotency claim, and the locked subscription (or the replay).
    pub(super) async fn begin_change(
        &self,
        connection: &mut PgConnection,
        idem: &idempotency::Key<'_>,
        subscription_id: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<Subscription, proto::Subscription>> {
        let mut violations = Violations::default();
        idempotency::check_key(idem.key, &mut violations);
        violations.id::<SubscriptionId>(subscription_id, "subscription_id");
        violations.into_result()?;
        if let Some(id) = idem.claim(&mut *connection).await? {
            return Ok(Err(self.replayed(connection, &id, now).await?));
        }
        let subscription =
            subscription_store::load(&mut *connection, subscription_id, true).await?;
        if subscription.ended_by(now) {
            return Err(precondition(format!(
                "subscription {} is canceled",
                subscription.id
            )));
        }
        Ok(Ok(subscription))
    }

    pub(super) async fn change_plan(
        &self,
        request: proto::ChangePlanRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Subscription> {
        const METHOD: &str = "ChangePlan";
        let timing = timing(request.timing, request.effective_at.as_ref())?;
        let policy = Policy::from_wire(request.proration_policy, "proration_policy")?;
        if request.plan_version_id.is_empty() {
            return Err(InvoicingError::invalid("plan_version_id", "is required"));
        }
        if request.reason.chars().count() > 500 {
            return Err(InvoicingError::invalid(
                "reason",
                "must be at most 500 characters",
            ));
        }
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut subscription = match self
            .begin_change(&mut transaction, &idem, &request.subscription_id, now)
            .await?
        {
            Ok(subscription) => subscription,
            Err(replay) => return Ok(replay),
        };
        if subscription.terms.is_some() {
            // Terms are checked against one plan version; moving them to another is an
            // amendment of the contract, which does not exist yet.
            return Err(precondition(format!(
                "subscription {} has contract terms for its plan version: a plan change would leave them unchecked; cancel and subscribe again with new terms",
                subscription.id
            )));
        }
        let before = subscription.to_proto(now)?;
        // A plan change keeps the status: the domain only asks for a live
        // subscription, which `begin_change` checked.
        let plan = plans::published(
            &mut transaction,
            &self.rating,
            &request.plan_version_id,
            "plan_version_id",
            now,
        )
        .await?;
        if plan.currency != subscription.currency {
            return Err(precondition(format!(
                "plan version {} is in {}, the subscription in {}",
                plan.id,
                plan.currency.code(),
                subscription.currency.code()
            )));
        }
        if plan.interval != subscription.interval {
            return Err(precondition(format!(
                "plan version {} bills every {}, the subscription every {}; changing the interval needs a new subscription",
                plan.id,
                plans::interval_name(plan.interval),
                plans::interval_name(subscription.interval)
            )));
        }
        let at = self.effective_instant(&subscription, timing, now)?;
        if subscription.cancel_at.is_some_and(|end| at >= end) {
            return Err(precondition(format!(
                "subscription {} ends before {at}",
                subscription.id
            )));
        }
        let from = switch_plan(&mut subscription, &plan, at, policy);
        let kind = Kind::PlanChanged(subscription_event::PlanChanged {
            from_plan_version_id: from,
            to_plan_version_id: plan.id.clone(),
            proration_policy: policy.to_wire() as i32,
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        let finished = Finished {
            action: "plan_changed",
            reason: request.reason.clone(),
            before: Some(before),
            snapshot,
        };
        self.finish_change(transaction, &idem, finished, (origin, now))
            .await
    }

    pub(super) async fn pause_subscription(
        &self,
        request: proto::PauseSubscriptionRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Subscription> {
        const METHOD: &str = "PauseSubscription";
        let pause_at = optional_instant(request.pause_at.as_ref(), "pause_at")?;
        let resume_at = optional_instant(request.resume_at.as_ref(), "resume_at")?;
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut subscription = match self
            .begin_change(&mut transaction, &idem, &request.subscription_id, now)
            .await?
        {
            Ok(subscription) => subscription,
            Err(replay) => return Ok(replay),
        };
        let before = subscription.to_proto(now)?;
        let timing = pause_at.map_or(Timing::Immediately, Timing::At);
        let at = self.effective_instant(&subscription, timing, now)?;
        if resume_at.is_some_and(|resume| resume <= at) {
            return Err(InvoicingError::invalid(
                "resume_at",
                "must be after pause_at",
            ));
        }
        let status_at_pause = subscription.status_at(at.max(now));
        match status_at_pause {
            None => {
                return Err(precondition(format!(
                    "subscription {} has not started",
                    subscription.id
                )));
            }
            Some(from) if !from.can_transition_to(Status::Paused) => {
                return Err(precondition(format!(
                    "subscription {} is {from:?}; it cannot be paused",
                    subscription.id
                )));
            }
            Some(_) => {}
        }
        let overlaps = subscription.pauses.iter().any(|pause| {
            pause.resume_at.is_none_or(|end| at < end)
                && resume_at.is_none_or(|resume| pause.pause_at < resume)
        });
        if overlaps {
            return Err(precondition(format!(
                "subscription {} already has a pause overlapping {at}",
                subscription.id
            )));
        }
        subscription.pauses.push(Pause {
            pause_at: at,
            resume_at,
        });
        let kind = Kind::Paused(subscription_event::Paused {
            resume_at: resume_at.map(timestamp),
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        let finished = Finished {
            action: "paused",
            reason: String::new(),
            before: Some(before),
            snapshot,
        };
        self.finish_change(transaction, &idem, finished, (origin, now))
            .await
    }

    pub(super) async fn resume_subscription(
        &self,
        request: proto::ResumeSubscriptionRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Subscription> {
        const METHOD: &str = "ResumeSubscription";
        let resume_at = optional_instant(request.resume_at.as_ref(), "resume_at")?;
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut subscription = match self
            .begin_change(&mut transaction, &idem, &request.subscription_id, now)
            .await?
        {
            Ok(subscription) => subscription,
            Err(replay) => return Ok(replay),
        };
        let before = subscription.to_proto(now)?;
        let timing = resume_at.map_or(Timing::Immediately, Timing::At);
        let at = self.effective_instant(&subscription, timing, now)?;
        let open_pause = subscription
            .pauses
            .iter()
            .position(|pause| pause.resume_at.is_none_or(|end| end > at));
        let kind = if let Some(index) = open_pause {
            if subscription.pauses[index].pause_at <= now {
                allow(
                    &subscription,
                    Status::Active,
                    subscription.pauses[index].pause_at,
                )?;
            }
            if subscription.pauses[index].pause_at >= at {
                // Not started yet: withdrawn.
                subscription.pauses.remove(index);
            } else {
                subscription.pauses[index].resume_at = Some(at);
            }
            Kind::Resumed(subscription_event::Resumed {
                cancellation_withdrawn: false,
            })
        } else if subscription.cancel_at.is_some_and(|end| end > now) {
            subscription.cancel_at = None;
            subscription.canceled_at = None;
            subscription.cancel_reason.clear();
            Kind::Resumed(subscription_event::Resumed {
                cancellation_withdrawn: true,
            })
        } else {
            return Err(precondition(format!(
                "subscription {} is neither paused nor scheduled to cancel",
                subscription.id
            )));
        };
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        let finished = Finished {
            action: "resumed",
            reason: String::new(),
            before: Some(before),
            snapshot,
        };
        self.finish_change(transaction, &idem, finished, (origin, now))
            .await
    }
}
