//! Subscriptions: the states a subscription moves through and the plan version it
//! refers to. Invoicing runs the subscriptions themselves (phases, pauses, changes and
//! cancellations as stored rows, `crates/invoicing/src/subscriptions/`); every move
//! between states is checked against [`SubscriptionStatus::can_transition_to`].

use serde::{Deserialize, Serialize};

use crate::ids::PlanId;
use crate::plan::Plan;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
