//! A domain `BreakdownItem` as a wire `BreakdownStep`: what a usage line
//! prints under its amount. Amounts stay precise (unrounded).

use rust_decimal::Decimal;
use tally_domain::money::Currency;
use tally_domain::pricing::BreakdownItem;
use tally_proto::rating::{BreakdownStep, BreakdownStepKind};

use crate::wire::{decimal, money};

/// One breakdown item as a wire step (amounts precise, in `currency`).
pub fn step(item: &BreakdownItem, currency: Currency) -> BreakdownStep {
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
