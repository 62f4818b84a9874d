//! `subscription-events` → `subscriptions`: one row per subscription version.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tally_proto::events::{SubscriptionEvent, subscription_event};

use super::{Poison, StagedRow, enum_name, micros, text, timestamp};
use crate::tables;

fn kind_name(kind: &subscription_event::Kind) -> &'static str {
    use subscription_event::Kind;
    match kind {
        Kind::Created(_) => "created",
        Kind::PlanChanged(_) => "plan_changed",
        Kind::Canceled(_) => "canceled",
        Kind::Paused(_) => "paused",
        Kind::Resumed(_) => "resumed",
        Kind::TrialEnded(_) => "trial_ended",
        Kind::StateChanged(_) => "state_changed",
    }
}

/// The `subscriptions` row of a subscription event (its version's row).
pub fn subscription_row(
    event: &SubscriptionEvent,
    now: DateTime<Utc>,
) -> Result<StagedRow, Poison> {
    use subscription_event::Kind;
    let kind = event
        .kind
        .as_ref()
        .ok_or("SubscriptionEvent without a kind")?;
    let subscription = event
        .subscription
        .as_ref()
        .ok_or("SubscriptionEvent without a subscription")?;
    if event.subscription_id.is_empty() || event.customer_id.is_empty() || event.version == 0 {
        return Err("SubscriptionEvent without subscription_id, customer_id or version".to_owned());
    }
    let occurred_at = match timestamp(event.occurred_at.as_ref()) {
        Value::Null => micros(now),
        value => value,
    };
    let effective_at = match timestamp(event.effective_at.as_ref()) {
        Value::Null => occurred_at.clone(),
        value => value,
    };
    let status = tally_proto::invoicing::SubscriptionStatus::try_from(subscription.status)
        .map_or(Value::Null, |s| {
            enum_name(s.as_str_name(), "SUBSCRIPTION_STATUS_")
        });
    let period = subscription.current_period.as_ref();
    let metadata: Map<String, Value> = subscription
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    let mut data = Map::new();
    let mut put = |column: &str, value: Value| {
        data.insert(column.to_owned(), value);
    };
    put("subscription_id", json!(event.subscription_id));
    put(
        "version",
        json!(i64::try_from(event.version).unwrap_or(i64::MAX)),
    );
    put("event_kind", json!(kind_name(kind)));
    put("effective_at", effective_at);
    put("occurred_at", occurred_at);
    put("customer_id", json!(event.customer_id));
    put("plan_id", text(&subscription.plan_id));
    put("plan_version_id", text(&subscription.plan_version_id));
    put("status", status);
    put("currency", text(&subscription.currency));
    put("start_at", timestamp(subscription.start_at.as_ref()));
    put(
        "trial_end_at",
        timestamp(subscription.trial_end_at.as_ref()),
    );
    put(
        "current_period_start",
        timestamp(period.and_then(|p| p.start_time.as_ref())),
    );
    put(
        "current_period_end",
        timestamp(period.and_then(|p| p.end_time.as_ref())),
    );
    put("cancel_at", timestamp(subscription.cancel_at.as_ref()));
    put("canceled_at", timestamp(subscription.canceled_at.as_ref()));
    put("ended_at", timestamp(subscription.ended_at.as_ref()));
    match kind {
        Kind::PlanChanged(change) => {
            put("from_plan_version_id", text(&change.from_plan_version_id))
        }
        Kind::Canceled(canceled) => put("reason", text(&canceled.reason)),
        Kind::StateChanged(changed) => put("reason", text(&changed.reason)),
        Kind::Created(_) | Kind::Paused(_) | Kind::Resumed(_) | Kind::TrialEnded(_) => {}
    }
    put("metadata", json!(Value::Object(metadata).to_string()));
    put("exported_at", micros(now));
    Ok(StagedRow {
        table: tables::SUBSCRIPTIONS,
        key: format!("{}/{}", event.subscription_id, event.version),
        data,
    })
}
