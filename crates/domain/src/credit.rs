//! Prepaid credit grants and the order in which they burn down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CreditGrantId, CustomerId};
use crate::money::{Money, MoneyError};

/// What can go wrong with credits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// A grant must be worth something, in whole minor units.
    #[error("grant amount must be positive and in whole minor units, got {amount}")]
    InvalidAmount {
        /// The amount.
        amount: Money,
    },
    /// A grant must expire after it becomes effective.
    #[error("grant expires at {expires_at}, not after it becomes effective at {effective_at}")]
    ExpiresBeforeEffective {
        /// Effective from.
        effective_at: DateTime<Utc>,
        /// Expiry.
        expires_at: DateTime<Utc>,
    },
    /// The amount due must be a non-negative amount in whole minor units.
    #[error("amount due must be non-negative and rounded, got {amount}")]
    InvalidAmountDue {
        /// The amount.
        amount: Money,
    },
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Prepaid credit: an amount a customer can spend on invoices in one currency, usable
/// from `effective_at` until `expires_at` (exclusive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrant {
    id: CreditGrantId,
    customer: CustomerId,
    amount: Money,
    remaining: Money,
    priority: u32,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl CreditGrant {
    /// A new, unspent grant. Lower `priority` numbers burn first.
    pub fn new(
        id: CreditGrantId,
        customer: CustomerId,
        amount: Money,
        priority: u32,
        effective_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreditGrant, CreditError> {
        if !amount.is_positive() || !amount.is_rounded() {
            return Err(CreditError::InvalidAmount { amount });
        }
        if let Some(expires_at) = expires_at
            && expires_at <= effective_at
        {
            return Err(CreditError::ExpiresBeforeEffective {
                effective_at,
                expires_at,
            });
        }
        Ok(CreditGrant {
            id,
            customer,
            amount,
            remaining: amount,
            priority,
            effective_at,
            expires_at,
        })
    }

    /// The id.
    pub fn id(&self) -> &CreditGrantId {
        &self.id
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// What was granted.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// What is left.
    pub fn remaining(&self) -> Money {
        self.remaining
    }

    /// Lower burns first.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// Usable from.
    pub fn effective_at(&self) -> DateTime<Utc> {
        self.effective_at
    }

    /// Usable until (exclusive); `None` never expires.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Whether it can be spent at `at`: effective, not expired, something left.
    pub fn is_usable_at(&self, at: DateTime<Utc>) -> bool {
        self.effective_at <= at
            && self.expires_at.is_none_or(|expiry| at < expiry)
            && self.remaining.is_positive()
    }

    /// The burn-down order: priority, then soonest expiry (never-expiring last), then
    /// oldest (earliest effective), then id for a total order.
    fn burn_key(
        &self,
    ) -> (
        u32,
        bool,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        &CreditGrantId,
    ) {
        (
            self.priority,
            self.expires_at.is_none(),
            self.expires_at,
            self.effective_at,
            &self.id,
        )
    }
}

/// How much of each grant went to one amount due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditApplication {
    /// Grant and amount taken from it, in burn order.
    pub applied: Vec<(CreditGrantId, Money)>,
    /// Sum of `applied`.
    pub total: Money,
    /// What is still due after the credits.
    pub remaining_due: Money,
}

/// Burns `grants` down against `due` at instant `at`, in burn order (priority, soonest
/// expiry, oldest), never taking more than is due nor more than a grant holds; grants in
/// another currency or not usable at `at` are skipped. Updates the grants' remaining amounts.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::credit::{apply_credits, CreditGrant};
/// use tally_domain::ids::{CreditGrantId, CustomerId};
/// use tally_domain::money::{Currency, Money};
///
/// let now = Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap();
/// let usd = |amount| Money::new(amount, Currency::USD);
/// let grant = |id: &str, amount, expires| CreditGrant::new(
///     CreditGrantId::parse(id).unwrap(), CustomerId::parse("cus_1").unwrap(),
///     usd(amount), 1, now - Duration::days(30), expires,
/// ).unwrap();
/// let mut grants = vec![
///     grant("grant_late", dec!(50.00), None),
///     grant("grant_soon", dec!(20.00), Some(now + Duration::days(3))),
/// ];
/// let application = apply_credits(&mut grants, usd(dec!(30.00)), now).unwrap();
/// assert_eq!(application.applied[0].0.as_str(), "grant_soon"); // expires first, burns first
/// assert_eq!(application.applied[1].1, usd(dec!(10.00)));
/// assert!(application.remaining_due.is_zero());
/// assert_eq!(grants[0].remaining(), usd(dec!(40.00)));
/// ```
pub fn apply_credits(
    grants: &mut [CreditGrant],
    due: Money,
    at: DateTime<Utc>,
) -> Result<CreditApplication, CreditError> {
    if due.is_negative() || !due.is_rounded() {
        return Err(CreditError::InvalidAmountDue { amount: due });
    }
    let mut order: Vec<usize> = (0..grants.len())
        .filter(|index| {
            grants[*index].remaining.currency() == due.currency() && grants[*index].is_usable_at(at)
        })
        .collect();
    order.sort_by(|left, right| grants[*left].burn_key().cmp(&grants[*right].burn_key()));
    let mut remaining_due = due;
    let mut applied = Vec::new();
    for index in order {
        if remaining_due.is_zero() {
            break;
        }
        let grant = &mut grants[index];
        let take = grant.remaining.min(&remaining_due)?;
        grant.remaining = grant.remaining.checked_sub(&take)?;
        remaining_due = remaining_due.checked_sub(&take)?;
        applied.push((grant.id.clone(), take));
    }
    let total = due.checked_sub(&remaining_due)?;
    Ok(CreditApplication {
        applied,
        total,
        remaining_due,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::money::Currency;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap()
    }

    fn grant(
        id: &str,
        amount: Money,
        priority: u32,
        age_days: i64,
        expires_in_days: Option<i64>,
    ) -> CreditGrant {
        CreditGrant::new(
            CreditGrantId::parse(id).unwrap(),
            CustomerId::parse("cus_1").unwrap(),
            amount,
            priority,
            now() - Duration::days(age_days),
            expires_in_days.map(|days| now() + Duration::days(days)),
        )
        .unwrap()
    }

    fn usd(amount: rust_decimal::Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    #[test]
    fn burn_order_is_priority_then_expiry_then_age() {
        let mut grants = vec![
            grant("grant_e", usd(dec!(1)), 2, 1, Some(1)),
            grant("grant_d", usd(dec!(1)), 1, 1, None),
            grant("grant_c", usd(dec!(1)), 1, 5, Some(10)),
            grant("grant_b", usd(dec!(1)), 1, 9, Some(10)),
            grant("grant_a", usd(dec!(1)), 1, 1, Some(5)),
            grant("grant_eur", Money::new(dec!(1), Currency::EUR), 0, 1, None),
            grant("grant_expired", usd(dec!(1)), 0, 10, Some(-1)),
            grant("grant_future", usd(dec!(1)), 0, -1, None),
        ];
        let application = apply_credits(&mut grants, usd(dec!(10.00)), now()).unwrap();
        let order: Vec<_> = application
            .applied
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(
            order,
            ["grant_a", "grant_b", "grant_c", "grant_d", "grant_e"]
        );
        assert_eq!(application.total, usd(dec!(5)));
        assert_eq!(application.remaining_due, usd(dec!(5.00)));
    }

    #[test]
    fn nothing_goes_negative() {
        let mut grants = vec![grant("grant_a", usd(dec!(100)), 1, 1, None)];
        let zero = apply_credits(&mut grants, usd(dec!(0)), now()).unwrap();
        assert!(zero.applied.is_empty());
        assert!(apply_credits(&mut grants, usd(dec!(-1)), now()).is_err());
        assert!(apply_credits(&mut grants, usd(dec!(0.001)), now()).is_err());
        assert!(matches!(
            CreditGrant::new(
                CreditGrantId::parse("grant_x").unwrap(),
                CustomerId::parse("cus_1").unwrap(),
                usd(dec!(0)),
                0,
                now(),
                None
            ),
            Err(CreditError::InvalidAmount { .. })
        ));
    }
}
