//! The free allowances of a percentage price — a number of free transactions and a free
//! amount of volume — and the named policy that says how the two combine.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{PricingError, subtract};

/// How a percentage price's two free allowances combine when both are offered: a number of
/// free transactions (each pays nothing at all) and a free amount of volume (exempt from the
/// rate; the fixed fee and the per-transaction limits still apply). Transactions take the
/// allowances in `(timestamp, event id)` order. With only one allowance offered (the other
/// zero), both policies give the same price.
///
/// The two policies on Lago's documented example — 1.2 % + 0.10, the first 3 transactions
/// or the first 500 free, transactions of 200, 100, 100 and 50:
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::ids::EventId;
/// use tally_domain::pricing::{AllowancePolicy, Percentage, PercentageSpec, Transaction};
///
/// let price = |allowance_policy| {
///     Percentage::new(PercentageSpec {
///         rate_percent: dec!(1.2),
///         fixed_fee: dec!(0.10),
///         min_per_transaction: None,
///         max_per_transaction: None,
///         free_transactions: 3,
///         free_volume: dec!(500),
///         allowance_policy,
///     })
///     .unwrap()
/// };
/// let transactions: Vec<Transaction> = [dec!(200), dec!(100), dec!(100), dec!(50)]
///     .into_iter()
///     .enumerate()
///     .map(|(index, amount)| Transaction {
///         event_id: EventId::parse(&format!("tx-{index}")).unwrap(),
///         timestamp: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, u32::try_from(index).unwrap()).unwrap(),
///         amount,
///     })
///     .collect();
/// // Sequential: transactions 1–3 are free, then the 50 of the 4th is inside the free
/// // amount; only its fixed fee is due.
/// let sequential = price(AllowancePolicy::Sequential).price(&transactions).unwrap();
/// assert_eq!(sequential.total(), dec!(0.10));
/// // First exhausted: transactions 1–3 are free and use 400 of the free amount; the third
/// // was the last free transaction, so both allowances end there and the 4th pays in full.
/// let first_exhausted = price(AllowancePolicy::FirstExhausted).price(&transactions).unwrap();
/// assert_eq!(first_exhausted.total(), dec!(0.70));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowancePolicy {
    /// One after the other: the first `free_transactions` transactions pay nothing and draw
    /// nothing from the free amount; then the free amount exempts the following transactions'
    /// amounts from the rate until it is used up. Tally's behaviour before policies were
    /// named, hence the default.
    #[default]
    Sequential,
    /// Together, ending together ("the first 3 transactions or the first 500 are free",
    /// Lago's documented behaviour): from the first transaction, a transaction whose amount
    /// fits in what is left of the free amount pays nothing, using one free transaction and
    /// its amount of the free amount. Both allowances end at the first transaction that uses
    /// either up: the last free transaction, the one that takes the free amount to exactly
    /// zero, or one whose amount is more than is left of the free amount — that one is
    /// charged (the rate on its amount above what was left, the fixed fee, the limits).
    /// What is left of the other allowance is forfeited.
    FirstExhausted,
}

/// Which allowance ran out first under [`AllowancePolicy::FirstExhausted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowanceExhausted {
    /// The free transactions were all used.
    FreeTransactions,
    /// The free amount was all used.
    FreeAmount,
    /// One transaction used both the last free transaction and the last of the free amount.
    Both,
}

/// Where and why the allowances of an [`AllowancePolicy::FirstExhausted`] price ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowancesEnded {
    /// Position (from 1, in `(timestamp, event id)` order) of the transaction that used an
    /// allowance up; every later transaction is charged in full.
    pub at_transaction: u64,
    /// Which allowance it used up.
    pub exhausted: AllowanceExhausted,
    /// Free transactions still unused then, forfeited.
    pub forfeited_transactions: u64,
    /// Free amount still unused then, forfeited.
    pub forfeited_volume: Decimal,
}

/// A run of transactions by position (from 1, in `(timestamp, event id)` order), both ends
/// included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRange {
    /// The first position.
    pub first: u64,
    /// The last position.
    pub last: u64,
}

impl TransactionRange {
    /// The range extended to `position` (a later one), or the range of `position` alone.
    pub(crate) fn extended(range: Option<TransactionRange>, position: u64) -> TransactionRange {
        match range {
            Some(range) => TransactionRange {
                first: range.first,
                last: position,
            },
            None => TransactionRange {
                first: position,
                last: position,
            },
        }
    }
}

/// What the allowances gave one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// It pays nothing; `drawn` of its amount came out of the free amount.
    Free {
        /// The part of its amount drawn from the free amount.
        drawn: Decimal,
    },
    /// It is charged; `exempt` of its amount (drawn from the free amount) escapes the rate.
    Charged {
        /// The part of its amount drawn from the free amount.
        exempt: Decimal,
    },
}

/// The allowances left while a period's transactions are walked in order.
#[derive(Clone, Debug)]
pub(crate) struct Allowances {
    /// Both allowances offered under [`AllowancePolicy::FirstExhausted`]: drawn together.
    together: bool,
    transactions_left: u64,
    volume_left: Decimal,
    ended: Option<AllowancesEnded>,
}

impl Allowances {
    pub(crate) fn new(
        policy: AllowancePolicy,
        free_transactions: u64,
        free_volume: Decimal,
    ) -> Allowances {
        let both_offered = free_transactions > 0 && free_volume > Decimal::ZERO;
        Allowances {
            together: policy == AllowancePolicy::FirstExhausted && both_offered,
            transactions_left: free_transactions,
            volume_left: free_volume.max(Decimal::ZERO),
            ended: None,
        }
    }

    /// Grants the next transaction (at `position`, from 1) its share of the allowances.
    pub(crate) fn grant(&mut self, position: u64, amount: Decimal) -> Result<Grant, PricingError> {
        if self.together {
            self.grant_together(position, amount)
        } else {
            self.grant_in_sequence(amount)
        }
    }

    /// Where the allowances ended, under [`AllowancePolicy::FirstExhausted`] with both offered.
    pub(crate) fn ended(self) -> Option<AllowancesEnded> {
        self.ended
    }

    fn grant_in_sequence(&mut self, amount: Decimal) -> Result<Grant, PricingError> {
        if self.transactions_left > 0 {
            self.transactions_left -= 1;
            return Ok(Grant::Free {
                drawn: Decimal::ZERO,
            });
        }
        let exempt = amount.min(self.volume_left);
        self.volume_left = subtract(self.volume_left, exempt)?;
        Ok(Grant::Charged { exempt })
    }

    fn grant_together(&mut self, position: u64, amount: Decimal) -> Result<Grant, PricingError> {
        if self.ended.is_some() {
            return Ok(Grant::Charged {
                exempt: Decimal::ZERO,
            });
        }
        // Not ended: both allowances have something left.
        debug_assert!(self.transactions_left > 0 && self.volume_left > Decimal::ZERO);
        let grant = if amount <= self.volume_left {
            self.transactions_left -= 1;
            self.volume_left = subtract(self.volume_left, amount)?;
            Grant::Free { drawn: amount }
        } else {
            let exempt = self.volume_left;
            self.volume_left = Decimal::ZERO;
            Grant::Charged { exempt }
        };
        let exhausted = match (self.transactions_left == 0, self.volume_left.is_zero()) {
            (false, false) => return Ok(grant),
            (true, false) => AllowanceExhausted::FreeTransactions,
            (false, true) => AllowanceExhausted::FreeAmount,
            (true, true) => AllowanceExhausted::Both,
        };
        self.ended = Some(AllowancesEnded {
            at_transaction: position,
            exhausted,
            forfeited_transactions: self.transactions_left,
            forfeited_volume: self.volume_left,
        });
        self.transactions_left = 0;
        self.volume_left = Decimal::ZERO;
        Ok(grant)
    }
}
