//! Detecting crossings after a usage batch is committed.
//!
//! The evaluator runs after the batch's commit (it prices through the pool,
//! which sees committed aggregates). For each customer of the batch that has
//! thresholds, it prices every billing period of the subscription that the
//! batch changed (aggregates whose `max_seq` is at least the batch's lowest
//! sequence number) with the same function as `GetUsageCharges`, and records
//! each threshold whose limit the period's value reaches. A crossing row and
//! its `ThresholdCrossed` outbox message are written in one transaction, and
//! the row's key (threshold, period) makes the event exactly-once.
//!
//! A crash between the batch's commit and the evaluation delays the event to
//! the subscription's next rated batch; it is never lost while usage flows,
//! and never emitted twice.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry::metrics::Counter;
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::PgPool;
use tally_bus::inbox::ServiceSchema;
use tally_bus::{Message, outbox, topics};
use tally_domain::period::Period;
use tally_proto::common;
use tally_proto::events::{ThresholdCrossed, threshold_crossed};
use tally_proto::rating::UsageCharge;
use tally_runtime::SharedClock;

use super::api::to_message;
use super::store::{self, Crossing, Limit, Threshold};
use crate::cache::CatalogCache;
use crate::charges::{PricedPeriod, price_period, subscription_phases};
use crate::error::RatingError;
use crate::usage::AcceptedEvent;
use crate::wire::{decimal, time_range, timestamp};

/// The protobuf type name of the crossing message.
pub const THRESHOLD_CROSSED_TYPE: &str = "tally.events.v1.ThresholdCrossed";

/// Evaluates thresholds after usage batches.
#[derive(Debug, Clone)]
pub struct ThresholdEvaluator {
    pool: PgPool,
    cache: CatalogCache,
    clock: SharedClock,
    /// `tally.rating.threshold_crossings`.
    crossings: Counter<u64>,
}

impl ThresholdEvaluator {
    /// An evaluator pricing with `cache`.
    pub fn new(pool: PgPool, cache: CatalogCache, clock: SharedClock) -> Self {
        let crossings = tally_runtime::telemetry::meter()
            .u64_counter("tally.rating.threshold_crossings")
            .with_description("Thresholds crossed (ThresholdCrossed events emitted), by kind")
            .build();
        Self {
            pool,
            cache,
            clock,
            crossings,
        }
    }

    /// Evaluates the thresholds of the customers of `events` (a committed
    /// batch); returns the crossings it recorded.
    pub async fn evaluate(&self, events: &[AcceptedEvent]) -> Result<usize, RatingError> {
        let customers: BTreeSet<&str> = events
            .iter()
            .map(|event| event.customer_id.as_str())
            .collect();
        let customers: Vec<&str> = customers.into_iter().collect();
        let thresholds = store::of_customers(&self.pool, &customers).await?;
        if thresholds.is_empty() {
            return Ok(0);
        }
        let lowest_seq = events
            .iter()
            .map(|event| event.sequence_number)
            .min()
            .unwrap_or_default();
        let mut by_subscription: BTreeMap<&str, Vec<&Threshold>> = BTreeMap::new();
        for threshold in &thresholds {
            by_subscription
                .entry(threshold.subscription_id.as_str())
                .or_default()
                .push(threshold);
        }
        let mut recorded = 0;
        for (subscription_id, thresholds) in by_subscription {
            let periods =
                store::periods_changed_since(&self.pool, subscription_id, lowest_seq).await?;
            if periods.is_empty() {
                continue;
            }
            let phases = subscription_phases(&self.pool, subscription_id).await?;
            for (start, end) in periods {
                let period = Period::new(start, end)
                    .map_err(|error| RatingError::Corrupt(error.to_string()))?;
                let priced =
                    price_period(&self.pool, &self.cache, subscription_id, &period, &phases)
                        .await?;
                for threshold in &thresholds {
                    let Some(value) = reached(threshold, &priced)? else {
                        continue;
                    };
                    let Some(trigger) = triggering_event(events, &threshold.customer_id, &period)
                    else {
                        continue;
                    };
                    if self.record(threshold, &period, value, trigger).await? {
                        recorded += 1;
                    }
                }
            }
        }
        Ok(recorded)
    }

    /// Records a crossing and its outbox message; `false` when it was already recorded.
    async fn record(
        &self,
        threshold: &Threshold,
        period: &Period,
        value: Decimal,
        trigger: &AcceptedEvent,
    ) -> Result<bool, RatingError> {
        let now = self.clock.now();
        let crossed_at = trigger
            .event
            .as_ref()
            .map(|event| event.timestamp())
            .unwrap_or(now);
        let mut transaction = self.pool.begin().await?;
        let recorded = store::record_crossing(
            &mut transaction,
            &Crossing {
                threshold_id: &threshold.threshold_id,
                period: (period.start(), period.end()),
                value,
                crossed_at,
                triggering_event_id: &trigger.event_id,
                detected_at: now,
            },
        )
        .await?;
        if !recorded {
            return Ok(false);
        }
        let event_id = format!(
            "tevt_{}_{}",
            threshold.threshold_id.trim_start_matches("thr_"),
            period.start().timestamp()
        );
        let value = match &threshold.limit {
            Limit::Spend { currency, .. } => threshold_crossed::Value::Spend(common::Money {
                currency: currency.clone(),
                amount: value.to_string(),
            }),
            Limit::Usage { .. } => threshold_crossed::Value::Quantity(decimal(value)),
        };
        let payload = ThresholdCrossed {
            event_id: event_id.clone(),
            threshold: Some(to_message(threshold.clone(), now)),
            subscription_id: threshold.subscription_id.clone(),
            customer_id: threshold.customer_id.clone(),
            period: Some(time_range(period.start(), period.end())),
            value: Some(value),
            crossed_at: Some(timestamp(crossed_at)),
            triggering_event_id: trigger.event_id.clone(),
            detected_at: Some(timestamp(now)),
        }
        .encode_to_vec();
        let message = Message::new(THRESHOLD_CROSSED_TYPE, 1, payload)
            .with_id(event_id)
            .with_ordering_key(threshold.customer_id.clone());
        outbox::enqueue(
            &mut transaction,
            ServiceSchema::Rating,
            topics::RATING_EVENTS,
            &message,
        )
        .await?;
        transaction.commit().await?;
        let kind = match threshold.limit {
            Limit::Spend { .. } => "spend",
            Limit::Usage { .. } => "usage",
        };
        self.crossings
            .add(1, &[opentelemetry::KeyValue::new("kind", kind)]);
        tracing::info!(
            threshold_id = %threshold.threshold_id,
            subscription_id = %threshold.subscription_id,
            key = %threshold.key,
            limit = %value_text(&threshold.limit),
            "threshold crossed"
        );
        Ok(true)
    }
}

/// The period's value when it reaches the threshold's limit.
fn reached(threshold: &Threshold, priced: &PricedPeriod) -> Result<Option<Decimal>, RatingError> {
    let value = match &threshold.limit {
        Limit::Spend { .. } => sum(priced.charges.iter().map(|line| {
            line.precise_amount
                .as_ref()
                .map_or("0", |money| money.amount.as_str())
        }))?,
        Limit::Usage { meter_code, .. } => usage_quantity(&priced.charges, meter_code)?,
    };
    let limit = match &threshold.limit {
        Limit::Spend { amount, .. } => *amount,
        Limit::Usage { quantity, .. } => *quantity,
    };
    Ok((value >= limit).then_some(value))
}

/// The quantity of `meter_code` over a period's lines: each segment and group
/// counts once, even when several charges price the same meter.
fn usage_quantity(lines: &[UsageCharge], meter_code: &str) -> Result<Decimal, RatingError> {
    let mut seen = BTreeSet::new();
    let quantities = lines.iter().filter_map(|line| {
        if line.meter_code != meter_code {
            return None;
        }
        let mut group: Vec<(&String, &String)> = line.group.iter().collect();
        group.sort();
        let key = (
            line.plan_version_id.as_str(),
            format!("{:?}{group:?}", line.period),
        );
        seen.insert(key).then(|| {
            line.quantity
                .as_ref()
                .map_or("0", |quantity| quantity.value.as_str())
        })
    });
    sum(quantities)
}

fn sum<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<Decimal, RatingError> {
    values.try_fold(Decimal::ZERO, |total, value| {
        let value = tally_proto::convert::decimal(value).map_err(|error| {
            RatingError::Corrupt(format!("priced line value {value:?}: {error}"))
        })?;
        total
            .checked_add(value)
            .ok_or_else(|| RatingError::Corrupt("threshold value overflows".into()))
    })
}

/// The batch's last event (by sequence number) of `customer` inside `period`.
fn triggering_event<'a>(
    events: &'a [AcceptedEvent],
    customer: &str,
    period: &Period,
) -> Option<&'a AcceptedEvent> {
    events
        .iter()
        .filter(|event| {
            event.customer_id == customer
                && event
                    .event
                    .as_ref()
                    .is_ok_and(|usage| period.contains(usage.timestamp()))
        })
        .max_by_key(|event| event.sequence_number)
}

fn value_text(limit: &Limit) -> String {
    match limit {
        Limit::Spend { currency, amount } => format!("spend {amount} {currency}"),
        Limit::Usage {
            meter_code,
            quantity,
        } => format!("usage {quantity} {meter_code}"),
    }
}
