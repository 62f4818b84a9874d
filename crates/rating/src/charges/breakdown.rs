//! A domain `BreakdownItem` as wire `BreakdownStep`s: what a usage line
//! prints under its amount. Amounts stay precise (unrounded).

use rust_decimal::Decimal;
use tally_domain::money::Currency;
use tally_domain::pricing::{
    AllowanceExhausted, AllowancePolicy, BreakdownItem, TransactionRange, TransactionTotals,
};
use tally_proto::rating::{BreakdownStep, BreakdownStepKind};

use crate::wire::{decimal, money};

/// One breakdown item as wire steps (amounts precise, in `currency`): one
/// step per item, except a percentage price's transactions, which explain
/// their free allowances and fees in several (see [`transaction_steps`]).
pub fn steps(item: &BreakdownItem, currency: Currency) -> Vec<BreakdownStep> {
    if let BreakdownItem::Transactions(totals) = item {
        return transaction_steps(totals, currency);
    }
    vec![step(item, currency)]
}

fn plain_step(
    kind: BreakdownStepKind,
    description: String,
    amount: Decimal,
    currency: Currency,
) -> BreakdownStep {
    BreakdownStep {
        kind: kind as i32,
        description,
        amount: Some(money(amount, currency)),
        ..Default::default()
    }
}

/// The steps of a percentage price, amounts adding up to its total: which
/// transactions were free and why (FREE_EVENTS, FREE_AMOUNT, and
/// ALLOWANCES_ENDED under the first-exhausted policy, each of amount zero),
/// then the rate (always), the fixed fees and the per-transaction limits
/// (when not zero). Positions count from 1 in (event time, event id) order.
pub fn transaction_steps(totals: &TransactionTotals, currency: Currency) -> Vec<BreakdownStep> {
    let mut steps = Vec::new();
    if totals.free_count > 0 {
        steps.push(BreakdownStep {
            quantity: Some(decimal(Decimal::from(totals.free_count))),
            ..plain_step(
                BreakdownStepKind::FreeEvents,
                format!(
                    "{} free ({})",
                    positions(TransactionRange {
                        first: 1,
                        last: totals.free_count
                    }),
                    counted(totals.free_count, "free transaction")
                ),
                Decimal::ZERO,
                currency,
            )
        });
    }
    if let Some(range) = totals.free_volume_transactions {
        let description = match totals.allowance_policy {
            AllowancePolicy::Sequential => format!(
                "first {} of volume after the free transactions exempt from the rate \
                 (free amount): {}",
                totals.free_volume,
                positions(range)
            ),
            AllowancePolicy::FirstExhausted => format!(
                "first {} of volume free (free amount, drawn with the free transactions): {}",
                totals.free_volume,
                positions(range)
            ),
        };
        steps.push(BreakdownStep {
            quantity: Some(decimal(totals.free_volume)),
            ..plain_step(
                BreakdownStepKind::FreeAmount,
                description,
                Decimal::ZERO,
                currency,
            )
        });
    }
    if let Some(ended) = &totals.allowances_ended {
        let exhausted = match ended.exhausted {
            AllowanceExhausted::FreeTransactions => "free transactions exhausted",
            AllowanceExhausted::FreeAmount => "free amount exhausted",
            AllowanceExhausted::Both => "free transactions and free amount exhausted together",
        };
        let mut description = format!(
            "allowances ended at transaction {} (first exhausted): {exhausted}",
            ended.at_transaction
        );
        if ended.forfeited_transactions > 0 {
            description.push_str(&format!(
                ", {} forfeited",
                counted(ended.forfeited_transactions, "free transaction")
            ));
        }
        if ended.forfeited_volume > Decimal::ZERO {
            description.push_str(&format!(
                ", {} of the free amount forfeited",
                ended.forfeited_volume
            ));
        }
        steps.push(BreakdownStep {
            quantity: Some(decimal(Decimal::from(ended.at_transaction))),
            ..plain_step(
                BreakdownStepKind::AllowancesEnded,
                description,
                Decimal::ZERO,
                currency,
            )
        });
    }
    steps.push(BreakdownStep {
        quantity: Some(decimal(totals.rated_volume)),
        unit_price: totals
            .rate_percent
            .checked_div(Decimal::ONE_HUNDRED)
            .map(decimal),
        ..plain_step(
            BreakdownStepKind::Percentage,
            format!(
                "{}, volume {}: {} % of {}",
                counted(totals.count, "transaction"),
                totals.volume,
                totals.rate_percent,
                totals.rated_volume
            ),
            totals.percentage_fees,
            currency,
        )
    });
    if !totals.fixed_fee.is_zero() {
        steps.push(BreakdownStep {
            quantity: Some(decimal(Decimal::from(totals.charged_count()))),
            unit_price: Some(decimal(totals.fixed_fee)),
            ..plain_step(
                BreakdownStepKind::FixedFee,
                format!(
                    "{} charged at {} each",
                    counted(totals.charged_count(), "transaction"),
                    totals.fixed_fee
                ),
                totals.fixed_fees,
                currency,
            )
        });
    }
    if !totals.per_transaction_limits.is_zero() {
        steps.push(plain_step(
            BreakdownStepKind::PerEventClamp,
            "per-transaction minimum and maximum".into(),
            totals.per_transaction_limits,
            currency,
        ));
    }
    steps
}

/// `transaction 3` or `transactions 1–3`.
fn positions(range: TransactionRange) -> String {
    if range.first == range.last {
        format!("transaction {}", range.first)
    } else {
        format!("transactions {}–{}", range.first, range.last)
    }
}

/// `1 free transaction`, `3 free transactions`.
fn counted(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// One breakdown item as one wire step; a percentage price's transactions
/// take several ([`transaction_steps`]).
fn step(item: &BreakdownItem, currency: Currency) -> BreakdownStep {
    let plain = |kind: BreakdownStepKind, description: String, amount: Decimal| BreakdownStep {
        kind: kind as i32,
        description,
        amount: Some(money(amount, currency)),
        ..Default::default()
    };
    match item {
        BreakdownItem::BelowZero { quantity } => BreakdownStep {
            quantity: Some(decimal(*quantity)),
            ..plain(
                BreakdownStepKind::BelowZero,
                format!(
                    "net quantity {quantity} is below zero: negative readings net out, \
                     the line is priced on 0"
                ),
                Decimal::ZERO,
            )
        },
        BreakdownItem::FreeUnits { quantity } => BreakdownStep {
            quantity: Some(decimal(*quantity)),
            ..plain(
                BreakdownStepKind::IncludedUnits,
                format!("{quantity} included units"),
                Decimal::ZERO,
            )
        },
        BreakdownItem::Units {
            quantity,
            unit_price,
            amount,
        } => BreakdownStep {
            quantity: Some(decimal(*quantity)),
            unit_price: Some(decimal(*unit_price)),
            ..plain(
                BreakdownStepKind::PerUnit,
                format!("{quantity} units at {unit_price}"),
                *amount,
            )
        },
        BreakdownItem::Tier {
            index,
            from,
            up_to,
            quantity,
            unit_price,
            flat_fee,
            amount,
        } => BreakdownStep {
            tier_index: u32::try_from(*index).unwrap_or(u32::MAX),
            from_quantity: Some(decimal(*from)),
            to_quantity: up_to.map(decimal),
            quantity: Some(decimal(*quantity)),
            unit_price: Some(decimal(*unit_price)),
            flat_amount: (!flat_fee.is_zero()).then(|| money(*flat_fee, currency)),
            ..plain(
                BreakdownStepKind::Tier,
                match up_to {
                    Some(up_to) => format!("units above {from} up to {up_to} at {unit_price}"),
                    None => format!("units above {from} at {unit_price}"),
                },
                *amount,
            )
        },
        BreakdownItem::Packages {
            billable_quantity,
            package_size,
            package_count,
            package_price,
            amount,
        } => BreakdownStep {
            quantity: Some(decimal(*package_count)),
            unit_price: Some(decimal(*package_price)),
            ..plain(
                BreakdownStepKind::Package,
                format!(
                    "{package_count} packages of {package_size} for {billable_quantity} units at {package_price}"
                ),
                *amount,
            )
        },
        BreakdownItem::Bracket {
            index,
            from,
            up_to,
            quantity,
            amount,
        } => BreakdownStep {
            tier_index: u32::try_from(*index).unwrap_or(u32::MAX),
            from_quantity: Some(decimal(*from)),
            to_quantity: up_to.map(decimal),
            quantity: Some(decimal(*quantity)),
            flat_amount: Some(money(*amount, currency)),
            ..plain(
                BreakdownStepKind::BulkBracket,
                format!("{quantity} units in bracket {index}"),
                *amount,
            )
        },
        // Explained in several steps by `transaction_steps`; as one step, the total.
        BreakdownItem::Transactions(totals) => BreakdownStep {
            quantity: Some(decimal(Decimal::from(totals.count))),
            ..plain(
                BreakdownStepKind::Percentage,
                format!("{} transactions, volume {}", totals.count, totals.volume),
                totals.amount,
            )
        },
        BreakdownItem::Group {
            key,
            quantity,
            unit_price,
            default_price,
            amount,
        } => BreakdownStep {
            quantity: Some(decimal(*quantity)),
            unit_price: Some(decimal(*unit_price)),
            ..plain(
                BreakdownStepKind::MatrixCell,
                if *default_price {
                    format!("{{{key}}} (default price): {quantity} at {unit_price}")
                } else {
                    format!("{{{key}}}: {quantity} at {unit_price}")
                },
                *amount,
            )
        },
        BreakdownItem::Flat { amount } => BreakdownStep {
            flat_amount: Some(money(*amount, currency)),
            ..plain(BreakdownStepKind::FlatFee, "flat fee".into(), *amount)
        },
        BreakdownItem::Minimum {
            minimum,
            adjustment,
        } => plain(
            BreakdownStepKind::ChargeMinimum,
            format!("raised to the charge minimum {minimum}"),
            *adjustment,
        ),
        BreakdownItem::Maximum {
            maximum,
            adjustment,
        } => plain(
            BreakdownStepKind::ChargeMaximum,
            format!("capped at the charge maximum {maximum}"),
            *adjustment,
        ),
    }
}
