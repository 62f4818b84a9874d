//! The analytics tables (`finance.subscription_fees`,
//! `finance.subscriptions`): the fees and subscription instants the
//! consumers write, and what MRR is computed from (every fee row of a
//! currency and the instants of the subscriptions they belong to, grouped
//! by customer).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::history::{CustomerHistory, SubscriptionHistory, SubscriptionTiming};
use super::model::{InvoicedFee, Pause, StoredFee, SubscriptionFacts};
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

/// Stores fees, each with its billing interval serialised, in one
/// statement; a fee stored before under the same (subscription, plan
/// version, charge, start) is replaced, and of several given under one key
/// the last wins (as if stored one after another).
pub async fn upsert_fees(
    connection: &mut PgConnection,
    fees: &[(InvoicedFee, serde_json::Value)],
) -> Result<(), FinanceServiceError> {
    let mut last_of_key = std::collections::HashMap::with_capacity(fees.len());
    for (index, (fee, _)) in fees.iter().enumerate() {
        let key = (
            fee.subscription_id.as_str(),
            fee.plan_version_id.as_str(),
            fee.charge_key.as_str(),
            fee.effective_from,
        );
        last_of_key.insert(key, index);
    }
    let mut kept: Vec<&(InvoicedFee, serde_json::Value)> = last_of_key
        .into_values()
        .filter_map(|index| fees.get(index))
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    // A fixed order: concurrent batches then lock the rows in the same order.
    kept.sort_by(|a, b| {
        (
            &a.0.subscription_id,
            &a.0.plan_version_id,
            &a.0.charge_key,
            a.0.effective_from,
        )
            .cmp(&(
                &b.0.subscription_id,
                &b.0.plan_version_id,
                &b.0.charge_key,
                b.0.effective_from,
            ))
    });
    sqlx::query(
        "INSERT INTO finance.subscription_fees (subscription_id, plan_version_id, charge_key, \
           effective_from, customer_id, currency, period_amount, billing_interval, mrr, invoice_id, line_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], \
           $6::text[], $7::numeric[], $8::jsonb[], $9::numeric[], $10::text[], $11::text[]) \
         ON CONFLICT (subscription_id, plan_version_id, charge_key, effective_from) DO UPDATE SET \
           customer_id = EXCLUDED.customer_id, currency = EXCLUDED.currency, \
           period_amount = EXCLUDED.period_amount, billing_interval = EXCLUDED.billing_interval, \
           mrr = EXCLUDED.mrr, invoice_id = EXCLUDED.invoice_id, line_id = EXCLUDED.line_id",
    )
    .bind(kept.iter().map(|(fee, _)| fee.subscription_id.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.plan_version_id.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.charge_key.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.effective_from).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.customer_id.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.mrr.currency().code()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.period_amount.amount()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(_, interval)| interval).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.mrr.amount()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.invoice_id.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|(fee, _)| fee.line_id.as_str()).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes the fees `invoice_id` billed.
pub async fn delete_fees_of_invoice(
    connection: &mut PgConnection,
    invoice_id: &str,
) -> Result<(), FinanceServiceError> {
    sqlx::query("DELETE FROM finance.subscription_fees WHERE invoice_id = $1")
        .bind(invoice_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Stores a subscription snapshot's instants unless the stored snapshot's
/// version is as high (`pauses` is `facts.pauses` serialised).
pub async fn upsert_subscription_if_newer(
    connection: &mut PgConnection,
    facts: &SubscriptionFacts,
    pauses: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO finance.subscriptions (subscription_id, customer_id, currency, status, \
           version, start_at, trial_end_at, ends_at, pauses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (subscription_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
           currency = EXCLUDED.currency, status = EXCLUDED.status, version = EXCLUDED.version, \
           start_at = EXCLUDED.start_at, trial_end_at = EXCLUDED.trial_end_at, \
           ends_at = EXCLUDED.ends_at, pauses = EXCLUDED.pauses \
         WHERE finance.subscriptions.version < EXCLUDED.version",
    )
    .bind(&facts.subscription_id)
    .bind(&facts.customer_id)
    .bind(&facts.currency)
    .bind(facts.status)
    .bind(facts.version)
    .bind(facts.start_at)
    .bind(facts.trial_end_at)
    .bind(facts.ends_at)
    .bind(pauses)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Revenue recognised in `[start, end)`: per revenue account code and plan
/// version, credits minus debits of the entries effective in the range. The
/// plan is the one `finance.subscription_fees` keeps for the invoice line a
/// transaction names (`line=…` in the description the domain writes; a
/// reversal names its original's line); empty when no fee row has it.
pub async fn revenue_by_account_and_plan(
    pool: &PgPool,
    currency: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<(String, String, Decimal)>, FinanceServiceError> {
    Ok(sqlx::query_as(
        "SELECT a.code, coalesce(f.plan_version_id, '') AS plan, \
                sum(CASE WHEN e.side = 2 THEN e.amount ELSE -e.amount END) AS amount \
         FROM finance.entries e \
         JOIN finance.accounts a ON a.id = e.account_id \
         JOIN finance.transactions t ON t.id = e.transaction_id \
         LEFT JOIN finance.transactions o ON o.id = t.reverses \
         LEFT JOIN finance.subscription_fees f ON f.invoice_id = t.source_id \
           AND f.line_id = substring(coalesce(o.description, t.description) FROM 'line=(\\S+)') \
         WHERE a.kind = 4 AND e.currency = $1 AND e.effective_at >= $2 AND e.effective_at < $3 \
         GROUP BY a.code, plan \
         ORDER BY a.code, plan",
    )
    .bind(currency)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?)
}
