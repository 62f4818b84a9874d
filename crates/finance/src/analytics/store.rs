//! Reading what MRR is computed from: every fee row of a currency and the
//! instants of the subscriptions they belong to, grouped by customer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use sqlx::types::Json;

use super::fees::StoredFee;
use super::history::{CustomerHistory, SubscriptionHistory, SubscriptionTiming};
use super::subscriptions::Pause;
use crate::error::FinanceServiceError;

type FeeRow = (String, String, String, String, DateTime<Utc>, Decimal);
type TimingRow = (
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Json<Vec<Pause>>,
);

/// Every customer with a recurring fee in `currency` (ISO 4217), by id.
pub async fn customer_histories(
    pool: &PgPool,
    currency: &str,
) -> Result<BTreeMap<String, CustomerHistory>, FinanceServiceError> {
    let fees: Vec<FeeRow> = sqlx::query_as(
        "SELECT subscription_id, customer_id, plan_version_id, charge_key, effective_from, mrr \
         FROM finance.subscription_fees WHERE currency = $1 \
         ORDER BY customer_id, subscription_id, effective_from, plan_version_id, charge_key",
    )
    .bind(currency)
    .fetch_all(pool)
    .await?;
    let timings: Vec<TimingRow> = sqlx::query_as(
        "SELECT s.subscription_id, s.start_at, s.trial_end_at, s.ends_at, s.pauses \
         FROM finance.subscriptions s \
         WHERE s.subscription_id IN \
           (SELECT DISTINCT subscription_id FROM finance.subscription_fees WHERE currency = $1)",
    )
    .bind(currency)
    .fetch_all(pool)
    .await?;
    let mut timing_of: BTreeMap<String, SubscriptionTiming> = timings
        .into_iter()
        .map(|(id, start_at, trial_end_at, ends_at, Json(pauses))| {
            (
                id,
                SubscriptionTiming {
                    start_at,
                    trial_end_at,
                    ends_at,
                    pauses,
                },
            )
        })
        .collect();
    let mut customers: BTreeMap<String, CustomerHistory> = BTreeMap::new();
    for (subscription_id, customer_id, plan_version_id, charge_key, effective_from, mrr) in fees {
        let subscription = customers
            .entry(customer_id.clone())
            .or_default()
            .subscriptions
            .entry(subscription_id.clone())
            .or_insert_with(|| SubscriptionHistory {
                timing: timing_of.remove(&subscription_id),
                fees: Vec::new(),
            });
        subscription.fees.push(StoredFee {
            subscription_id,
            customer_id,
            plan_version_id,
            charge_key,
            effective_from,
            mrr,
        });
    }
    Ok(customers)
}
