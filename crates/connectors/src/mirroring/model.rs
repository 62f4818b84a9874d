//! Mirroring's own types: the facts it reads off the bus and what it keeps
//! per subscription.

use chrono::{DateTime, Utc};

/// A Tally customer as a bus fact carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerFact {
    /// `cus_…`.
    pub customer_id: String,
    /// The caller's id (empty when none).
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Billing email.
    pub email: String,
    /// ISO 4217.
    pub currency: String,
}

impl CustomerFact {
    /// The Orb external customer id: Tally's external id, else its id.
    pub fn external_customer_id(&self) -> &str {
        if self.external_id.is_empty() {
            &self.customer_id
        } else {
            &self.external_id
        }
    }
}

/// A Tally subscription as a bus fact carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFact {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// `plan_…` of the phase in force.
    pub plan_id: String,
    /// ISO 4217.
    pub currency: String,
    /// Its start.
    pub start_at: DateTime<Utc>,
}

/// What became of a subscription in Orb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Orb has it (final).
    Mirrored,
    /// Its customer is not in Orb yet.
    WaitingForCustomer,
    /// Its plan has no Orb plan.
    PlanNotMapped,
    /// Orb refused it (the reason says why).
    Refused,
}

impl SubscriptionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Mirrored => "mirrored",
            SubscriptionState::WaitingForCustomer => "waiting_for_customer",
            SubscriptionState::PlanNotMapped => "plan_not_mapped",
            SubscriptionState::Refused => "refused",
        }
    }

    /// The stored name read back.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "mirrored" => Some(SubscriptionState::Mirrored),
            "waiting_for_customer" => Some(SubscriptionState::WaitingForCustomer),
            "plan_not_mapped" => Some(SubscriptionState::PlanNotMapped),
            "refused" => Some(SubscriptionState::Refused),
            _ => None,
        }
    }
}

/// A subscription connectors saw, and its state in Orb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer_id: String,
    /// `plan_…`.
    pub plan_id: String,
    /// ISO 4217.
    pub currency: String,
    /// Its start.
    pub start_at: DateTime<Utc>,
    /// Its state.
    pub state: SubscriptionState,
    /// Orb's id, once mirrored.
    pub orb_subscription_id: Option<String>,
    /// Why, when not mirrored.
    pub reason: String,
    /// Orb requests it took.
    pub attempts: u32,
}

impl SubscriptionRecord {
    /// A fresh record of `fact` in `state`.
    pub fn of(fact: &SubscriptionFact, state: SubscriptionState, reason: String) -> Self {
        Self {
            subscription_id: fact.subscription_id.clone(),
            customer_id: fact.customer_id.clone(),
            plan_id: fact.plan_id.clone(),
            currency: fact.currency.clone(),
            start_at: fact.start_at,
            state,
            orb_subscription_id: None,
            reason,
            attempts: 0,
        }
    }

    /// The fact this record was made from.
    pub fn fact(&self) -> SubscriptionFact {
        SubscriptionFact {
            subscription_id: self.subscription_id.clone(),
            customer_id: self.customer_id.clone(),
            plan_id: self.plan_id.clone(),
            currency: self.currency.clone(),
            start_at: self.start_at,
        }
    }
}
