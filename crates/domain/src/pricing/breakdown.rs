//! The explanation of a price: what an invoice line prints under its amount.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::allowance::{AllowancePolicy, AllowancesEnded, TransactionRange};
use crate::meter::GroupKey;

/// One step of a price computation. Amounts are exact (unrounded), in the plan's currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum BreakdownItem {
    /// The net quantity was below zero: negative readings are corrections that net out
    /// against usage, but never make usage pay back, so it was priced as zero (see
    /// [`ChargePrice::price_net`](super::ChargePrice::price_net)). Contributes nothing.
    BelowZero {
        /// The net quantity, below zero.
        quantity: Decimal,
    },
    /// Units given away before the price model applies.
    FreeUnits {
        /// How many of the quantity were free.
        quantity: Decimal,
    },
    /// `quantity × unit_price`.
    Units {
        /// Units charged.
        quantity: Decimal,
        /// Price per unit.
        unit_price: Decimal,
        /// `quantity × unit_price`.
        amount: Decimal,
    },
    /// The part of the quantity priced by one tier.
    Tier {
        /// Zero-based tier position.
        index: usize,
        /// The tier covers quantities above this bound (exclusive).
        from: Decimal,
        /// ... up to and including this bound; `None` is open-ended.
        up_to: Option<Decimal>,
        /// Units priced at this tier.
        quantity: Decimal,
        /// Price per unit in this tier.
        unit_price: Decimal,
        /// The tier's flat fee.
        flat_fee: Decimal,
        /// `quantity × unit_price + flat_fee`.
        amount: Decimal,
    },
    /// Whole packages sold.
    Packages {
        /// Quantity after the package's free units.
        billable_quantity: Decimal,
        /// Units per package.
        package_size: Decimal,
        /// Packages charged, after rounding up or down.
        package_count: Decimal,
        /// Price per package.
        package_price: Decimal,
        /// `package_count × package_price`.
        amount: Decimal,
    },
    /// The bracket of a bulk (threshold) price the quantity fell into.
    Bracket {
        /// Zero-based bracket position.
        index: usize,
        /// The bracket covers quantities above this bound (exclusive).
        from: Decimal,
        /// ... up to and including this bound; `None` is open-ended.
        up_to: Option<Decimal>,
        /// The quantity priced.
        quantity: Decimal,
        /// The bracket's total price.
        amount: Decimal,
    },
    /// Percentage fees over a set of transactions.
    Transactions(TransactionTotals),
    /// One group of a matrix (dimensional) price.
    Group {
        /// The group.
        key: GroupKey,
        /// Its quantity.
        quantity: Decimal,
        /// Its unit price.
        unit_price: Decimal,
        /// Whether the unit price is the matrix default.
        default_price: bool,
        /// `quantity × unit_price`.
        amount: Decimal,
    },
    /// A flat fee, independent of quantity.
    Flat {
        /// The fee.
        amount: Decimal,
    },
    /// The charge minimum lifted the amount.
    Minimum {
        /// The minimum.
        minimum: Decimal,
        /// What was added to reach it.
        adjustment: Decimal,
    },
    /// The charge maximum capped the amount.
    Maximum {
        /// The maximum.
        maximum: Decimal,
        /// What was taken off (negative).
        adjustment: Decimal,
    },
}

/// The totals of a percentage price over a set of transactions, with which transactions
/// its free allowances covered and why.
///
/// Positions count from 1 in `(timestamp, event id)` order. The free transactions are
/// always the first `free_count`. `amount = percentage_fees + fixed_fees +
/// per_transaction_limits`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionTotals {
    /// Transactions seen.
    pub count: u64,
    /// Transactions that paid nothing (the free-transaction allowance): positions
    /// `1..=free_count`.
    pub free_count: u64,
    /// Sum of transaction amounts.
    pub volume: Decimal,
    /// Volume drawn from the free amount. Under [`AllowancePolicy::Sequential`] it is exempt
    /// from the rate on charged transactions; under [`AllowancePolicy::FirstExhausted`] it
    /// also holds the amounts of the free transactions, which draw on it.
    pub free_volume: Decimal,
    /// The transactions whose amounts drew on the free amount (the first and the last).
    #[serde(default)]
    pub free_volume_transactions: Option<TransactionRange>,
    /// Under [`AllowancePolicy::FirstExhausted`] with both allowances offered: where they
    /// ended and why; `None` while both lasted (or under the sequential policy).
    #[serde(default)]
    pub allowances_ended: Option<AllowancesEnded>,
    /// The allowance policy of the price.
    #[serde(default)]
    pub allowance_policy: AllowancePolicy,
    /// The price's rate, in percent (`2.9` is 2.9 %).
    #[serde(default)]
    pub rate_percent: Decimal,
    /// The price's fixed fee per charged transaction.
    #[serde(default)]
    pub fixed_fee: Decimal,
    /// Volume the rate applied to: the charged transactions' amounts less what they drew
    /// from the free amount.
    #[serde(default)]
    pub rated_volume: Decimal,
    /// Rate × rated volume.
    pub percentage_fees: Decimal,
    /// Fixed fee × charged transactions.
    pub fixed_fees: Decimal,
    /// Net change from the per-transaction minimum and maximum.
    pub per_transaction_limits: Decimal,
    /// The total of the fees.
    pub amount: Decimal,
}

impl TransactionTotals {
    /// Transactions charged (not free).
    pub fn charged_count(&self) -> u64 {
        self.count.saturating_sub(self.free_count)
    }
}

/// The exact price of some usage and how it was reached.
///
/// `total` is the sum of the items' amounts (free units contribute nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBreakdown {
    total: Decimal,
    items: Vec<BreakdownItem>,
}

impl PriceBreakdown {
    pub(crate) fn new(total: Decimal, items: Vec<BreakdownItem>) -> PriceBreakdown {
        PriceBreakdown { total, items }
    }

    /// The exact amount, unrounded.
    pub fn total(&self) -> Decimal {
        self.total
    }

    /// The steps, in order.
    pub fn items(&self) -> &[BreakdownItem] {
        &self.items
    }

    pub(crate) fn into_parts(self) -> (Decimal, Vec<BreakdownItem>) {
        (self.total, self.items)
    }
}
