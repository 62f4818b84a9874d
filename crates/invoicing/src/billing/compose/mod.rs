//! What the invoice at one billing boundary of a subscription contains.
//!
//! The bill run invoices a subscription at its *boundaries*: its start (the
//! first in-advance fees), then the end of every billing period, and the
//! instant it ends. The invoice at boundary `B`, whose previous boundary is
//! `A`, bills:
//!
//! 1. in-arrears fees for the stretches of `[A, B)` (see [`super::fees`]);
//! 2. the true-up of in-advance fees of the period containing `A`: what the
//!    stretches of `[A, B)` are actually worth minus what was billed in
//!    advance for that period (plan changes, pauses and cancellations become
//!    `proration_credit` / `proration_charge` lines here);
//! 3. the usage of the period containing `A`, from rating's `GetUsageCharges`;
//! 4. the minimum-commitment true-up of that period;
//! 5. usage of the previous invoice's period that arrived after it was
//!    finalized (an `adjustment` line: the re-priced total minus what was billed);
//! 6. in-advance fees of the next period, `[B, next boundary)`, on the
//!    subscription as it stood at `B` (`Subscription::as_of`): a change that
//!    takes effect after `B` is billed by the next boundary's true-up (2.),
//!    whether the bill run composed `B` before the change was made or after.
//!
//! Composing is a pure function of the stored subscription, earlier invoices
//! and rating's answers, so a draft is simply composed again while its grace
//! period runs (late usage updates it), and an invoice does not depend on
//! when the bill run came: a run deferred (rating had not seen a change yet)
//! or late produces the invoices a prompt run would have.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::money::Money;
use tally_domain::period::Period;
use tally_proto::invoicing::BillingReason;
use tally_proto::rating::GetUsageChargesResponse;

use crate::billing::fees::{self, Stretch};
use crate::billing::lines::{Line, range, shown_decimal, shown_money};
use crate::billing::mapping::usage::charge_from_wire;
use crate::billing::model::{BillingTiming, Explanation, LineKind, ProrationPolicy};
use crate::error::{InvoicingError, Result};
use crate::plans::{PlanCache, PlanInfo};
use crate::rating::RatingClient;
use crate::subscriptions::{Policy, Subscription};

mod late_usage;
pub use late_usage::{LatePeriods, LateQuery, late_periods, late_periods_many};

/// An invoice before it is stored.
#[derive(Clone, Debug)]
pub struct Composition {
    /// The boundary.
    pub boundary: DateTime<Utc>,
    /// The period the invoice is for.
    pub period: Period,
    /// Why.
    pub reason: BillingReason,
    /// The lines, in printed order.
    pub lines: Vec<Line>,
}

impl Composition {
    /// Whether late events can still change it: it bills usage (a usage
    /// line, a minimum true-up against usage, an adjustment for late usage).
    /// Only such an invoice waits out the grace period as a draft; one of
    /// fees only (the in-advance fees of a new subscription, fees in arrears,
    /// prorations) is final when composed and is finalized at once, as
    /// Stripe and Orb charge a subscription's first fee at once.
    pub fn waits_for_late_usage(&self) -> bool {
        self.lines.iter().any(|line| match line.kind {
            LineKind::Usage | LineKind::MinimumTrueUp => true,
            LineKind::Adjustment => line.usage_period_start.is_some(),
            LineKind::Recurring
            | LineKind::ProrationCredit
            | LineKind::ProrationCharge
            | LineKind::CreditsApplied => false,
        })
    }
}

/// Reads what composing needs besides the subscription.
#[derive(Debug)]
pub struct Composer<'a> {
    pub connection: &'a mut PgConnection,
    pub rating: &'a RatingClient,
    pub subscription: &'a Subscription,
    /// The invoice being recomposed (its own lines do not count as billed).
    pub exclude_invoice: Option<&'a str>,
    plans: &'a PlanCache,
    /// Rating's answers fetched before the transaction, by period start.
    usage: UsageCache,
    /// How long after its end a period's usage may still change.
    lookback: Duration,
    /// [`late_periods`] already read for one previous boundary (a bill-run
    /// batch reads them for all its subscriptions at once).
    late: Option<LatePeriods>,
    /// Lines of invoices composed but not stored that come before this one
    /// (a preview of a boundary after others the bill run has yet to write):
    /// they count as billed.
    billed_before: Vec<Line>,
}

/// The lookback when none is configured: ingest's default backfill window.
const DEFAULT_LOOKBACK_DAYS: u32 = 35;

/// Usage charges fetched from rating ahead of a transaction, by period start,
/// so no database transaction waits on rating (in `tally dev` both share one
/// pool: holding connections while calling rating could exhaust it).
pub type UsageCache = BTreeMap<DateTime<Utc>, GetUsageChargesResponse>;

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Period> {
    Period::new(start, end).map_err(InvoicingError::internal)
}

impl<'a> Composer<'a> {
    /// A composer for `subscription`.
    pub fn new(
        connection: &'a mut PgConnection,
        rating: &'a RatingClient,
        plans: &'a PlanCache,
        subscription: &'a Subscription,
        exclude_invoice: Option<&'a str>,
    ) -> Self {
        Self {
            connection,
            rating,
            subscription,
            exclude_invoice,
            plans,
            usage: UsageCache::new(),
            lookback: Duration::days(i64::from(DEFAULT_LOOKBACK_DAYS)),
            late: None,
            billed_before: Vec::new(),
        }
    }

    /// Counts `lines` (of invoices composed before this one and not stored)
    /// as billed.
    pub fn with_billed_before(mut self, lines: Vec<Line>) -> Self {
        self.billed_before = lines;
        self
    }

    /// Uses `periods` as the late periods after `previous_boundary`, read by
    /// the caller in the same transaction (under the subscription's lock).
    pub fn with_late_periods(
        mut self,
        previous_boundary: DateTime<Utc>,
        periods: Vec<(Period, String)>,
    ) -> Self {
        self.late = Some((previous_boundary, periods));
        self
    }

    /// Rechecks invoiced usage periods that ended less than `days` ago.
    pub fn with_lookback(mut self, days: u32) -> Self {
        self.lookback = Duration::days(i64::from(days));
        self
    }

    /// Uses `usage` before asking rating.
    pub fn with_usage(mut self, usage: UsageCache) -> Self {
        self.usage = usage;
        self
    }

    /// The usage of `billing_period`: prefetched, or asked now.
    async fn usage_of(&mut self, billing_period: &Period) -> Result<GetUsageChargesResponse> {
        let cached = self.usage.get(&billing_period.start()).filter(|response| {
            response
                .period
                .as_ref()
                .and_then(|range| crate::wire::instant(range.end_time.as_ref()))
                == Some(billing_period.end())
        });
        match cached {
            Some(response) => Ok(response.clone()),
            None => {
                self.rating
                    .usage_charges(&self.subscription.id, billing_period)
                    .await
            }
        }
    }

    async fn plan(&mut self, phase: usize) -> Result<PlanInfo> {
        let id = &self.subscription.phases[phase].plan_version_id;
        self.plans.stored(&mut *self.connection, id).await
    }

    /// The invoice at `boundary`, whose previous boundary is `after`
    /// (`None` for the start); `None` when there is nothing to bill.
    pub async fn compose(
        &mut self,
        after: Option<DateTime<Utc>>,
        boundary: DateTime<Utc>,
    ) -> Result<Option<Composition>> {
        let subscription = self.subscription;
        // What is billed in advance at `boundary` is billed on the
        // subscription as it stood then (see `Subscription::as_of`).
        let as_billed = subscription.as_of(boundary);
        let Some(previous) = after else {
            // The start: the first period's in-advance fees.
            let Some(first_end) = as_billed.next_boundary(Some(boundary))? else {
                return Ok(None);
            };
            let window = period(boundary, first_end)?;
            let lines = self.advance_fees(&as_billed, &window).await?;
            if lines.is_empty() {
                return Ok(None);
            }
            return Ok(Some(Composition {
                boundary,
                period: window,
                reason: BillingReason::SubscriptionCreate,
                lines,
            }));
        };
        let ended = period(previous, boundary)?;
        let billing_period = subscription.period_containing(previous)?;
        let mut lines = self.arrears_fees(&billing_period, &ended).await?;
        lines.extend(self.advance_true_up(&billing_period, &ended).await?);
        let usage = self.usage(&billing_period).await?;
        let usage_total: Decimal = usage.iter().map(|line| line.amount).sum();
        lines.extend(usage);
        lines.extend(
            self.minimum_true_up(&billing_period, &ended, usage_total)
                .await?,
        );
        lines.extend(self.late_usage(previous, &billing_period).await?);
        let ends_here = subscription.cancel_at == Some(boundary);
        if !ends_here && let Some(next_end) = as_billed.next_boundary(Some(boundary))? {
            lines.extend(
                self.advance_fees(&as_billed, &period(boundary, next_end)?)
                    .await?,
            );
        }
        if lines.is_empty() {
            // Nothing billed (no usage charges, all trial or pause): no invoice.
            return Ok(None);
        }
        Ok(Some(Composition {
            boundary,
            period: ended,
            reason: if ends_here {
                BillingReason::SubscriptionEnd
            } else {
                BillingReason::SubscriptionCycle
            },
            lines,
        }))
    }

    /// Fee lines of one timing for `window` inside `billing_period`, on
    /// `subscription` (the stored one, or a view of it, `as_of` a boundary).
    async fn fee_lines(
        &mut self,
        subscription: &Subscription,
        billing_period: &Period,
        window: &Period,
        in_advance: bool,
    ) -> Result<Vec<Line>> {
        let stretches = fees::stretches(subscription, billing_period, window);
        let measure = fees::measure(subscription, billing_period);
        let mut lines = Vec::new();
        for (phase, parts) in group_by_phase(&stretches) {
            let plan = self
                .plans
                .stored(
                    &mut *self.connection,
                    &subscription.phases[phase].plan_version_id,
                )
                .await?;
            for fee in plan
                .recurring
                .iter()
                .filter(|fee| fee.in_advance == in_advance)
            {
                let shares = fees::shares(
                    Money::new(fee.amount, plan.currency),
                    billing_period,
                    &parts,
                    measure,
                )?;
                for (part, share) in parts.iter().zip(shares) {
                    let full = part == billing_period;
                    let mut line = Line::new(
                        if full {
                            LineKind::Recurring
                        } else {
                            LineKind::ProrationCharge
                        },
                        if full {
                            fee.name.clone()
                        } else {
                            format!("{} (prorated)", fee.name)
                        },
                        *part,
                        share,
                    )?;
                    line.plan_version_id.clone_from(&plan.id);
                    line.charge_key.clone_from(&fee.key);
                    line.in_advance = in_advance;
                    line.unit_price = full.then_some(fee.amount);
                    line.explanation = Some(if full {
                        Explanation::Recurring {
                            plan_version_id: plan.id.clone(),
                            charge_key: fee.key.clone(),
                            billing_timing: timing(in_advance),
                            period_amount: Some(shown_money(fee.amount, plan.currency)),
                        }
                    } else {
                        proration_detail(
                            &plan,
                            &fee.key,
                            fee.amount,
                            billing_period,
                            std::slice::from_ref(part),
                            subscription.phases[phase].policy,
                            measure,
                        )
                    });
                    lines.push(line);
                }
            }
        }
        Ok(lines)
    }

    async fn arrears_fees(&mut self, billing_period: &Period, ended: &Period) -> Result<Vec<Line>> {
        self.fee_lines(self.subscription, billing_period, ended, false)
            .await
    }

    /// In-advance fees for `window` (the next period, or the first), on the
    /// subscription `as_billed` at the window's start.
    async fn advance_fees(
        &mut self,
        as_billed: &Subscription,
        window: &Period,
    ) -> Result<Vec<Line>> {
        let billing_period = as_billed.period_containing(window.start())?;
        self.fee_lines(as_billed, &billing_period, window, true)
            .await
    }

    /// What the in-advance fees of `billing_period` are worth now that
    /// `ended` is over, minus what was billed for them.
    async fn advance_true_up(
        &mut self,
        billing_period: &Period,
        ended: &Period,
    ) -> Result<Vec<Line>> {
        let subscription = self.subscription;
        // Ending with policy NONE keeps the fees paid for the rest of the period.
        let keeps_fees = subscription.cancel_at == Some(ended.end())
            && subscription.cancel_proration == Policy::None;
        let window = if keeps_fees {
            period(ended.start(), billing_period.end())?
        } else {
            *ended
        };
        let actual = self
            .fee_lines(subscription, billing_period, &window, true)
            .await?;
        let mut worth: BTreeMap<(String, String), (Decimal, String)> = BTreeMap::new();
        // Where each version's fee was in force: what its true-up line explains.
        let mut in_force: BTreeMap<(String, String), Vec<Period>> = BTreeMap::new();
        for line in &actual {
            in_force
                .entry((line.plan_version_id.clone(), line.charge_key.clone()))
                .or_default()
                .push(line.service);
        }
        for line in &actual {
            let entry = worth
                .entry((line.plan_version_id.clone(), line.charge_key.clone()))
                .or_insert((Decimal::ZERO, line.description.clone()));
            entry.0 += line.amount;
        }
        let billed = crate::billing::store::billed::in_advance_billed_within(
            &mut *self.connection,
            &subscription.id,
            billing_period.start(),
            billing_period.end(),
            self.exclude_invoice,
        )
        .await?;
        let mut differences: BTreeMap<(String, String), (Decimal, String)> = worth;
        let billed_before = self.billed_before.iter().filter(|line| {
            line.in_advance
                && line.service.start() >= billing_period.start()
                && line.service.end() <= billing_period.end()
        });
        let billed_before: Vec<(String, String, Decimal)> = billed_before
            .map(|line| {
                (
                    line.plan_version_id.clone(),
                    line.charge_key.clone(),
                    line.amount,
                )
            })
            .collect();
        for (version, key, amount) in billed.into_iter().chain(billed_before) {
            let entry = differences
                .entry((version.clone(), key.clone()))
                .or_insert((Decimal::ZERO, key.clone()));
            entry.0 -= amount;
        }
        let measure = fees::measure(subscription, billing_period);
        let mut lines = Vec::new();
        for ((version, key), (difference, name)) in differences {
            if difference.is_zero() {
                continue;
            }
            let kind = if difference < Decimal::ZERO {
                LineKind::ProrationCredit
            } else {
                LineKind::ProrationCharge
            };
            let plan = self.plans.stored(&mut *self.connection, &version).await?;
            let fee = plan
                .recurring
                .iter()
                .find(|fee| fee.key == key)
                .map_or(Decimal::ZERO, |fee| fee.amount);
            let name = plan
                .recurring
                .iter()
                .find(|fee| fee.key == key)
                .map_or(name, |fee| fee.name.clone());
            let description = if kind == LineKind::ProrationCredit {
                format!("Unused {name}")
            } else {
                format!("{name} (prorated)")
            };
            let mut line = Line::new(
                kind,
                description,
                *ended,
                Money::new(difference, plan.currency),
            )?;
            // A charge is for the stretches the version was in force; a credit
            // for the rest of the window, paid in advance and not used (the
            // days after a change, a pause). Before, both named the whole
            // ended period with factor 1, whatever the amount.
            let used = in_force
                .remove(&(version.clone(), key.clone()))
                .unwrap_or_default();
            let mut explained = if kind == LineKind::ProrationCharge {
                used
            } else {
                gaps(&window, used)?
            };
            if explained.is_empty() {
                explained.push(*ended);
            }
            line.plan_version_id.clone_from(&version);
            line.charge_key.clone_from(&key);
            line.in_advance = true;
            line.explanation = Some(proration_detail(
                &plan,
                &key,
                fee,
                billing_period,
                &explained,
                Policy::Prorate,
                measure,
            ));
            lines.push(line);
        }
        Ok(lines)
    }

    /// Usage lines of `billing_period` from rating.
    async fn usage(&mut self, billing_period: &Period) -> Result<Vec<Line>> {
        let response = self.usage_of(billing_period).await?;
        let currency = self.subscription.currency;
        let mut lines = Vec::new();
        for charge in response.charges {
            let precise = charge
                .precise_amount
                .as_ref()
                .map(|value| crate::wire::parse_decimal(&value.amount, "precise_amount"))
                .transpose()
                .map_err(InvoicingError::internal)?
                .unwrap_or(Decimal::ZERO);
            let service = charge
                .period
                .as_ref()
                .and_then(|range| {
                    let start = crate::wire::instant(range.start_time.as_ref())?;
                    let end = crate::wire::instant(range.end_time.as_ref())?;
                    Period::new(start, end).ok()
                })
                .unwrap_or(*billing_period);
            let mut line = Line::new(
                LineKind::Usage,
                charge.charge_name.clone(),
                service,
                Money::new(precise, currency),
            )?;
            line.quantity = charge
                .billable_quantity
                .as_ref()
                .or(charge.quantity.as_ref())
                .and_then(|value| crate::wire::parse_decimal(&value.value, "quantity").ok())
                .unwrap_or(Decimal::ZERO);
            line.plan_version_id.clone_from(&charge.plan_version_id);
            line.charge_key.clone_from(&charge.charge_key);
            line.usage_period_start = Some(billing_period.start());
            line.explanation = Some(Explanation::Usage {
                charge: Some(charge_from_wire(&charge)?),
            });
            lines.push(line);
        }
        Ok(lines)
    }

    /// The top-up to the minimum commitment of the plan in force at the end
    /// of `ended` (only when some of `ended` was billable: not all trial or
    /// pause). The minimum is prorated like the recurring fees: the share of
    /// it the billed stretches of `ended` are worth, so a stub period (a start
    /// on the 16th with the anchor on the 1st, a cancellation mid-period)
    /// owes the same fraction of the minimum as of the fee.
    async fn minimum_true_up(
        &mut self,
        billing_period: &Period,
        ended: &Period,
        usage_total: Decimal,
    ) -> Result<Vec<Line>> {
        let stretches = fees::stretches(self.subscription, billing_period, ended);
        let Some(last) = stretches.last() else {
            return Ok(Vec::new());
        };
        let plan = self.plan(last.phase).await?;
        let Some(minimum) = plan.minimum_commitment else {
            return Ok(Vec::new());
        };
        let parts: Vec<Period> = stretches.iter().map(|stretch| stretch.part).collect();
        let measure = fees::measure(self.subscription, billing_period);
        let owed: Decimal = fees::shares(
            Money::new(minimum, plan.currency),
            billing_period,
            &parts,
            measure,
        )?
        .iter()
        .map(Money::amount)
        .sum();
        if usage_total >= owed {
            return Ok(Vec::new());
        }
        let full = parts.as_slice() == std::slice::from_ref(billing_period);
        let mut line = Line::new(
            LineKind::MinimumTrueUp,
            if full {
                "Minimum commitment true-up"
            } else {
                "Minimum commitment true-up (prorated)"
            },
            *ended,
            Money::new(owed - usage_total, plan.currency),
        )?;
        line.plan_version_id.clone_from(&plan.id);
        line.explanation = Some(Explanation::MinimumTrueUp {
            minimum_commitment: Some(shown_money(minimum, plan.currency)),
            charges_total: Some(shown_money(usage_total, plan.currency)),
            prorated_minimum: Some(shown_money(owed, plan.currency)),
            full_period: Some(range(billing_period)),
            prorated_period: Some(span(&parts, billing_period)),
            factor: Some(shown_decimal(
                parts
                    .iter()
                    .map(|part| fees::factor(billing_period, part, measure))
                    .sum(),
            )),
        });
        Ok(vec![line])
    }
}

fn timing(in_advance: bool) -> BillingTiming {
    if in_advance {
        BillingTiming::InAdvance
    } else {
        BillingTiming::InArrears
    }
}

/// The stretches of `window` that `used` does not cover, in order.
fn gaps(window: &Period, mut used: Vec<Period>) -> Result<Vec<Period>> {
    used.sort_by_key(Period::start);
    let mut gaps = Vec::new();
    let mut cursor = window.start();
    for part in used {
        if part.start() > cursor {
            gaps.push(period(cursor, part.start().min(window.end()))?);
        }
        cursor = cursor.max(part.end());
    }
    if cursor < window.end() {
        gaps.push(period(cursor, window.end())?);
    }
    Ok(gaps)
}

/// A proration line's explanation: `parts` of `billing_period` (one or
/// more stretches; the span from the first to the last is shown, with the
/// factor of the stretches together).
fn proration_detail(
    plan: &PlanInfo,
    key: &str,
    fee: Decimal,
    billing_period: &Period,
    parts: &[Period],
    policy: Policy,
    measure: tally_domain::proration::ProrationPolicy,
) -> Explanation {
    let policy = if measure == tally_domain::proration::ProrationPolicy::ByDay {
        ProrationPolicy::ProrateByDay
    } else {
        match policy {
            Policy::None => ProrationPolicy::None,
            Policy::Prorate => ProrationPolicy::Prorate,
            Policy::ProrateByDay => ProrationPolicy::ProrateByDay,
        }
    };
    Explanation::Proration {
        plan_version_id: plan.id.clone(),
        charge_key: key.to_owned(),
        policy,
        full_period: Some(range(billing_period)),
        prorated_period: Some(span(parts, billing_period)),
        factor: Some(shown_decimal(
            parts
                .iter()
                .map(|part| fees::factor(billing_period, part, measure))
                .sum(),
        )),
        period_amount: Some(shown_money(fee, plan.currency)),
    }
}

/// From the start of the first of `parts` to the end of the last (all of
/// `billing_period` when there are none).
fn span(parts: &[Period], billing_period: &Period) -> crate::billing::model::Range {
    match (parts.first(), parts.last()) {
        (Some(first), Some(last)) => crate::billing::model::Range {
            start: first.start(),
            end: last.end(),
        },
        _ => range(billing_period),
    }
}

/// Stretches grouped by phase, in first-appearance order.
fn group_by_phase(stretches: &[Stretch]) -> Vec<(usize, Vec<Period>)> {
    let mut groups: Vec<(usize, Vec<Period>)> = Vec::new();
    for stretch in stretches {
        match groups.iter_mut().find(|(phase, _)| *phase == stretch.phase) {
            Some((_, parts)) => parts.push(stretch.part),
            None => groups.push((stretch.phase, vec![stretch.part])),
        }
    }
    groups
}
