//! Invoice lines between the wire (`tally.invoicing.v1.InvoiceLine` and its
//! `detail`) and invoicing's model ([`StoredLine`], [`Explanation`]).
//!
//! Reading the wire is strict (an unset or unknown enum, a malformed decimal,
//! an unknown currency is an error), and every decimal and amount of an
//! explanation keeps its exact text both ways: the wire read back from the
//! model is the wire that was composed, byte for byte.

pub mod usage;

use rust_decimal::Decimal;
use tally_domain::money::{Currency, Money};
use tally_proto::common;
use tally_proto::convert::{decimal_value, money_value};
use tally_proto::invoicing::{self as wire, InvoiceLineKind, invoice_line};
use tally_proto::rating::BillingTiming as WireTiming;

use super::model::{
    BillingTiming, CreditApplication, Explanation, LineKind, ProrationPolicy, Range, StoredLine,
};
use crate::error::{InvoicingError, Result};
use crate::wire::{decimal, instant, money, time_range};

/// A stored value the model has no place for.
pub(crate) fn unknown(what: &str, value: i32) -> InvoicingError {
    InvoicingError::Internal(format!("{what} {value} is not one invoicing stores"))
}

pub(crate) fn decimal_from_wire(value: Option<&common::Decimal>) -> Result<Option<Decimal>> {
    value
        .map(|value| tally_proto::convert::decimal(&value.value).map_err(InvoicingError::internal))
        .transpose()
}

pub(crate) fn decimal_to_wire(value: Decimal) -> common::Decimal {
    decimal_value(value)
}

pub(crate) fn money_from_wire(value: Option<&common::Money>) -> Result<Option<Money>> {
    value
        .map(|value| {
            let amount =
                tally_proto::convert::decimal(&value.amount).map_err(InvoicingError::internal)?;
            let currency =
                Currency::from_code(&value.currency).map_err(InvoicingError::internal)?;
            Ok(Money::new(amount, currency))
        })
        .transpose()
}

pub(crate) fn money_to_wire(value: &Money) -> common::Money {
    money_value(value.amount(), value.currency())
}

pub(crate) fn range_from_wire(range: Option<&common::TimeRange>) -> Result<Option<Range>> {
    range
        .map(|range| {
            match (
                instant(range.start_time.as_ref()),
                instant(range.end_time.as_ref()),
            ) {
                (Some(start), Some(end)) => Ok(Range { start, end }),
                _ => Err(InvoicingError::Internal(
                    "a stored time range has no start or no end".into(),
                )),
            }
        })
        .transpose()
}

pub(crate) fn range_to_wire(range: &Range) -> common::TimeRange {
    time_range(range.start, range.end)
}

/// The model kind of a wire kind (unset is an error).
pub fn kind_from_wire(kind: InvoiceLineKind) -> Result<LineKind> {
    Ok(match kind {
        InvoiceLineKind::Recurring => LineKind::Recurring,
        InvoiceLineKind::Usage => LineKind::Usage,
        InvoiceLineKind::ProrationCredit => LineKind::ProrationCredit,
        InvoiceLineKind::ProrationCharge => LineKind::ProrationCharge,
        InvoiceLineKind::MinimumTrueUp => LineKind::MinimumTrueUp,
        InvoiceLineKind::CreditsApplied => LineKind::CreditsApplied,
        InvoiceLineKind::Adjustment => LineKind::Adjustment,
        InvoiceLineKind::Unspecified => return Err(unknown("line kind", kind as i32)),
    })
}

/// The wire kind.
pub fn kind_to_wire(kind: LineKind) -> InvoiceLineKind {
    match kind {
        LineKind::Recurring => InvoiceLineKind::Recurring,
        LineKind::Usage => InvoiceLineKind::Usage,
        LineKind::ProrationCredit => InvoiceLineKind::ProrationCredit,
        LineKind::ProrationCharge => InvoiceLineKind::ProrationCharge,
        LineKind::MinimumTrueUp => InvoiceLineKind::MinimumTrueUp,
        LineKind::CreditsApplied => InvoiceLineKind::CreditsApplied,
        LineKind::Adjustment => InvoiceLineKind::Adjustment,
    }
}

/// The model of a wire line (lines stored before the model existed).
pub fn line_from_wire(line: &wire::InvoiceLine) -> Result<StoredLine> {
    let kind = InvoiceLineKind::try_from(line.kind).map_err(|_| unknown("line kind", line.kind))?;
    let period = range_from_wire(line.period.as_ref())?
        .ok_or_else(|| InvoicingError::Internal(format!("line {} has no period", line.id)))?;
    let amount = |value: Option<&common::Money>, field: &str| {
        money_from_wire(value)?
            .map(|money| money.amount())
            .ok_or_else(|| InvoicingError::Internal(format!("line {} has no {field}", line.id)))
    };
    Ok(StoredLine {
        id: line.id.clone(),
        kind: kind_from_wire(kind)?,
        description: line.description.clone(),
        service_start: period.start,
        service_end: period.end,
        quantity: decimal_from_wire(line.quantity.as_ref())?
            .ok_or_else(|| InvoicingError::Internal(format!("line {} has no quantity", line.id)))?,
        unit_price: decimal_from_wire(line.unit_price.as_ref())?,
        precise_amount: amount(line.precise_amount.as_ref(), "precise amount")?,
        amount: amount(line.amount.as_ref(), "amount")?,
        explanation: line
            .detail
            .as_ref()
            .map(explanation_from_wire)
            .transpose()?,
    })
}

/// The wire line of a stored line in `currency` (the invoice's).
pub fn line_to_wire(line: &StoredLine, currency: Currency) -> wire::InvoiceLine {
    wire::InvoiceLine {
        id: line.id.clone(),
        kind: kind_to_wire(line.kind) as i32,
        description: line.description.clone(),
        period: Some(time_range(line.service_start, line.service_end)),
        quantity: Some(decimal(line.quantity)),
        unit_price: line.unit_price.map(decimal),
        precise_amount: Some(money(line.precise_amount, currency)),
        amount: Some(money(line.amount, currency)),
        detail: line.explanation.as_ref().map(explanation_to_wire),
    }
}

fn timing_from_wire(value: i32) -> Result<BillingTiming> {
    match WireTiming::try_from(value) {
        Ok(WireTiming::InAdvance) => Ok(BillingTiming::InAdvance),
        Ok(WireTiming::InArrears) => Ok(BillingTiming::InArrears),
        Ok(WireTiming::Unspecified) | Err(_) => Err(unknown("billing timing", value)),
    }
}

fn policy_from_wire(value: i32) -> Result<ProrationPolicy> {
    match wire::ProrationPolicy::try_from(value) {
        Ok(wire::ProrationPolicy::None) => Ok(ProrationPolicy::None),
        Ok(wire::ProrationPolicy::Prorate) => Ok(ProrationPolicy::Prorate),
        Ok(wire::ProrationPolicy::ProrateByDay) => Ok(ProrationPolicy::ProrateByDay),
        Ok(wire::ProrationPolicy::Unspecified) | Err(_) => Err(unknown("proration policy", value)),
    }
}

fn policy_to_wire(policy: ProrationPolicy) -> wire::ProrationPolicy {
    match policy {
        ProrationPolicy::None => wire::ProrationPolicy::None,
        ProrationPolicy::Prorate => wire::ProrationPolicy::Prorate,
        ProrationPolicy::ProrateByDay => wire::ProrationPolicy::ProrateByDay,
    }
}

/// The model of a line's explanation.
pub fn explanation_from_wire(detail: &invoice_line::Detail) -> Result<Explanation> {
    use invoice_line::Detail;
    Ok(match detail {
        Detail::Recurring(recurring) => Explanation::Recurring {
            plan_version_id: recurring.plan_version_id.clone(),
            charge_key: recurring.charge_key.clone(),
            billing_timing: timing_from_wire(recurring.billing_timing)?,
            period_amount: money_from_wire(recurring.period_amount.as_ref())?,
        },
        Detail::Usage(usage) => Explanation::Usage {
            charge: usage
                .charge
                .as_ref()
                .map(usage::charge_from_wire)
                .transpose()?,
        },
        Detail::Proration(proration) => Explanation::Proration {
            plan_version_id: proration.plan_version_id.clone(),
            charge_key: proration.charge_key.clone(),
            policy: policy_from_wire(proration.policy)?,
            full_period: range_from_wire(proration.full_period.as_ref())?,
            prorated_period: range_from_wire(proration.prorated_period.as_ref())?,
            factor: decimal_from_wire(proration.factor.as_ref())?,
            period_amount: money_from_wire(proration.period_amount.as_ref())?,
        },
        Detail::MinimumTrueUp(minimum) => Explanation::MinimumTrueUp {
            minimum_commitment: money_from_wire(minimum.minimum_commitment.as_ref())?,
            charges_total: money_from_wire(minimum.charges_total.as_ref())?,
            prorated_minimum: money_from_wire(minimum.prorated_minimum.as_ref())?,
            full_period: range_from_wire(minimum.full_period.as_ref())?,
            prorated_period: range_from_wire(minimum.prorated_period.as_ref())?,
            factor: decimal_from_wire(minimum.factor.as_ref())?,
        },
        Detail::CreditsApplied(applied) => Explanation::CreditsApplied {
            applications: applied
                .applications
                .iter()
                .map(|application| {
                    Ok(CreditApplication {
                        credit_grant_id: application.credit_grant_id.clone(),
                        amount: money_from_wire(application.amount.as_ref())?,
                    })
                })
                .collect::<Result<_>>()?,
        },
        Detail::Adjustment(adjustment) => Explanation::Adjustment {
            original_invoice_id: adjustment.original_invoice_id.clone(),
            original_line_id: adjustment.original_line_id.clone(),
            reason: adjustment.reason.clone(),
            repriced_charge: adjustment
                .repriced_charge
                .as_ref()
                .map(usage::charge_from_wire)
                .transpose()?,
        },
    })
}

/// The wire form of a line's explanation.
pub fn explanation_to_wire(explanation: &Explanation) -> invoice_line::Detail {
    use invoice_line::Detail;
    match explanation {
        Explanation::Recurring {
            plan_version_id,
            charge_key,
            billing_timing,
            period_amount,
        } => Detail::Recurring(wire::RecurringLineDetail {
            plan_version_id: plan_version_id.clone(),
            charge_key: charge_key.clone(),
            billing_timing: match billing_timing {
                BillingTiming::InAdvance => WireTiming::InAdvance,
                BillingTiming::InArrears => WireTiming::InArrears,
            } as i32,
            period_amount: period_amount.as_ref().map(money_to_wire),
        }),
        Explanation::Usage { charge } => Detail::Usage(wire::UsageLineDetail {
            charge: charge.as_ref().map(usage::charge_to_wire),
        }),
        Explanation::Proration {
            plan_version_id,
            charge_key,
            policy,
            full_period,
            prorated_period,
            factor,
            period_amount,
        } => Detail::Proration(wire::ProrationLineDetail {
            plan_version_id: plan_version_id.clone(),
            charge_key: charge_key.clone(),
            policy: policy_to_wire(*policy) as i32,
            full_period: full_period.as_ref().map(range_to_wire),
            prorated_period: prorated_period.as_ref().map(range_to_wire),
            factor: factor.map(decimal_to_wire),
            period_amount: period_amount.as_ref().map(money_to_wire),
        }),
        Explanation::MinimumTrueUp {
            minimum_commitment,
            charges_total,
            prorated_minimum,
            full_period,
            prorated_period,
            factor,
        } => Detail::MinimumTrueUp(wire::MinimumTrueUpLineDetail {
            minimum_commitment: minimum_commitment.as_ref().map(money_to_wire),
            charges_total: charges_total.as_ref().map(money_to_wire),
            prorated_minimum: prorated_minimum.as_ref().map(money_to_wire),
            full_period: full_period.as_ref().map(range_to_wire),
            prorated_period: prorated_period.as_ref().map(range_to_wire),
            factor: factor.map(decimal_to_wire),
        }),
        Explanation::CreditsApplied { applications } => {
            Detail::CreditsApplied(wire::CreditsAppliedLineDetail {
                applications: applications
                    .iter()
                    .map(|application| wire::CreditApplication {
                        credit_grant_id: application.credit_grant_id.clone(),
                        amount: application.amount.as_ref().map(money_to_wire),
                    })
                    .collect(),
            })
        }
        Explanation::Adjustment {
            original_invoice_id,
            original_line_id,
            reason,
            repriced_charge,
        } => Detail::Adjustment(wire::AdjustmentLineDetail {
            original_invoice_id: original_invoice_id.clone(),
            original_line_id: original_line_id.clone(),
            reason: reason.clone(),
            repriced_charge: repriced_charge.as_ref().map(usage::charge_to_wire),
        }),
    }
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
#[allow(clippy::unwrap_used)]
mod tests;
