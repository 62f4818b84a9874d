//! Progressive billing: threshold invoices during a period and the period's final invoice.

use super::TermsError;
use super::effective::EffectiveTerms;
use super::line::{PricedPeriod, TermStep, TermsLine, TermsLineKind};
use super::price::{PeriodUsage, PricingScope, price_period};
use crate::money::{Money, RoundingMode};

/// The threshold invoice due now, if the period's unbilled usage has reached the invoicing
/// threshold; `None` when the terms have no threshold or it is not reached yet.
///
/// `usage_so_far` is the period's usage from its start (not since the last invoice), and
/// `billed_earlier` the totals of the period's earlier threshold invoices. The usage is
/// priced as a whole ([`PricingScope::UsageToDate`]: usage charges and the cap, no
/// minimum), so free units are used once per period; the invoice is those lines plus one
/// [`TermsLineKind::BilledEarlier`] line deducting `billed_earlier`. Unbilled = its total;
/// it is due when unbilled ≥ the threshold.
pub fn threshold_invoice(
    terms: &EffectiveTerms,
    usage_so_far: &PeriodUsage,
    billed_earlier: &[Money],
    rounding: RoundingMode,
) -> Result<Option<PricedPeriod>, TermsError> {
    let Some(threshold) = terms.invoicing_threshold() else {
        return Ok(None);
    };
    let priced = price_period(terms, usage_so_far, rounding, PricingScope::UsageToDate)?;
    let invoice = with_billed_earlier(terms, priced, billed_earlier, rounding)?;
    let unbilled = invoice.total()?;
    Ok((unbilled.amount() >= threshold.amount()).then_some(invoice))
}

/// The period's final invoice: the period priced as a whole ([`PricingScope::WholePeriod`])
/// less what its threshold invoices billed, on one [`TermsLineKind::BilledEarlier`] line.
///
/// The period's invoices therefore add up, to the minor unit, to the one invoice the period
/// would get without thresholds. When the period ends up billing less than was billed
/// (a volume price fell, usage was corrected), the total is negative: invoicing carries it
/// as a credit, as for any negative invoice.
pub fn period_end_invoice(
    terms: &EffectiveTerms,
    usage: &PeriodUsage,
    billed_earlier: &[Money],
    rounding: RoundingMode,
) -> Result<PricedPeriod, TermsError> {
    let priced = price_period(terms, usage, rounding, PricingScope::WholePeriod)?;
    with_billed_earlier(terms, priced, billed_earlier, rounding)
}

fn with_billed_earlier(
    terms: &EffectiveTerms,
    mut priced: PricedPeriod,
    billed_earlier: &[Money],
    rounding: RoundingMode,
) -> Result<PricedPeriod, TermsError> {
    let currency = terms.currency();
    for (index, amount) in billed_earlier.iter().enumerate() {
        if amount.currency() != currency || amount.is_negative() || !amount.is_rounded() {
            return Err(TermsError::InvalidBilledEarlier {
                index,
                amount: *amount,
            });
        }
    }
    let billed = Money::sum(currency, billed_earlier)?;
    if billed.is_zero() {
        return Ok(priced);
    }
    let step = TermStep::BilledEarlier {
        invoices: billed_earlier.len(),
        billed: billed.amount(),
    };
    priced.push(TermsLine::new(
        TermsLineKind::BilledEarlier,
        "Billed earlier this period".into(),
        billed.negated(),
        rounding,
        vec![step],
    ));
    Ok(priced)
}
