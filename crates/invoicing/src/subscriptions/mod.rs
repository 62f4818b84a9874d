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
pub mod model;

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_proto::events::subscription_event::{self, Kind};
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::wire::{optional_instant, timestamp};
use crate::{Context, customers, events, paging, plans};
pub use model::{Pause, Phase, Policy, Subscription};

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

impl Context {
    fn backdate_limit(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::days(i64::from(self.config.backdate_window_days))
    }

    /// Resolves when a change to `subscription` takes effect and checks the
    /// backdating rules, naming `field` for AT_TIME.
    fn effective_instant(
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
    async fn commit_change(
        &self,
        connection: &mut PgConnection,
        subscription: &mut Subscription,
        effective_at: DateTime<Utc>,
        now: DateTime<Utc>,
        kind: Kind,
    ) -> Result<proto::Subscription> {
        subscription.version += 1;
        subscription.updated_at = now;
        model::store(&mut *connection, subscription).await?;
        let snapshot = subscription.to_proto(now)?;
        events::subscription_changed(&mut *connection, snapshot.clone(), effective_at, now, kind)
            .await?;
        Ok(snapshot)
    }

    /// A replay returns the subscription as it is now.
    async fn replayed(
        &self,
        connection: &mut PgConnection,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<proto::Subscription> {
        model::load(connection, id, false).await?.to_proto(now)
    }

    async fn create_subscription(
        &self,
        request: proto::CreateSubscriptionRequest,
    ) -> Result<proto::Subscription> {
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        if request.customer_id.is_empty() {
            violations.add("customer_id", "is required");
        }
        if request.plan_version_id.is_empty() {
            violations.add("plan_version_id", "is required");
        }
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
        let mut subscription = Subscription {
            id: self.ids.new_id("sub"),
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
        };
        let kind = Kind::Created(subscription_event::Created {
            plan_version_id: plan.id.clone(),
            start_at: Some(timestamp(start_at)),
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, start_at, now, kind)
            .await?;
        idem.record(&mut transaction, &subscription.id, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    /// Common start of every change: validation of the key and id, the
    /// idempotency claim, and the locked subscription (or the replay).
    async fn begin_change(
        &self,
        connection: &mut PgConnection,
        idem: &idempotency::Key<'_>,
        subscription_id: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<Subscription, proto::Subscription>> {
        let mut violations = Violations::default();
        idempotency::check_key(idem.key, &mut violations);
        if subscription_id.is_empty() {
            violations.add("subscription_id", "is required");
        }
        violations.into_result()?;
        if let Some(id) = idem.claim(&mut *connection).await? {
            return Ok(Err(self.replayed(connection, &id, now).await?));
        }
        let subscription = model::load(&mut *connection, subscription_id, true).await?;
        if subscription.ended_by(now) {
            return Err(precondition(format!(
                "subscription {} is canceled",
                subscription.id
            )));
        }
        Ok(Ok(subscription))
    }

    async fn change_plan(&self, request: proto::ChangePlanRequest) -> Result<proto::Subscription> {
        const METHOD: &str = "ChangePlan";
        let timing = timing(request.timing, request.effective_at.as_ref())?;
        let policy = Policy::from_wire(request.proration_policy, "proration_policy")?;
        if request.plan_version_id.is_empty() {
            return Err(InvoicingError::invalid("plan_version_id", "is required"));
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
        let from = subscription
            .phase_at(at)
            .or(subscription.phases.last())
            .map(|phase| phase.plan_version_id.clone())
            .unwrap_or_default();
        // Phases from `at` on are replaced (a scheduled change is superseded).
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
        let kind = Kind::PlanChanged(subscription_event::PlanChanged {
            from_plan_version_id: from,
            to_plan_version_id: plan.id.clone(),
            proration_policy: policy.to_wire() as i32,
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        idem.record(&mut transaction, &subscription.id, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn cancel_subscription(
        &self,
        request: proto::CancelSubscriptionRequest,
    ) -> Result<proto::Subscription> {
        const METHOD: &str = "CancelSubscription";
        let timing = timing(request.timing, request.effective_at.as_ref())?;
        let policy = Policy::from_wire(request.proration_policy, "proration_policy")?;
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
        allow(&subscription, Status::Canceled, now)?;
        let at = self.effective_instant(&subscription, timing, now)?;
        subscription.cancel_at = Some(at);
        subscription.canceled_at = Some(now);
        subscription.cancel_reason.clone_from(&request.reason);
        subscription.cancel_proration = policy;
        let kind = Kind::Canceled(subscription_event::Canceled {
            at_period_end: timing == Timing::AtPeriodEnd,
            reason: request.reason.clone(),
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        if subscription.billed_through == Some(at) && policy != Policy::None {
            self.credit_unused_advance(&mut transaction, &subscription.id, at, now)
                .await?;
        }
        idem.record(&mut transaction, &subscription.id, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    /// A subscription ending exactly at an invoiced boundary has no later
    /// invoice to carry the credit for the in-advance fees that boundary
    /// billed: a draft is simply composed again by the next bill run (which
    /// drops them); a finalized invoice gets a credit note for them.
    async fn credit_unused_advance(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        boundary: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let invoice: Option<(String, String)> = sqlx::query_as(
            "SELECT id, status FROM invoicing.invoices WHERE subscription_id = $1 AND boundary_at = $2 FOR UPDATE",
        )
        .bind(subscription_id)
        .bind(boundary)
        .fetch_optional(&mut *connection)
        .await?;
        let Some((invoice_id, status)) = invoice else {
            return Ok(());
        };
        if status == "draft" || status == "void" {
            return Ok(());
        }
        let advance: Vec<(String, rust_decimal::Decimal)> = sqlx::query_as(
            "SELECT id, amount FROM invoicing.invoice_lines WHERE invoice_id = $1 AND in_advance \
               AND service_start >= $2 AND amount > 0 ORDER BY position",
        )
        .bind(&invoice_id)
        .bind(boundary)
        .fetch_all(&mut *connection)
        .await?;
        if advance.is_empty() {
            return Ok(());
        }
        let row = crate::billing::store::load(&mut *connection, &invoice_id, true).await?;
        let currency = row.currency()?;
        // A credit note for what remains creditable in money; the rest was
        // paid by credits, which go back to the grants they came from.
        let unused: rust_decimal::Decimal = advance.iter().map(|(_, amount)| *amount).sum();
        let mut creditable = row.total - row.amount_credited;
        let mut lines = Vec::new();
        for (line_id, amount) in advance {
            let amount = amount.min(creditable);
            if amount <= rust_decimal::Decimal::ZERO {
                break;
            }
            creditable -= amount;
            lines.push(proto::CreditNoteLine {
                invoice_line_id: line_id,
                description: "Unused in-advance fee".into(),
                amount: Some(crate::wire::money(amount, currency)),
            });
        }
        let noted: rust_decimal::Decimal = lines
            .iter()
            .filter_map(|line| {
                line.amount
                    .as_ref()?
                    .amount
                    .parse::<rust_decimal::Decimal>()
                    .ok()
            })
            .sum();
        if !lines.is_empty() {
            let note = crate::invoices::NoteRequest {
                reason: proto::CreditNoteReason::OrderChange,
                memo: format!("subscription {subscription_id} canceled at {boundary}"),
                lines: Some(lines),
                credit_to_balance: true,
                refund_id: None,
            };
            self.issue_credit_note(&mut *connection, &row, note, now)
                .await?;
        }
        if unused > noted {
            crate::credits::return_burns(
                connection,
                &*self.ids,
                &invoice_id,
                Some(unused - noted),
                "unused in-advance fee after cancellation, credits returned",
                now,
            )
            .await?;
        }
        Ok(())
    }

    async fn pause_subscription(
        &self,
        request: proto::PauseSubscriptionRequest,
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
        idem.record(&mut transaction, &subscription.id, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
    }

    async fn resume_subscription(
        &self,
        request: proto::ResumeSubscriptionRequest,
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
        idem.record(&mut transaction, &subscription.id, now).await?;
        transaction.commit().await?;
        Ok(snapshot)
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
        let mut subscription = model::load(&mut *connection, subscription_id, true).await?;
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

    /// Ends a subscription now (dunning gave up and the policy cancels).
    pub(crate) async fn cancel_now(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut subscription = model::load(&mut *connection, subscription_id, true).await?;
        if subscription.ended_by(now) {
            return Ok(());
        }
        let at = now.max(subscription.start_at);
        subscription.cancel_at = Some(at);
        subscription.canceled_at = Some(now);
        subscription.cancel_reason.clone_from(&reason);
        subscription.cancel_proration = Policy::None;
        let kind = Kind::Canceled(subscription_event::Canceled {
            at_period_end: false,
            reason,
        });
        self.commit_change(connection, &mut subscription, at, now, kind)
            .await?;
        Ok(())
    }

    async fn list_subscriptions(
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
        let customer = (!request.customer_id.is_empty()).then_some(request.customer_id.as_str());
        let plan = (!request.plan_id.is_empty()).then_some(request.plan_id.as_str());
        let mut connection = self.pool.acquire().await?;
        // The status follows from the clock, so it is filtered here, reading
        // pages until enough match.
        let mut matching = Vec::new();
        loop {
            let page = model::list(
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
}
