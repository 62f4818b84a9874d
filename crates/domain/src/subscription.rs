//! Subscriptions: a state machine over a plan version and its billing periods.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, PlanId, SubscriptionId};
use crate::money::Money;
use crate::period::{BillingCycle, Period, PeriodError};
use crate::plan::Plan;
use crate::proration::{PlanChangeProration, ProrationError, ProrationPolicy, plan_change};

/// What can go wrong with a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The state machine does not allow this move.
    #[error("cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// Current status.
        from: SubscriptionStatus,
        /// Requested status.
        to: SubscriptionStatus,
    },
    /// The operation needs a live (not canceled) subscription.
    #[error("subscription is canceled")]
    Canceled,
    /// The instant is outside the current period.
    #[error("{at} is outside the current period {period}")]
    OutsideCurrentPeriod {
        /// The instant.
        at: DateTime<Utc>,
        /// The current period.
        period: Period,
    },
    /// A plan change to a plan in another currency.
    #[error("the new plan's currency differs from the subscription's")]
    CurrencyChange,
    /// Period arithmetic failed.
    #[error(transparent)]
    Period(#[from] PeriodError),
    /// Proration failed.
    #[error(transparent)]
    Proration(#[from] ProrationError),
}

/// Where a subscription is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// In the free trial.
    Trialing,
    /// Billing normally.
    Active,
    /// An invoice is overdue; still billing while dunning runs.
    PastDue,
    /// Temporarily not billing.
    Paused,
    /// Ended; terminal.
    Canceled,
}

impl SubscriptionStatus {
    /// Whether the state machine allows `self → to`:
    ///
    /// | from | to |
    /// |---|---|
    /// | trialing | active, past_due, canceled |
    /// | active | past_due, paused, canceled |
    /// | past_due | active, canceled |
    /// | paused | active, canceled |
    /// | canceled | — |
    ///
    /// ```
    /// use tally_domain::subscription::SubscriptionStatus::*;
    ///
    /// assert!(Trialing.can_transition_to(Active));
    /// assert!(!PastDue.can_transition_to(Paused));
    /// assert!(!Canceled.can_transition_to(Active));
    /// ```
    pub fn can_transition_to(self, to: SubscriptionStatus) -> bool {
        use SubscriptionStatus::{Active, Canceled, PastDue, Paused, Trialing};
        match self {
            Trialing => matches!(to, Active | PastDue | Canceled),
            Active => matches!(to, PastDue | Paused | Canceled),
            PastDue => matches!(to, Active | Canceled),
            Paused => matches!(to, Active | Canceled),
            Canceled => false,
        }
    }
}

/// A plan version, as a subscription refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanRef {
    /// The plan.
    pub plan: PlanId,
    /// Its version.
    pub version: u32,
}

impl From<&Plan> for PlanRef {
    fn from(plan: &Plan) -> PlanRef {
        PlanRef {
            plan: plan.id().clone(),
            version: plan.version(),
        }
    }
}

/// When a change (plan change, cancellation) takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    /// At the given instant, with proration.
    Immediately,
    /// At the end of the current period, without proration.
    AtPeriodEnd,
}

/// What happened when the current period ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Renewal {
    /// A new period started (on the scheduled plan, if a change was pending).
    Renewed {
        /// The new current period.
        period: Period,
        /// The plan switched to at this boundary, if any.
        switched_to: Option<PlanRef>,
    },
    /// The subscription was set to cancel at period end and is now canceled.
    Canceled,
}

/// A customer's subscription to a plan version.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// # use rust_decimal_macros::dec;
/// # use tally_domain::ids::{ChargeCode, PlanId};
/// # use tally_domain::money::Currency;
/// # use tally_domain::period::BillingInterval;
/// # use tally_domain::plan::{AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanSpec};
/// # use tally_domain::pricing::{ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PriceModel};
/// use tally_domain::ids::{CustomerId, SubscriptionId};
/// use tally_domain::subscription::{ChangeTiming, Renewal, Subscription, SubscriptionStatus};
/// # let plan = Plan::new(PlanSpec {
/// #     id: PlanId::parse("plan_pro").unwrap(), version: 1, name: "Pro".into(),
/// #     currency: Currency::USD, interval: BillingInterval::Month, anchor: AnchorPolicy::SubscriptionStart,
/// #     trial_days: 0, minimum_commitment: None,
/// #     charges: vec![PlanCharge {
/// #         code: ChargeCode::parse("fee").unwrap(), name: "Fee".into(),
/// #         kind: ChargeKind::Recurring { timing: BillingTiming::InAdvance },
/// #         price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::Flat(
/// #             FlatFee::new(FlatFeeSpec { amount: dec!(10) }).unwrap()))).unwrap(),
/// #     }],
/// # }).unwrap();
///
/// let start = Utc.with_ymd_and_hms(2025, 1, 31, 0, 0, 0).unwrap();
/// let mut subscription = Subscription::start(
///     SubscriptionId::parse("sub_1").unwrap(), CustomerId::parse("cus_1").unwrap(), &plan, start,
/// ).unwrap();
/// assert_eq!(subscription.status(), SubscriptionStatus::Active);
/// assert_eq!(subscription.current_period().end(), Utc.with_ymd_and_hms(2025, 2, 28, 0, 0, 0).unwrap());
/// subscription.cancel(ChangeTiming::AtPeriodEnd, start).unwrap();
/// assert_eq!(subscription.renew().unwrap(), Renewal::Canceled);
/// assert_eq!(subscription.status(), SubscriptionStatus::Canceled);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    id: SubscriptionId,
    customer: CustomerId,
    plan: PlanRef,
    currency: crate::money::Currency,
    status: SubscriptionStatus,
    cycle: BillingCycle,
    started_at: DateTime<Utc>,
    trial_end: Option<DateTime<Utc>>,
    current_period: Period,
    scheduled_plan: Option<PlanRef>,
    cancel_at_period_end: bool,
    canceled_at: Option<DateTime<Utc>>,
}

impl Subscription {
    /// Starts a subscription at `start`: trialing if the plan has a trial, else active.
    /// With a calendar anchor the first period is the stub from `start` to the next boundary.
    pub fn start(
        id: SubscriptionId,
        customer: CustomerId,
        plan: &Plan,
        start: DateTime<Utc>,
    ) -> Result<Subscription, SubscriptionError> {
        let cycle = plan.cycle_for(start);
        let index = cycle.index_of(start)?;
        let current_period = Period::new(start, cycle.boundary(index + 1)?)?;
        let trial_end = plan.trial_end(start);
        Ok(Subscription {
            id,
            customer,
            plan: PlanRef::from(plan),
            currency: plan.currency(),
            status: if trial_end.is_some() {
                SubscriptionStatus::Trialing
            } else {
                SubscriptionStatus::Active
            },
            cycle,
            started_at: start,
            trial_end,
            current_period,
            scheduled_plan: None,
            cancel_at_period_end: false,
            canceled_at: None,
        })
    }

    /// The id.
    pub fn id(&self) -> &SubscriptionId {
        &self.id
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The plan version billed now.
    pub fn plan(&self) -> &PlanRef {
        &self.plan
    }

    /// The status.
    pub fn status(&self) -> SubscriptionStatus {
        self.status
    }

    /// The billing cycle.
    pub fn cycle(&self) -> &BillingCycle {
        &self.cycle
    }

    /// When it started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// When the trial ends, if there is one.
    pub fn trial_end(&self) -> Option<DateTime<Utc>> {
        self.trial_end
    }

    /// The period being billed.
    pub fn current_period(&self) -> Period {
        self.current_period
    }

    /// The plan that takes over at the end of the period, if a change is scheduled.
    pub fn scheduled_plan(&self) -> Option<&PlanRef> {
        self.scheduled_plan.as_ref()
    }

    /// Whether it ends with the current period.
    pub fn cancel_at_period_end(&self) -> bool {
        self.cancel_at_period_end
    }

    /// When it was canceled.
    pub fn canceled_at(&self) -> Option<DateTime<Utc>> {
        self.canceled_at
    }

    /// Moves to `to` if the state machine allows it.
    pub fn transition(
        &mut self,
        to: SubscriptionStatus,
        at: DateTime<Utc>,
    ) -> Result<(), SubscriptionError> {
        if !self.status.can_transition_to(to) {
            return Err(SubscriptionError::InvalidTransition {
                from: self.status,
                to,
            });
        }
        if to == SubscriptionStatus::Canceled {
            self.canceled_at = Some(at);
        }
        self.status = to;
        Ok(())
    }

    /// Cancels now, or schedules the cancellation for the end of the current period.
    /// (The credit for an immediate cancellation is a [`plan_change`] to a free plan.)
    pub fn cancel(
        &mut self,
        timing: ChangeTiming,
        at: DateTime<Utc>,
    ) -> Result<(), SubscriptionError> {
        self.require_live()?;
        match timing {
            ChangeTiming::Immediately => self.transition(SubscriptionStatus::Canceled, at),
            ChangeTiming::AtPeriodEnd => {
                self.cancel_at_period_end = true;
                Ok(())
            }
        }
    }

    /// Changes the plan. Immediately: switches at `at` and returns the exact credit for the
    /// unused old plan and charge for the new one over the rest of the period
    /// (`old_amount` and `new_amount` are the two plans' rounded recurring amounts per period).
    /// At period end: schedules the switch and returns `None`.
    pub fn change_plan(
        &mut self,
        new_plan: &Plan,
        timing: ChangeTiming,
        at: DateTime<Utc>,
        old_amount: Money,
        new_amount: Money,
        policy: ProrationPolicy,
    ) -> Result<Option<PlanChangeProration>, SubscriptionError> {
        self.require_live()?;
        if new_plan.currency() != self.currency {
            return Err(SubscriptionError::CurrencyChange);
        }
        match timing {
            ChangeTiming::AtPeriodEnd => {
                self.scheduled_plan = Some(PlanRef::from(new_plan));
                Ok(None)
            }
            ChangeTiming::Immediately => {
                if !self.current_period.contains(at) {
                    return Err(SubscriptionError::OutsideCurrentPeriod {
                        at,
                        period: self.current_period,
                    });
                }
                let proration =
                    plan_change(&self.current_period, at, old_amount, new_amount, policy)?;
                self.plan = PlanRef::from(new_plan);
                self.scheduled_plan = None;
                Ok(Some(proration))
            }
        }
    }

    /// Ends the current period: cancels if scheduled, otherwise starts the next period,
    /// switching to a scheduled plan and ending a trial that is over.
    pub fn renew(&mut self) -> Result<Renewal, SubscriptionError> {
        self.require_live()?;
        let boundary = self.current_period.end();
        if self.cancel_at_period_end {
            self.transition(SubscriptionStatus::Canceled, boundary)?;
            return Ok(Renewal::Canceled);
        }
        let index = self.cycle.index_of(boundary)?;
        self.current_period = self.cycle.period(index)?;
        let switched_to = self.scheduled_plan.take();
        if let Some(plan) = &switched_to {
            self.plan = plan.clone();
        }
        if self.status == SubscriptionStatus::Trialing
            && self.trial_end.is_some_and(|end| end <= boundary)
        {
            self.transition(SubscriptionStatus::Active, boundary)?;
        }
        Ok(Renewal::Renewed {
            period: self.current_period,
            switched_to,
        })
    }

    fn require_live(&self) -> Result<(), SubscriptionError> {
        match self.status {
            SubscriptionStatus::Canceled => Err(SubscriptionError::Canceled),
            SubscriptionStatus::Trialing
            | SubscriptionStatus::Active
            | SubscriptionStatus::PastDue
            | SubscriptionStatus::Paused => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::ids::ChargeCode;
    use crate::money::Currency;
    use crate::period::BillingInterval;
    use crate::plan::{AnchorPolicy, BillingTiming, ChargeKind, PlanCharge, PlanSpec};
    use crate::pricing::{ChargePrice, ChargePriceSpec, FlatFee, FlatFeeSpec, PriceModel};

    fn plan(id: &str, fee: rust_decimal::Decimal, trial_days: u32) -> Plan {
        Plan::new(PlanSpec {
            id: PlanId::parse(id).unwrap(),
            version: 1,
            name: id.into(),
            currency: Currency::USD,
            interval: BillingInterval::Month,
            anchor: AnchorPolicy::SubscriptionStart,
            trial_days,
            minimum_commitment: None,
            charges: vec![PlanCharge {
                code: ChargeCode::parse("fee").unwrap(),
                name: "Fee".into(),
                kind: ChargeKind::Recurring {
                    timing: BillingTiming::InAdvance,
                },
                price: ChargePrice::new(ChargePriceSpec::plain(PriceModel::Flat(
                    FlatFee::new(FlatFeeSpec { amount: fee }).unwrap(),
                )))
                .unwrap(),
            }],
        })
        .unwrap()
    }

    fn at(month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, month, day, 0, 0, 0).unwrap()
    }

    fn subscribe(plan: &Plan, start: DateTime<Utc>) -> Subscription {
        Subscription::start(
            SubscriptionId::parse("sub_1").unwrap(),
            CustomerId::parse("cus_1").unwrap(),
            plan,
            start,
        )
        .unwrap()
    }

    #[test]
    fn every_transition_follows_the_table() {
        use SubscriptionStatus::{Active, Canceled, PastDue, Paused, Trialing};
        let all = [Trialing, Active, PastDue, Paused, Canceled];
        let allowed = [
            (Trialing, Active),
            (Trialing, PastDue),
            (Trialing, Canceled),
            (Active, PastDue),
            (Active, Paused),
            (Active, Canceled),
            (PastDue, Active),
            (PastDue, Canceled),
            (Paused, Active),
            (Paused, Canceled),
        ];
        crate::test_support::assert_transition_table(&all, &allowed, |from, to| {
            from.can_transition_to(to)
        });
        let mut subscription = subscribe(&plan("plan_a", dec!(10), 0), at(1, 1));
        subscription.transition(PastDue, at(1, 5)).unwrap();
        assert_eq!(
            subscription.transition(Paused, at(1, 6)),
            Err(SubscriptionError::InvalidTransition {
                from: PastDue,
                to: Paused
            })
        );
    }

    #[test]
    fn upgrade_halfway_nets_five_dollars() {
        let basic = plan("plan_basic", dec!(10), 0);
        let pro = plan("plan_pro", dec!(20), 0);
        let mut subscription = subscribe(&basic, at(4, 1));
        let proration = subscription
            .change_plan(
                &pro,
                ChangeTiming::Immediately,
                at(4, 16),
                Money::new(dec!(10.00), Currency::USD),
                Money::new(dec!(20.00), Currency::USD),
                ProrationPolicy::BySecond,
            )
            .unwrap()
            .unwrap();
        assert_eq!(proration.net().unwrap().amount(), dec!(5.00));
        assert_eq!(subscription.plan().plan.as_str(), "plan_pro");
    }

    #[test]
    fn scheduled_change_and_trial_end_apply_at_renewal() {
        let trial = plan("plan_trial", dec!(10), 14);
        let next = plan("plan_next", dec!(30), 0);
        let mut subscription = subscribe(&trial, at(1, 31));
        assert_eq!(subscription.status(), SubscriptionStatus::Trialing);
        let zero = Money::zero(Currency::USD);
        let scheduled = subscription
            .change_plan(
                &next,
                ChangeTiming::AtPeriodEnd,
                at(2, 1),
                zero,
                zero,
                ProrationPolicy::ByDay,
            )
            .unwrap();
        assert_eq!(scheduled, None);
        let renewal = subscription.renew().unwrap();
        assert_eq!(
            renewal,
            Renewal::Renewed {
                period: Period::new(at(2, 28), at(3, 31)).unwrap(),
                switched_to: Some(PlanRef::from(&next))
            }
        );
        assert_eq!(subscription.status(), SubscriptionStatus::Active);
        let outside = subscription.change_plan(
            &trial,
            ChangeTiming::Immediately,
            at(5, 1),
            zero,
            zero,
            ProrationPolicy::ByDay,
        );
        assert!(matches!(
            outside,
            Err(SubscriptionError::OutsideCurrentPeriod { .. })
        ));
        subscription
            .cancel(ChangeTiming::Immediately, at(3, 5))
            .unwrap();
        assert_eq!(subscription.canceled_at(), Some(at(3, 5)));
        assert_eq!(subscription.renew(), Err(SubscriptionError::Canceled));
    }
}
