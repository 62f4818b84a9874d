//! [`price_period`]: a period's lines under its terms, in the documented order.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::TermsError;
use super::effective::{EffectiveCharge, EffectiveTerms, InForce};
use super::line::{PricedPeriod, TermStep, TermsLine, TermsLineKind};
use super::spec::{Discount, DiscountValue, UsageDiscount};
use crate::ids::{ChargeCode, MeterCode};
use crate::meter::GroupKey;
use crate::money::{Currency, Money, RoundingMode};
use crate::plan::ChargeKind;
use crate::pricing::{PriceBreakdown, Transaction, Usage, UsageKind};

/// The usage of one charge in a period, owned (see [`Usage`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ChargeUsage {
    /// One aggregated quantity (a recurring charge: its quantity, e.g. seats).
    Quantity(Decimal),
    /// A quantity per group (matrix pricing).
    Grouped(BTreeMap<GroupKey, Decimal>),
    /// The individual transactions (percentage pricing).
    Transactions(Vec<Transaction>),
}

impl ChargeUsage {
    /// The borrowed form the price models take.
    pub fn as_usage(&self) -> Usage<'_> {
        match self {
            ChargeUsage::Quantity(quantity) => Usage::Quantity(*quantity),
            ChargeUsage::Grouped(groups) => Usage::Grouped(groups),
            ChargeUsage::Transactions(transactions) => Usage::Transactions(transactions),
        }
    }

    /// No usage, in the shape `kind` needs.
    pub fn none(kind: UsageKind) -> ChargeUsage {
        match kind {
            UsageKind::Quantity => ChargeUsage::Quantity(Decimal::ZERO),
            UsageKind::Grouped => ChargeUsage::Grouped(BTreeMap::new()),
            UsageKind::Transactions => ChargeUsage::Transactions(Vec::new()),
        }
    }
}

/// A period's usage (so far) per charge. A usage charge that is absent has no usage; a
/// recurring charge that is absent has a quantity of 1; the usage of a charge the contract
/// does not bill (a removed charge) is ignored.
pub type PeriodUsage = BTreeMap<ChargeCode, ChargeUsage>;

/// Which lines a pricing produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingScope {
    /// The period's invoice: every charge, the minimum true-up and the cap.
    WholePeriod,
    /// A threshold invoice during the period: usage charges and the cap, no minimum
    /// true-up (the period is not over).
    UsageToDate,
}

/// Prices a period under its terms: usage discount → pricing (override or list price) →
/// percentage discounts → fixed discounts → minimum / maximum (module docs).
///
/// Each charge line is rounded once with `rounding`; the true-up and the cap adjustment
/// are computed from the rounded usage lines, in whole minor units, so a minimum or a cap
/// is met to the cent.
pub fn price_period(
    terms: &EffectiveTerms,
    usage: &PeriodUsage,
    rounding: RoundingMode,
    scope: PricingScope,
) -> Result<PricedPeriod, TermsError> {
    let currency = terms.currency();
    let mut free_units = FreeUnits::new(terms.usage_discounts());
    let mut drafts = Vec::new();
    for charge in terms.charges() {
        let is_usage = matches!(charge.charge.kind, ChargeKind::Usage { .. });
        if scope == PricingScope::UsageToDate && !is_usage {
            continue;
        }
        drafts.push(price_charge(
            charge,
            usage.get(&charge.charge.code),
            &mut free_units,
        )?);
    }
    for discount in terms.discounts() {
        if let DiscountValue::Percentage { percent } = discount.value.value {
            apply_percentage(&mut drafts, discount, percent)?;
        }
    }
    for discount in terms.discounts() {
        if let DiscountValue::Amount { amount } = discount.value.value {
            apply_fixed(&mut drafts, discount, amount, currency)?;
        }
    }
    let lines: Vec<TermsLine> = drafts
        .into_iter()
        .map(|draft| draft.into_line(currency, rounding))
        .collect();
    let mut priced = PricedPeriod::new(terms.period(), currency, lines);
    for line in commitment_lines(terms, &priced, scope, rounding)? {
        priced.push(line);
    }
    Ok(priced)
}

/// A charge line being priced.
struct Draft<'a> {
    charge: &'a EffectiveCharge,
    quantity: Option<Decimal>,
    amount: Decimal,
    steps: Vec<TermStep>,
}

impl Draft<'_> {
    fn code(&self) -> &ChargeCode {
        &self.charge.charge.code
    }

    fn into_line(self, currency: Currency, rounding: RoundingMode) -> TermsLine {
        let kind = match self.charge.charge.kind {
            ChargeKind::Recurring { .. } => TermsLineKind::Recurring,
            ChargeKind::Usage { .. } => TermsLineKind::Usage,
        };
        TermsLine::new(
            kind,
            self.charge.charge.name.clone(),
            Money::new(self.amount, currency),
            rounding,
            self.steps,
        )
        .for_charge(self.charge.charge.code.clone(), self.quantity)
    }
}

/// Steps 1 and 2: free units off the usage, then the override or the list price.
fn price_charge<'a>(
    charge: &'a EffectiveCharge,
    usage: Option<&ChargeUsage>,
    free_units: &mut FreeUnits,
) -> Result<Draft<'a>, TermsError> {
    let code = &charge.charge.code;
    let default_usage;
    let usage = match (usage, &charge.charge.kind) {
        (Some(usage), _) => usage,
        (None, ChargeKind::Recurring { .. }) => {
            default_usage = ChargeUsage::Quantity(Decimal::ONE);
            &default_usage
        }
        (None, ChargeKind::Usage { .. }) => {
            default_usage = ChargeUsage::none(charge.charge.price.model().usage_kind());
            &default_usage
        }
    };
    let quantity = match usage {
        ChargeUsage::Quantity(quantity) => Some(*quantity),
        ChargeUsage::Grouped(groups) => Some(exact_sum(groups.values().copied())?),
        ChargeUsage::Transactions(_) => None,
    };
    let mut steps = Vec::new();
    let discounted;
    let usage = match &charge.charge.kind {
        ChargeKind::Usage { meter } => {
            discounted = free_units.take(meter, usage, &mut steps)?;
            &discounted
        }
        ChargeKind::Recurring { .. } => usage,
    };
    let pricing_error = |source| TermsError::Pricing {
        charge: code.clone(),
        source,
    };
    let list = charge
        .charge
        .price
        .price_net(usage.as_usage())
        .map_err(pricing_error)?;
    let breakdown: PriceBreakdown = match &charge.price_override {
        None => {
            steps.push(TermStep::ListPrice {
                breakdown: list.clone(),
            });
            list
        }
        Some(InForce { term, value: price }) => {
            let breakdown = price.price_net(usage.as_usage()).map_err(pricing_error)?;
            steps.push(TermStep::PriceOverride {
                term: term.clone(),
                list_amount: list.total(),
                breakdown: breakdown.clone(),
            });
            breakdown
        }
    };
    Ok(Draft {
        charge,
        quantity,
        amount: breakdown.total(),
        steps,
    })
}

/// The free units of the usage discounts in force, used up once per period per meter: by
/// the charges reading the meter in charge order, and within grouped usage by group order.
struct FreeUnits {
    left: Vec<(InForce<UsageDiscount>, Decimal)>,
}

impl FreeUnits {
    fn new(usage_discounts: &[InForce<UsageDiscount>]) -> FreeUnits {
        FreeUnits {
            left: usage_discounts
                .iter()
                .map(|discount| (discount.clone(), discount.value.free_units))
                .collect(),
        }
    }

    /// `usage` less the free units left for `meter`, recording a step per discount used.
    fn take(
        &mut self,
        meter: &MeterCode,
        usage: &ChargeUsage,
        steps: &mut Vec<TermStep>,
    ) -> Result<ChargeUsage, TermsError> {
        let mut usage = usage.clone();
        for (discount, left) in &mut self.left {
            if discount.value.meter != *meter || left.is_zero() {
                continue;
            }
            let taken = match &mut usage {
                ChargeUsage::Quantity(quantity) => take_from(quantity, left)?,
                ChargeUsage::Grouped(groups) => {
                    let mut taken = Decimal::ZERO;
                    for quantity in groups.values_mut() {
                        taken = exact_add(taken, take_from(quantity, left)?)?;
                    }
                    taken
                }
                ChargeUsage::Transactions(_) => Decimal::ZERO,
            };
            if taken > Decimal::ZERO {
                steps.push(TermStep::FreeUnits {
                    term: discount.term.clone(),
                    name: discount.value.name.clone(),
                    meter: meter.clone(),
                    quantity: taken,
                });
            }
        }
        Ok(usage)
    }
}

/// Takes up to `left` off a positive `quantity`; returns what was taken.
fn take_from(quantity: &mut Decimal, left: &mut Decimal) -> Result<Decimal, TermsError> {
    if *quantity <= Decimal::ZERO {
        return Ok(Decimal::ZERO);
    }
    let taken = (*quantity).min(*left);
    *quantity = exact_sub(*quantity, taken)?;
    *left = exact_sub(*left, taken)?;
    Ok(taken)
}

/// Step 3: a percentage of what each covered line has left, in the order of the discounts.
fn apply_percentage(
    drafts: &mut [Draft<'_>],
    discount: &InForce<Discount>,
    percent: Decimal,
) -> Result<(), TermsError> {
    let fraction = percent
        .checked_div(Decimal::ONE_HUNDRED)
        .ok_or(TermsError::Overflow)?;
    for draft in drafts.iter_mut() {
        if !discount.value.applies_to.covers(draft.code()) || draft.amount <= Decimal::ZERO {
            continue;
        }
        let off = crate::exact::mul(draft.amount, fraction).ok_or(TermsError::Overflow)?;
        draft.steps.push(TermStep::PercentageDiscount {
            term: discount.term.clone(),
            name: discount.value.name.clone(),
            percent,
            base: draft.amount,
            amount: -off,
        });
        draft.amount = exact_sub(draft.amount, off)?;
    }
    Ok(())
}

/// Step 4: a fixed amount spread over the covered lines in proportion to what each has
/// left, in whole minor units, never more than a line has left (see the module docs).
fn apply_fixed(
    drafts: &mut [Draft<'_>],
    discount: &InForce<Discount>,
    amount: Money,
    currency: Currency,
) -> Result<(), TermsError> {
    let covered: Vec<usize> = (0..drafts.len())
        .filter(|index| discount.value.applies_to.covers(drafts[*index].code()))
        .collect();
    // Whole minor units a line can give: its amount rounded down (never above the amount).
    let weights: Vec<Decimal> = covered
        .iter()
        .map(|index| {
            RoundingMode::Down
                .round(drafts[*index].amount, currency.minor_units())
                .max(Decimal::ZERO)
        })
        .collect();
    let available = exact_sum(weights.iter().copied())?;
    let spread = amount.amount().min(available);
    if spread <= Decimal::ZERO {
        return Ok(());
    }
    let parts = Money::new(spread, currency).allocate(&weights)?;
    for (index, part) in covered.iter().zip(parts) {
        if part.is_zero() {
            continue;
        }
        let draft = &mut drafts[*index];
        draft.steps.push(TermStep::FixedDiscount {
            term: discount.term.clone(),
            name: discount.value.name.clone(),
            discount: amount.amount(),
            amount: -part.amount(),
        });
        draft.amount = exact_sub(draft.amount, part.amount())?;
    }
    Ok(())
}

/// Step 5: the minimum true-up (whole period only) or the cap adjustment, against what
/// the rounded usage lines bill.
fn commitment_lines(
    terms: &EffectiveTerms,
    priced: &PricedPeriod,
    scope: PricingScope,
    rounding: RoundingMode,
) -> Result<Vec<TermsLine>, TermsError> {
    let currency = terms.currency();
    let usage_amounts: Vec<Money> = priced
        .lines()
        .iter()
        .filter(|line| line.kind() == TermsLineKind::Usage)
        .map(TermsLine::amount)
        .collect();
    let usage = Money::sum(currency, &usage_amounts)?;
    let mut lines = Vec::new();
    if let Some(minimum) = terms.minimum()
        && scope == PricingScope::WholePeriod
        && usage.amount() < minimum.amount.amount()
    {
        let true_up = minimum.amount.checked_sub(&usage)?;
        let step = TermStep::MinimumCommitment {
            term: minimum.term.clone(),
            per_period: minimum.per_period.amount(),
            minimum: minimum.amount.amount(),
            share: minimum.share,
            usage: usage.amount(),
        };
        lines.push(TermsLine::new(
            TermsLineKind::MinimumTrueUp,
            "Minimum commitment true-up".into(),
            true_up,
            rounding,
            vec![step],
        ));
    }
    if let Some(maximum) = terms.maximum()
        && usage.amount() > maximum.amount.amount()
    {
        let adjustment = maximum.amount.checked_sub(&usage)?;
        let step = TermStep::MaximumSpend {
            term: maximum.term.clone(),
            per_period: maximum.per_period.amount(),
            maximum: maximum.amount.amount(),
            share: maximum.share,
            usage: usage.amount(),
        };
        lines.push(TermsLine::new(
            TermsLineKind::MaximumAdjustment,
            "Maximum spend cap".into(),
            adjustment,
            rounding,
            vec![step],
        ));
    }
    Ok(lines)
}

fn exact_add(left: Decimal, right: Decimal) -> Result<Decimal, TermsError> {
    crate::exact::add(left, right).ok_or(TermsError::Overflow)
}

fn exact_sub(left: Decimal, right: Decimal) -> Result<Decimal, TermsError> {
    crate::exact::sub(left, right).ok_or(TermsError::Overflow)
}

fn exact_sum(values: impl IntoIterator<Item = Decimal>) -> Result<Decimal, TermsError> {
    crate::exact::sum(values).ok_or(TermsError::Overflow)
}
