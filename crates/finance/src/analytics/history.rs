//! MRR at any instant and each customer's MRR history, from the stored
//! subscription instants and invoiced fees. The numbers are the domain's
//! (`subscription_mrr`, `customer_mrr`); this module decides which fee and
//! which status a subscription has at an instant.
//!
//! * **Fee at `t`**: the plan version of the subscription's latest fee row
//!   starting at or before `t` is in force; the fee is the sum over that
//!   version's charges of each charge's latest row at or before `t`. So a
//!   fee billed in arrears carries forward until its period is invoiced,
//!   and a plan change drops the old version's charges.
//! * **Status at `t`**: canceled from `ends_at` on, paused inside a pause
//!   window, trialing before `trial_end_at`, otherwise active (past due is
//!   not kept per instant; it counts the same). A subscription with fees
//!   but no snapshot yet is active.
//! * **History**: the customer's MRR evaluated at every instant where one
//!   of their subscriptions' fee or status changes, equal neighbours merged.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tally_domain::finance::FinanceError;
pub use tally_domain::finance::mrr::mrr_before;
use tally_domain::finance::mrr::{MrrChange, MrrInterval, SubscriptionMrrInput, customer_mrr};
use tally_domain::money::{Currency, Money};
use tally_domain::subscription::SubscriptionStatus;

use super::model::{Pause, StoredFee};

/// A subscription's stored instants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionTiming {
    /// When it starts.
    pub start_at: Option<DateTime<Utc>>,
    /// When its trial ends.
    pub trial_end_at: Option<DateTime<Utc>>,
    /// When it ended or is scheduled to end.
    pub ends_at: Option<DateTime<Utc>>,
    /// Every pause window.
    pub pauses: Vec<Pause>,
}

impl SubscriptionTiming {
    /// Its status at `at`; `None` before it starts.
    pub fn status_at(&self, at: DateTime<Utc>) -> Option<SubscriptionStatus> {
        if self.start_at.is_some_and(|start| at < start) {
            return None;
        }
        if self.ends_at.is_some_and(|end| end <= at) {
            return Some(SubscriptionStatus::Canceled);
        }
        let paused = self
            .pauses
            .iter()
            .any(|pause| pause.pause_at <= at && pause.resume_at.is_none_or(|resume| at < resume));
        if paused {
            return Some(SubscriptionStatus::Paused);
        }
        if self.trial_end_at.is_some_and(|end| at < end) {
            return Some(SubscriptionStatus::Trialing);
        }
        Some(SubscriptionStatus::Active)
    }

    /// Every instant its status may change.
    fn instants(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        [self.start_at, self.trial_end_at, self.ends_at]
            .into_iter()
            .flatten()
            .chain(
                self.pauses
                    .iter()
                    .flat_map(|pause| [Some(pause.pause_at), pause.resume_at])
                    .flatten(),
            )
    }
}

/// One subscription: its instants (absent until a snapshot arrives) and its
/// fee rows, ordered by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionHistory {
    /// From `subscription-events`.
    pub timing: Option<SubscriptionTiming>,
    /// From invoices, ascending by `effective_from`.
    pub fees: Vec<StoredFee>,
}

impl SubscriptionHistory {
    /// The monthly fee in force at `at` before status (see the module docs);
    /// `None` before the first fee.
    fn fee_at(&self, currency: Currency, at: DateTime<Utc>) -> Option<Money> {
        let known = self.fees.iter().filter(|fee| fee.effective_from <= at);
        let version = &known.clone().next_back()?.plan_version_id;
        let mut per_charge: BTreeMap<&str, &StoredFee> = BTreeMap::new();
        for fee in known.filter(|fee| &fee.plan_version_id == version) {
            per_charge.insert(&fee.charge_key, fee);
        }
        Some(Money::new(
            per_charge.values().map(|fee| fee.mrr).sum(),
            currency,
        ))
    }

    /// What MRR needs of it at `at`; `None` when it bills nothing then.
    fn input_at(&self, currency: Currency, at: DateTime<Utc>) -> Option<SubscriptionMrrInput> {
        let fee = self.fee_at(currency, at)?;
        let status = match &self.timing {
            Some(timing) => timing.status_at(at)?,
            None => SubscriptionStatus::Active,
        };
        Some(SubscriptionMrrInput {
            status,
            fee,
            // Stored fees are monthly already.
            interval: MrrInterval::Months(1),
            // Discounts are not on invoices yet (module docs).
            discounts: Vec::new(),
        })
    }

    fn instants(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.fees
            .iter()
            .map(|fee| fee.effective_from)
            .chain(self.timing.iter().flat_map(SubscriptionTiming::instants))
    }
}

/// One customer's subscriptions in one currency.
#[derive(Debug, Clone, Default)]
pub struct CustomerHistory {
    /// By subscription id.
    pub subscriptions: BTreeMap<String, SubscriptionHistory>,
}

impl CustomerHistory {
    /// The customer's MRR at `at` (every change at or before `at` applied).
    pub fn mrr_at(&self, currency: Currency, at: DateTime<Utc>) -> Result<Money, FinanceError> {
        let inputs: Vec<SubscriptionMrrInput> = self
            .subscriptions
            .values()
            .filter_map(|subscription| subscription.input_at(currency, at))
            .collect();
        customer_mrr(currency, &inputs)
    }

    /// The customer's MRR changes, ascending, without equal neighbours (MRR
    /// is zero before the first).
    pub fn changes(&self, currency: Currency) -> Result<Vec<MrrChange>, FinanceError> {
        let instants: BTreeSet<DateTime<Utc>> = self
            .subscriptions
            .values()
            .flat_map(SubscriptionHistory::instants)
            .collect();
        let mut changes: Vec<MrrChange> = Vec::new();
        let mut current = Money::zero(currency);
        for at in instants {
            let mrr = self.mrr_at(currency, at)?;
            if mrr != current {
                changes.push(MrrChange { at, mrr });
                current = mrr;
            }
        }
        Ok(changes)
    }
}
