//! Percentage prices: a share of each transaction's amount plus a fixed fee per transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::allowance::{Allowances, Grant, TransactionRange};
use super::{
    AllowancePolicy, BreakdownItem, PriceBreakdown, PricingError, TransactionTotals, add, multiply,
    require_non_negative, subtract, validate_limits, validated_model,
};
use crate::ids::EventId;

/// One transaction priced by a percentage model (a payment, an order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The usage event that reported it.
    pub event_id: EventId,
    /// When it happened; orders the free allowances.
    pub timestamp: DateTime<Utc>,
    /// Its amount, not negative.
    pub amount: Decimal,
}

/// Configuration of a percentage price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PercentageSpec {
    /// Percent of each transaction's amount, 0–100 (`2.9` is 2.9 %).
    pub rate_percent: Decimal,
    /// Added to each charged transaction.
    #[serde(default)]
    pub fixed_fee: Decimal,
    /// Lowest fee of one charged transaction.
    #[serde(default)]
    pub min_per_transaction: Option<Decimal>,
    /// Highest fee of one charged transaction.
    #[serde(default)]
    pub max_per_transaction: Option<Decimal>,
    /// The first this many transactions pay nothing.
    #[serde(default)]
    pub free_transactions: u64,
    /// The first this much transaction volume carries no percentage fee.
    #[serde(default)]
    pub free_volume: Decimal,
    /// How `free_transactions` and `free_volume` combine when both are offered; absent in
    /// specs written before policies were named, which priced sequentially.
    #[serde(default)]
    pub allowance_policy: AllowancePolicy,
}

impl PercentageSpec {
    fn validate(&self) -> Result<(), PricingError> {
        if self.rate_percent < Decimal::ZERO || self.rate_percent > Decimal::ONE_HUNDRED {
            return Err(PricingError::RateOutOfRange {
                rate: self.rate_percent,
            });
        }
        require_non_negative(|| "fixed_fee".into(), self.fixed_fee)?;
        require_non_negative(|| "free_volume".into(), self.free_volume)?;
        validate_limits(
            "per_transaction",
            self.min_per_transaction,
            self.max_per_transaction,
        )
    }
}

/// A percentage of every transaction plus a fixed fee, e.g. 2.9 % + $0.30, each fee held
/// between a minimum and a maximum, after free allowances.
///
/// The allowances go to transactions in `(timestamp, event id)` order, so the price depends
/// only on the set of transactions, never on the order they arrived in. A free transaction
/// pays nothing; the part of a charged transaction's amount drawn from `free_volume` is
/// exempt from the percentage (the fixed fee still applies). Which transactions are free and
/// which draw on the free volume is the [`AllowancePolicy`]'s: by default the first
/// `free_transactions` pay nothing, then the first `free_volume` of amount is exempt. Each
/// charged transaction pays `clamp(rate × non-exempt amount + fixed_fee, min, max)`; the
/// breakdown's [`TransactionTotals`] says which transactions were free and why.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rust_decimal_macros::dec;
/// use tally_domain::ids::EventId;
/// use tally_domain::pricing::{Percentage, PercentageSpec, Transaction};
///
/// let card = Percentage::new(PercentageSpec {
///     rate_percent: dec!(2.9),
///     fixed_fee: dec!(0.30),
///     min_per_transaction: None,
///     max_per_transaction: None,
///     free_transactions: 0,
///     free_volume: dec!(0),
///     allowance_policy: Default::default(),
/// }).unwrap();
/// let payment = Transaction {
///     event_id: EventId::parse("pay-1").unwrap(),
///     timestamp: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
///     amount: dec!(100),
/// };
/// // Stripe's standard card fee: 2.9 % of $100 + $0.30.
/// assert_eq!(card.price(&[payment]).unwrap().total(), dec!(3.20));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PercentageSpec", into = "PercentageSpec")]
pub struct Percentage {
    spec: PercentageSpec,
}

validated_model!(Percentage, PercentageSpec);

impl Percentage {
    /// The fees of a set of transactions.
    pub fn price(&self, transactions: &[Transaction]) -> Result<PriceBreakdown, PricingError> {
        let spec = &self.spec;
        let mut ordered: Vec<&Transaction> = transactions.iter().collect();
        if spec.free_transactions > 0 || spec.free_volume > Decimal::ZERO {
            ordered.sort_by(|left, right| {
                (left.timestamp, &left.event_id).cmp(&(right.timestamp, &right.event_id))
            });
        }
        let rate = spec
            .rate_percent
            .checked_div(Decimal::ONE_HUNDRED)
            .filter(|rate| rate.normalize().scale() <= spec.rate_percent.normalize().scale() + 2)
            .ok_or(PricingError::Overflow)?;
        let mut allowances = Allowances::new(
            spec.allowance_policy,
            spec.free_transactions,
            spec.free_volume,
        );
        let mut totals = TransactionTotals {
            allowance_policy: spec.allowance_policy,
            rate_percent: spec.rate_percent,
            fixed_fee: spec.fixed_fee,
            ..TransactionTotals::default()
        };
        for transaction in ordered {
            if transaction.amount < Decimal::ZERO {
                return Err(PricingError::NegativeTransactionAmount {
                    event_id: transaction.event_id.to_string(),
                    amount: transaction.amount,
                });
            }
            totals.count += 1;
            totals.volume = add(totals.volume, transaction.amount)?;
            match allowances.grant(totals.count, transaction.amount)? {
                Grant::Free { drawn } => {
                    totals.free_count += 1;
                    draw_free_volume(&mut totals, drawn)?;
                }
                Grant::Charged { exempt } => {
                    draw_free_volume(&mut totals, exempt)?;
                    self.charge(&mut totals, subtract(transaction.amount, exempt)?, rate)?;
                }
            }
        }
        totals.allowances_ended = allowances.ended();
        let amount = totals.amount;
        let item = BreakdownItem::Transactions(totals);
        Ok(PriceBreakdown::new(amount, vec![item]))
    }

    /// Adds the fee of one charged transaction whose `rated` amount is subject to `rate`.
    fn charge(
        &self,
        totals: &mut TransactionTotals,
        rated: Decimal,
        rate: Decimal,
    ) -> Result<(), PricingError> {
        let percentage_fee = multiply(rated, rate)?;
        let unlimited = add(percentage_fee, self.spec.fixed_fee)?;
        let fee = self.limit(unlimited);
        totals.rated_volume = add(totals.rated_volume, rated)?;
        totals.percentage_fees = add(totals.percentage_fees, percentage_fee)?;
        totals.fixed_fees = add(totals.fixed_fees, self.spec.fixed_fee)?;
        totals.per_transaction_limits =
            add(totals.per_transaction_limits, subtract(fee, unlimited)?)?;
        totals.amount = add(totals.amount, fee)?;
        Ok(())
    }

    fn limit(&self, fee: Decimal) -> Decimal {
        let floored = self
            .spec
            .min_per_transaction
            .map_or(fee, |minimum| fee.max(minimum));
        self.spec
            .max_per_transaction
            .map_or(floored, |maximum| floored.min(maximum))
    }
}

/// Records that the latest transaction (position `totals.count`) drew `drawn` from the free
/// amount.
fn draw_free_volume(totals: &mut TransactionTotals, drawn: Decimal) -> Result<(), PricingError> {
    if drawn > Decimal::ZERO {
        totals.free_volume = add(totals.free_volume, drawn)?;
        totals.free_volume_transactions = Some(TransactionRange::extended(
            totals.free_volume_transactions,
            totals.count,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::pricing::{AllowanceExhausted, AllowancesEnded};

    fn transaction(id: &str, second: u32, amount: Decimal) -> Transaction {
        Transaction {
            event_id: EventId::parse(id).unwrap(),
            timestamp: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, second).unwrap(),
            amount,
        }
    }

    #[test]
    fn allowances_follow_timestamp_order_not_arrival_order() {
        // Hand computation: 1 % + 0.10, min 0.50, max 2.00, first transaction free,
        // first 100 of volume exempt.
        let model = Percentage::new(PercentageSpec {
            rate_percent: dec!(1),
            fixed_fee: dec!(0.10),
            min_per_transaction: Some(dec!(0.50)),
            max_per_transaction: Some(dec!(2.00)),
            free_transactions: 1,
            free_volume: dec!(100),
            allowance_policy: AllowancePolicy::Sequential,
        })
        .unwrap();
        let arrivals = [
            transaction("c", 3, dec!(1000)), // 1 % of 1000 + 0.10 = 10.10 → max 2.00
            transaction("a", 1, dec!(500)),  // first: free
            transaction("b", 2, dec!(150)),  // 100 exempt: 0.50 + 0.10 = 0.60
        ];
        let breakdown = model.price(&arrivals).unwrap();
        assert_eq!(breakdown.total(), dec!(2.60));
        let mut reversed = arrivals.clone();
        reversed.reverse();
        assert_eq!(model.price(&reversed).unwrap(), breakdown);
        match &breakdown.items()[0] {
            BreakdownItem::Transactions(totals) => {
                assert_eq!((totals.count, totals.free_count), (3, 1));
                assert_eq!(totals.free_volume, dec!(100));
                assert_eq!(totals.per_transaction_limits, dec!(-8.10));
                // Transaction 1 free; 100 of transaction 2 drawn from the free amount.
                assert_eq!(
                    totals.free_volume_transactions,
                    Some(TransactionRange { first: 2, last: 2 })
                );
                assert_eq!(totals.rated_volume, dec!(1050));
                assert_eq!(totals.allowances_ended, None);
            }
            other => panic!("unexpected item {other:?}"),
        }
    }

    #[test]
    fn a_spec_stored_without_a_policy_prices_sequentially() {
        let stored = r#"{"rate_percent":"1","free_transactions":1,"free_volume":"100"}"#;
        let model: Percentage = serde_json::from_str(stored).unwrap();
        assert_eq!(model.spec().allowance_policy, AllowancePolicy::Sequential);
        let round_trip = serde_json::to_value(&model).unwrap();
        assert_eq!(round_trip["allowance_policy"], "sequential");
    }

    #[test]
    fn first_exhausted_ends_both_allowances_inside_the_transaction_that_uses_up_the_free_amount() {
        // Hand computation: 1.2 % + 0.10, the first 3 transactions or the first 100 free.
        // 40 and 50 are free (90 of the free amount); 30 exceeds the 10 left: 10 exempt,
        // 1.2 % × 20 + 0.10 = 0.34, and the allowances end with 1 free transaction
        // forfeited; 20 pays 1.2 % × 20 + 0.10 = 0.34. Total 0.68.
        let model = Percentage::new(PercentageSpec {
            rate_percent: dec!(1.2),
            fixed_fee: dec!(0.10),
            min_per_transaction: None,
            max_per_transaction: None,
            free_transactions: 3,
            free_volume: dec!(100),
            allowance_policy: AllowancePolicy::FirstExhausted,
        })
        .unwrap();
        let transactions = [
            transaction("d", 4, dec!(20)),
            transaction("c", 3, dec!(30)),
            transaction("b", 2, dec!(50)),
            transaction("a", 1, dec!(40)),
        ];
        let breakdown = model.price(&transactions).unwrap();
        assert_eq!(breakdown.total(), dec!(0.68));
        let BreakdownItem::Transactions(totals) = &breakdown.items()[0] else {
            panic!("unexpected items {:?}", breakdown.items());
        };
        assert_eq!((totals.count, totals.free_count), (4, 2));
        assert_eq!(totals.free_volume, dec!(100));
        assert_eq!(
            totals.free_volume_transactions,
            Some(TransactionRange { first: 1, last: 3 })
        );
        assert_eq!(
            totals.allowances_ended,
            Some(AllowancesEnded {
                at_transaction: 3,
                exhausted: AllowanceExhausted::FreeAmount,
                forfeited_transactions: 1,
                forfeited_volume: dec!(0),
            })
        );
        assert_eq!(totals.rated_volume, dec!(40));
        assert_eq!(
            (totals.percentage_fees, totals.fixed_fees),
            (dec!(0.48), dec!(0.20))
        );
        // The sequential policy frees the first three, then exempts all of the fourth.
        let sequential = Percentage::new(PercentageSpec {
            allowance_policy: AllowancePolicy::Sequential,
            ..model.spec().clone()
        })
        .unwrap();
        assert_eq!(sequential.price(&transactions).unwrap().total(), dec!(0.10));
    }

    #[test]
    fn invalid_configurations() {
        let valid = PercentageSpec {
            rate_percent: dec!(1),
            fixed_fee: dec!(0),
            min_per_transaction: None,
            max_per_transaction: None,
            free_transactions: 0,
            free_volume: dec!(0),
            allowance_policy: AllowancePolicy::Sequential,
        };
        let too_high = PercentageSpec {
            rate_percent: dec!(100.1),
            ..valid.clone()
        };
        assert_eq!(
            Percentage::new(too_high),
            Err(PricingError::RateOutOfRange { rate: dec!(100.1) })
        );
        let inverted = PercentageSpec {
            min_per_transaction: Some(dec!(2)),
            max_per_transaction: Some(dec!(1)),
            ..valid.clone()
        };
        assert!(matches!(
            Percentage::new(inverted),
            Err(PricingError::MinimumAboveMaximum { .. })
        ));
        let model = Percentage::new(valid).unwrap();
        assert!(model.price(&[transaction("x", 0, dec!(-1))]).is_err());
    }
}
