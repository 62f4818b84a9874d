//! Recurring fees over a billing period: which plan version bills which
//! stretch, and how much of each fee a stretch is worth.
//!
//! A stretch of a period is billed when the subscription runs (after its
//! start, before its end), outside the trial and outside every pause. Each
//! stretch belongs to the phase in force — except that a phase started by a
//! change with policy NONE inside the period leaves the period to the phase
//! before it (its fees start with the next period). A fee is split over the
//! period's cut points with the domain's `proration::prorate` (exact minor
//! units: the parts of a fee always add up to the fee), by second, or by day
//! when a change in the period asked for PRORATE_BY_DAY.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::money::{LINE_ROUNDING, Money};
use tally_domain::period::Period;
use tally_domain::proration::{ProrationPolicy, prorate};

use crate::error::{InvoicingError, Result};
use crate::subscriptions::{Policy, Subscription};

/// A stretch of a billing period billed on one phase's plan version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stretch {
    /// Index of the phase whose fees bill it.
    pub phase: usize,
    /// The stretch.
    pub part: Period,
}

fn intersect(start: DateTime<Utc>, end: DateTime<Utc>, window: &Period) -> Option<Period> {
    let start = start.max(window.start());
    let end = end.min(window.end());
    Period::new(start, end).ok()
}

/// `part` minus `holes`.
fn subtract(part: Period, holes: &[Period]) -> Vec<Period> {
    let mut pieces = vec![part];
    for hole in holes {
        let mut next = Vec::new();
        for piece in pieces {
            if hole.end() <= piece.start() || hole.start() >= piece.end() {
                next.push(piece);
                continue;
            }
            if let Ok(left) = Period::new(piece.start(), hole.start()) {
                next.push(left);
            }
            if let Ok(right) = Period::new(hole.end(), piece.end()) {
                next.push(right);
            }
        }
        pieces = next;
    }
    pieces
}

/// The phase whose fees bill phase `index`'s time inside `period`.
fn billing_phase(subscription: &Subscription, index: usize, period: &Period) -> usize {
    let mut index = index;
    while index > 0 {
        let phase = &subscription.phases[index];
        if phase.policy == Policy::None && phase.start_at > period.start() {
            index -= 1;
        } else {
            break;
        }
    }
    index
}

/// The billed stretches of `window` (inside the billing `period`).
pub fn stretches(subscription: &Subscription, period: &Period, window: &Period) -> Vec<Stretch> {
    let far = DateTime::<Utc>::MAX_UTC;
    let mut holes: Vec<Period> = subscription
        .pauses
        .iter()
        .filter_map(|pause| Period::new(pause.pause_at, pause.resume_at.unwrap_or(far)).ok())
        .collect();
    if let Some(trial_end) = subscription.trial_end_at
        && let Ok(trial) = Period::new(subscription.start_at, trial_end)
    {
        holes.push(trial);
    }
    let mut stretches: Vec<Stretch> = Vec::new();
    for (index, phase) in subscription.phases.iter().enumerate() {
        let Some(part) = intersect(phase.start_at, phase.end_at.unwrap_or(far), window) else {
            continue;
        };
        let billed_by = billing_phase(subscription, index, period);
        for piece in subtract(part, &holes) {
            match stretches.last_mut() {
                Some(last) if last.phase == billed_by && last.part.end() == piece.start() => {
                    if let Ok(merged) = Period::new(last.part.start(), piece.end()) {
                        last.part = merged;
                    }
                }
                _ => stretches.push(Stretch {
                    phase: billed_by,
                    part: piece,
                }),
            }
        }
    }
    stretches
}

/// The measure used to split `period`: by day when a change inside it asked for it.
pub fn measure(subscription: &Subscription, period: &Period) -> ProrationPolicy {
    let by_day = subscription
        .phases
        .iter()
        .any(|phase| phase.policy == Policy::ProrateByDay && period.contains(phase.start_at));
    if by_day {
        ProrationPolicy::ByDay
    } else {
        ProrationPolicy::BySecond
    }
}

/// The share of `fee` (per full `period`) each of `parts` is worth, in exact
/// minor units; every part must lie inside `period`.
pub fn shares(
    fee: Money,
    period: &Period,
    parts: &[Period],
    policy: ProrationPolicy,
) -> Result<Vec<Money>> {
    let fee = fee.round(LINE_ROUNDING);
    let mut cuts = BTreeSet::new();
    for part in parts {
        for instant in [part.start(), part.end()] {
            if instant > period.start() && instant < period.end() {
                cuts.insert(instant);
            }
        }
    }
    let cuts: Vec<DateTime<Utc>> = cuts.into_iter().collect();
    let pieces = prorate(fee, period, &cuts, policy)
        .or_else(|_| prorate(fee, period, &cuts, ProrationPolicy::BySecond))
        .map_err(InvoicingError::internal)?;
    let mut starts = vec![period.start()];
    starts.extend(cuts.iter().copied());
    parts
        .iter()
        .map(|part| {
            let mut total = Money::zero(fee.currency());
            for (piece, start) in pieces.iter().zip(&starts) {
                if part.start() <= *start && *start < part.end() {
                    total = total.checked_add(piece).map_err(InvoicingError::internal)?;
                }
            }
            Ok(total)
        })
        .collect()
}

/// The exact factor of `part` in `period` (for the line's explanation).
pub fn factor(period: &Period, part: &Period, policy: ProrationPolicy) -> Decimal {
    policy
        .factor(period, part)
        .or_else(|_| ProrationPolicy::BySecond.factor(period, part))
        .unwrap_or(Decimal::ONE)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;
    use tally_domain::money::Currency;

    use super::*;
    use crate::subscriptions::{Pause, Phase};

    fn day(month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, month, day, 0, 0, 0).unwrap()
    }

    fn phase(
        version: &str,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
        policy: Policy,
    ) -> Phase {
        Phase {
            plan_id: "plan_1".into(),
            plan_version_id: version.into(),
            start_at: start,
            end_at: end,
            policy,
        }
    }

    fn subscription(phases: Vec<Phase>, pauses: Vec<Pause>) -> Subscription {
        Subscription {
            phases,
            pauses,
            ..crate::subscriptions::model::fixture(day(1, 1), day(1, 1))
        }
    }

    #[test]
    fn shares_of_a_partition_always_add_up_to_the_fee() {
        let january = Period::new(day(1, 1), day(2, 1)).unwrap();
        let fees = [
            dec!(31.00),
            dec!(10.00),
            dec!(0.01),
            dec!(99.99),
            dec!(1000.03),
        ];
        for seed in 1_i64..200 {
            // A partition of January at pseudo-random seconds.
            let mut cuts: Vec<DateTime<Utc>> = (1..=(seed % 5 + 1))
                .map(|k| {
                    day(1, 1) + chrono::Duration::seconds((seed * 7919 * k) % (31 * 86_400 - 1) + 1)
                })
                .collect();
            cuts.sort();
            cuts.dedup();
            let mut bounds = vec![january.start()];
            bounds.extend(cuts);
            bounds.push(january.end());
            let parts: Vec<Period> = bounds
                .windows(2)
                .map(|pair| Period::new(pair[0], pair[1]).unwrap())
                .collect();
            for fee in fees {
                for policy in [ProrationPolicy::BySecond, ProrationPolicy::ByDay] {
                    let fee = Money::new(fee, Currency::USD);
                    let amounts = shares(fee, &january, &parts, policy).unwrap();
                    let total: Decimal = amounts.iter().map(Money::amount).sum();
                    assert_eq!(total, fee.amount(), "seed {seed} {policy:?}");
                    assert!(
                        amounts
                            .iter()
                            .all(|amount| amount.is_rounded() && !amount.is_negative())
                    );
                }
            }
        }
    }

    #[test]
    fn a_none_change_leaves_the_period_to_the_old_phase() {
        let january = Period::new(day(1, 1), day(2, 1)).unwrap();
        let changed = subscription(
            vec![
                phase("pv_a", day(1, 1), Some(day(1, 11)), Policy::Prorate),
                phase("pv_b", day(1, 11), None, Policy::None),
            ],
            vec![],
        );
        assert_eq!(
            stretches(&changed, &january, &january),
            vec![Stretch {
                phase: 0,
                part: january
            }]
        );
        let prorated = subscription(
            vec![
                phase("pv_a", day(1, 1), Some(day(1, 11)), Policy::Prorate),
                phase("pv_b", day(1, 11), None, Policy::Prorate),
            ],
            vec![Pause {
                pause_at: day(1, 21),
                resume_at: Some(day(1, 26)),
            }],
        );
        let parts = stretches(&prorated, &january, &january);
        assert_eq!(parts.len(), 3);
        let fee = Money::new(dec!(31), Currency::USD);
        let amounts = shares(
            fee,
            &january,
            &parts.iter().map(|stretch| stretch.part).collect::<Vec<_>>(),
            ProrationPolicy::BySecond,
        )
        .unwrap();
        assert_eq!(
            amounts.iter().map(Money::amount).collect::<Vec<_>>(),
            vec![dec!(10.00), dec!(10.00), dec!(6.00)]
        );
    }
}
