//! A subscription as invoicing stores it: phases (plan version over time),
//! pause windows, trial and cancellation instants. The status is not stored:
//! it follows from these instants and the service clock (plus the past_due
//! flag set by payment failures), so a trial converts and a scheduled
//! cancellation takes effect the moment the clock passes them, in every
//! replica, without a write.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tally_domain::money::Currency;
use tally_domain::period::{BillingCycle, BillingInterval, Period};
use tally_domain::proration::ProrationPolicy;
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_domain::terms::SubscriptionTermsSpec;
use tally_proto::convert::terms::subscription_terms_value;
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result};
use crate::wire::{maybe_timestamp, period_range, timestamp};

/// A proration policy as requested (NONE is kept: it changes which plan's
/// fees a period is billed on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// No proration: the plan in force at the period's start bills it.
    None,
    /// By second.
    Prorate,
    /// By whole UTC day.
    ProrateByDay,
}

impl Policy {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Prorate => "prorate",
            Policy::ProrateByDay => "prorate_by_day",
        }
    }

    /// From a stored name.
    pub fn from_name(name: &str) -> Result<Policy> {
        Ok(match name {
            "none" => Policy::None,
            "prorate" => Policy::Prorate,
            "prorate_by_day" => Policy::ProrateByDay,
            other => return Err(InvoicingError::Internal(format!("stored policy {other:?}"))),
        })
    }

    /// From the wire (UNSPECIFIED is PRORATE), naming `field`.
    pub fn from_wire(value: i32, field: &str) -> Result<Policy> {
        match proto::ProrationPolicy::try_from(value) {
            Ok(proto::ProrationPolicy::Unspecified | proto::ProrationPolicy::Prorate) => {
                Ok(Policy::Prorate)
            }
            Ok(proto::ProrationPolicy::ProrateByDay) => Ok(Policy::ProrateByDay),
            Ok(proto::ProrationPolicy::None) => Ok(Policy::None),
            Err(_) => Err(InvoicingError::invalid(
                field,
                format!("{value} is not a proration policy"),
            )),
        }
    }

    /// On the wire.
    pub fn to_wire(self) -> proto::ProrationPolicy {
        match self {
            Policy::None => proto::ProrationPolicy::None,
            Policy::Prorate => proto::ProrationPolicy::Prorate,
            Policy::ProrateByDay => proto::ProrationPolicy::ProrateByDay,
        }
    }

    /// The domain measure used for factors (NONE never prorates a change,
    /// but trials and pauses still cut periods by the second).
    pub fn measure(self) -> ProrationPolicy {
        match self {
            Policy::ProrateByDay => ProrationPolicy::ByDay,
            Policy::None | Policy::Prorate => ProrationPolicy::BySecond,
        }
    }
}

/// A stretch of the subscription on one plan version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// `plan_…`.
    pub plan_id: String,
    /// `pv_…`.
    pub plan_version_id: String,
    /// Inclusive start.
    pub start_at: DateTime<Utc>,
    /// Exclusive end; `None` for the last phase.
    pub end_at: Option<DateTime<Utc>>,
    /// Policy of the change that started it (`Prorate` for the first).
    pub policy: Policy,
}

impl Phase {
    /// Whether `instant` is inside.
    pub fn covers(&self, instant: DateTime<Utc>) -> bool {
        self.start_at <= instant && self.end_at.is_none_or(|end| instant < end)
    }
}

/// A pause window; `resume_at` `None` is indefinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    /// Start.
    pub pause_at: DateTime<Utc>,
    /// End.
    pub resume_at: Option<DateTime<Utc>>,
}

impl Pause {
    /// The wire window.
    pub fn to_proto(&self) -> proto::PauseWindow {
        proto::PauseWindow {
            pause_at: Some(timestamp(self.pause_at)),
            resume_at: maybe_timestamp(self.resume_at),
        }
    }

    /// Whether `instant` is inside.
    pub fn covers(&self, instant: DateTime<Utc>) -> bool {
        self.pause_at <= instant && self.resume_at.is_none_or(|end| instant < end)
    }
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub currency: Currency,
    pub interval: BillingInterval,
    pub start_at: DateTime<Utc>,
    pub billing_anchor_at: DateTime<Utc>,
    pub trial_end_at: Option<DateTime<Utc>>,
    /// When it ends (immediate cancellation: the instant of the request).
    pub cancel_at: Option<DateTime<Utc>>,
    /// When cancellation was requested.
    pub canceled_at: Option<DateTime<Utc>>,
    pub cancel_reason: String,
    /// How unused in-advance fees are handled when it ends mid-period.
    pub cancel_proration: Policy,
    pub past_due: bool,
    pub version: i64,
    pub metadata: HashMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Last boundary invoiced.
    pub billed_through: Option<DateTime<Utc>>,
    pub phases: Vec<Phase>,
    pub pauses: Vec<Pause>,
    /// The negotiated terms on top of the plan version (checked against it when set);
    /// `None`: the list price.
    pub terms: Option<SubscriptionTermsSpec>,
}

impl Subscription {
    /// The billing cycle.
    pub fn cycle(&self) -> BillingCycle {
        BillingCycle::new(self.billing_anchor_at, self.interval)
    }

    /// The billing period containing `instant` (rating's period for it).
    pub fn period_containing(&self, instant: DateTime<Utc>) -> Result<Period> {
        let cycle = self.cycle();
        let index = cycle.index_of(instant).map_err(InvoicingError::internal)?;
        cycle.period(index).map_err(InvoicingError::internal)
    }

    /// The current period at `now` as the customer sees it: the billing
    /// period containing `now`, starting no earlier than the subscription.
    /// A start between two anchor dates (a trial whose end is the anchor, an
    /// anchor on the 1st) makes the first period a stub: a 5-day trial from
    /// 1 April anchored on 6 April is in 1 April → 6 April, not in the
    /// cycle's 6 March → 6 April.
    pub fn current_period(&self, now: DateTime<Utc>) -> Result<Period> {
        let period = self.period_containing(now)?;
        if period.start() >= self.start_at {
            return Ok(period);
        }
        Period::new(self.start_at, period.end()).map_err(InvoicingError::internal)
    }

    /// Whether it has ended by `now`.
    pub fn ended_by(&self, now: DateTime<Utc>) -> bool {
        self.cancel_at.is_some_and(|end| end <= now)
    }

    /// The domain status at `now`; `None` while pending (before the start).
    pub fn status_at(&self, now: DateTime<Utc>) -> Option<Status> {
        if self.ended_by(now) {
            return Some(Status::Canceled);
        }
        if now < self.start_at {
            return None;
        }
        if self.pauses.iter().any(|pause| pause.covers(now)) {
            return Some(Status::Paused);
        }
        if self.past_due {
            return Some(Status::PastDue);
        }
        if self.trial_end_at.is_some_and(|end| now < end) {
            return Some(Status::Trialing);
        }
        Some(Status::Active)
    }

    /// The wire status at `now`.
    pub fn wire_status(&self, now: DateTime<Utc>) -> proto::SubscriptionStatus {
        match self.status_at(now) {
            None => proto::SubscriptionStatus::Pending,
            Some(Status::Trialing) => proto::SubscriptionStatus::Trialing,
            Some(Status::Active) => proto::SubscriptionStatus::Active,
            Some(Status::PastDue) => proto::SubscriptionStatus::PastDue,
            Some(Status::Paused) => proto::SubscriptionStatus::Paused,
            Some(Status::Canceled) => proto::SubscriptionStatus::Canceled,
        }
    }

    /// The phase in force at `instant`.
    pub fn phase_at(&self, instant: DateTime<Utc>) -> Option<&Phase> {
        self.phases.iter().find(|phase| phase.covers(instant))
    }

    /// The phase in force at `now`, or the first one before the start, or
    /// the last one after the end.
    pub fn current_phase(&self, now: DateTime<Utc>) -> Result<&Phase> {
        self.phase_at(now)
            .or_else(|| {
                if now < self.start_at {
                    self.phases.first()
                } else {
                    self.phases.iter().rev().find(|phase| phase.start_at <= now)
                }
            })
            .ok_or_else(|| {
                InvoicingError::Internal(format!("subscription {} has no phases", self.id))
            })
    }

    /// The next boundary to invoice after `after` (`None`: the start, whose
    /// invoice bills the first in-advance fees); `None` when it has ended.
    pub fn next_boundary(&self, after: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>> {
        let Some(after) = after else {
            return Ok(Some(self.start_at));
        };
        if self.cancel_at.is_some_and(|end| after >= end) {
            return Ok(None);
        }
        let cycle = self.cycle();
        let index = cycle.index_of(after).map_err(InvoicingError::internal)?;
        let next = cycle
            .boundary(index + 1)
            .map_err(InvoicingError::internal)?;
        Ok(Some(self.cancel_at.map_or(next, |end| next.min(end))))
    }

    /// The subscription as it stood at `instant`, for what a boundary at
    /// `instant` bills in advance: every change that takes effect after it
    /// is left out — a later phase (the last phase in force runs on), a
    /// pause that starts later, the end of a pause in force (it may have been
    /// resumed after the boundary), a cancellation after it. Those changes
    /// are billed by the true-up at the next boundary, whenever the bill run
    /// composes this one: before the change was made, or after (a run
    /// deferred because rating had not seen a change yet, a scheduler tick
    /// late). So what a boundary bills in advance never depends on when the
    /// bill run came. Changes effective at or before `instant` (backdated
    /// ones included) are kept.
    pub fn as_of(&self, instant: DateTime<Utc>) -> Subscription {
        let mut view = self.clone();
        let first = view.phases.first().cloned();
        view.phases.retain(|phase| phase.start_at <= instant);
        if view.phases.is_empty() {
            view.phases.extend(first);
        }
        if let Some(last) = view.phases.last_mut() {
            last.end_at = None;
        }
        view.pauses = self
            .pauses
            .iter()
            .filter(|pause| pause.covers(instant))
            .map(|pause| Pause {
                pause_at: pause.pause_at,
                resume_at: None,
            })
            .collect();
        view.cancel_at = self.cancel_at.filter(|end| *end <= instant);
        view
    }

    /// The first instant the bill run must look at it again.
    pub fn next_bill_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.next_boundary(self.billed_through)
    }

    /// The latest pause window (the one the snapshot carries).
    pub fn latest_pause(&self) -> Option<&Pause> {
        self.pauses.iter().max_by_key(|pause| pause.pause_at)
    }

    /// The wire snapshot at `now`.
    pub fn to_proto(&self, now: DateTime<Utc>) -> Result<proto::Subscription> {
        let current = self.current_phase(now)?;
        let status = self.wire_status(now);
        let current_period = match status {
            proto::SubscriptionStatus::Pending | proto::SubscriptionStatus::Canceled => None,
            _ => Some(period_range(&self.current_period(now)?)),
        };
        Ok(proto::Subscription {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            plan_id: current.plan_id.clone(),
            plan_version_id: current.plan_version_id.clone(),
            status: status as i32,
            currency: self.currency.code().to_owned(),
            start_at: Some(timestamp(self.start_at)),
            billing_anchor_at: Some(timestamp(self.billing_anchor_at)),
            trial_end_at: maybe_timestamp(self.trial_end_at),
            current_period,
            phases: self
                .phases
                .iter()
                .enumerate()
                .map(|(index, phase)| proto::SubscriptionPhase {
                    plan_id: phase.plan_id.clone(),
                    plan_version_id: phase.plan_version_id.clone(),
                    start_at: Some(timestamp(phase.start_at)),
                    end_at: maybe_timestamp(phase.end_at),
                    proration_policy: if index == 0 {
                        proto::ProrationPolicy::Unspecified as i32
                    } else {
                        phase.policy.to_wire() as i32
                    },
                })
                .collect(),
            cancel_at: maybe_timestamp(self.cancel_at),
            canceled_at: maybe_timestamp(self.canceled_at),
            ended_at: maybe_timestamp(self.cancel_at.filter(|end| *end <= now)),
            pause: self.latest_pause().map(Pause::to_proto),
            pauses: {
                let mut pauses: Vec<&Pause> = self.pauses.iter().collect();
                pauses.sort_by_key(|pause| pause.pause_at);
                pauses.into_iter().map(Pause::to_proto).collect()
            },
            version: u64::try_from(self.version).unwrap_or(0),
            metadata: self.metadata.clone(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            terms: self.terms.as_ref().map(subscription_terms_value),
        })
    }
}

/// A monthly USD subscription on `pv_1` from `start` (for tests).
#[cfg(test)]
pub(crate) fn fixture(start: DateTime<Utc>, anchor: DateTime<Utc>) -> Subscription {
    Subscription {
        id: "sub_1".into(),
        customer_id: "cus_1".into(),
        currency: Currency::USD,
        interval: BillingInterval::Month,
        start_at: start,
        billing_anchor_at: anchor,
        trial_end_at: None,
        cancel_at: None,
        canceled_at: None,
        cancel_reason: String::new(),
        cancel_proration: Policy::Prorate,
        past_due: false,
        version: 1,
        metadata: HashMap::new(),
        created_at: start,
        updated_at: start,
        billed_through: None,
        phases: vec![Phase {
            plan_id: "plan_1".into(),
            plan_version_id: "pv_1".into(),
            start_at: start,
            end_at: None,
            policy: Policy::Prorate,
        }],
        pauses: Vec::new(),
        terms: None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
    }

    fn boundaries(subscription: &Subscription, count: usize) -> Vec<DateTime<Utc>> {
        let mut after = None;
        let mut found = Vec::new();
        while let Some(next) = subscription.next_boundary(after).unwrap() {
            found.push(next);
            after = Some(next);
            if found.len() == count {
                break;
            }
        }
        found
    }

    #[test]
    fn boundaries_follow_the_anchor_and_stop_at_the_end() {
        let on_the_31st = fixture(at(2024, 1, 31), at(2024, 1, 31));
        assert_eq!(
            boundaries(&on_the_31st, 5),
            vec![
                at(2024, 1, 31),
                at(2024, 2, 29),
                at(2024, 3, 31),
                at(2024, 4, 30),
                at(2024, 5, 31)
            ]
        );
        let mut ending = fixture(at(2025, 1, 15), at(2025, 2, 1));
        ending.cancel_at = Some(at(2025, 3, 10));
        assert_eq!(
            boundaries(&ending, 10),
            vec![
                at(2025, 1, 15),
                at(2025, 2, 1),
                at(2025, 3, 1),
                at(2025, 3, 10)
            ]
        );
    }

    #[test]
    fn the_current_period_starts_no_earlier_than_the_subscription() {
        let mut trial = fixture(at(2026, 4, 1), at(2026, 4, 6));
        trial.trial_end_at = Some(at(2026, 4, 6));
        let period = |subscription: &Subscription, now| {
            let period = subscription.current_period(now).unwrap();
            (period.start(), period.end())
        };
        assert_eq!(
            period(&trial, at(2026, 4, 1)),
            (at(2026, 4, 1), at(2026, 4, 6))
        );
        assert_eq!(
            period(&trial, at(2026, 4, 5)),
            (at(2026, 4, 1), at(2026, 4, 6))
        );
        assert_eq!(
            period(&trial, at(2026, 4, 6)),
            (at(2026, 4, 6), at(2026, 5, 6))
        );
        let stub = fixture(at(2025, 1, 16), at(2025, 2, 1));
        assert_eq!(
            period(&stub, at(2025, 1, 20)),
            (at(2025, 1, 16), at(2025, 2, 1))
        );
    }

    #[test]
    fn the_status_follows_the_clock() {
        let mut subscription = fixture(at(2025, 1, 1), at(2025, 1, 15));
        subscription.trial_end_at = Some(at(2025, 1, 15));
        subscription.pauses.push(Pause {
            pause_at: at(2025, 2, 1),
            resume_at: Some(at(2025, 2, 10)),
        });
        subscription.cancel_at = Some(at(2025, 3, 1));
        assert_eq!(subscription.status_at(at(2024, 12, 31)), None);
        assert_eq!(
            subscription.status_at(at(2025, 1, 2)),
            Some(Status::Trialing)
        );
        assert_eq!(
            subscription.status_at(at(2025, 1, 20)),
            Some(Status::Active)
        );
        assert_eq!(subscription.status_at(at(2025, 2, 5)), Some(Status::Paused));
        assert_eq!(
            subscription.status_at(at(2025, 3, 1)),
            Some(Status::Canceled)
        );
        subscription.past_due = true;
        assert_eq!(
            subscription.status_at(at(2025, 2, 20)),
            Some(Status::PastDue)
        );
    }
}
