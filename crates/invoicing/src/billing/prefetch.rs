//! Rating's usage fetched before a bill run's transaction opens, so no
//! database transaction waits on the network (in `tally dev` rating and
//! invoicing share one pool).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use tally_domain::period::Period;

use super::Billing;
use super::compose::UsageCache;
use super::store::{self, InvoiceRow};
use crate::error::Result;
use crate::subscriptions::store as subscription_store;

use super::run::Work;

/// Most billing periods fetched ahead for one subscription (a subscription
/// far behind asks for the rest while composing).
const PREFETCH_LIMIT: usize = 64;

impl Billing<'_> {
    /// Rating's usage for every item of a batch ([`Self::prefetch_usages`]).
    pub(super) async fn prefetch_batch(
        &self,
        batch: Vec<Work>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Work, UsageCache)>> {
        let mut drafts = Vec::with_capacity(batch.len());
        let mut connection = self.pool.acquire().await?;
        for item in &batch {
            drafts.push(match item {
                Work::Subscription { .. } => None,
                Work::Draft { invoice_id, .. } => {
                    Some(store::load(&mut connection, invoice_id, false).await?)
                }
            });
        }
        drop(connection);
        let targets: Vec<(&str, Option<&InvoiceRow>)> = batch
            .iter()
            .zip(&drafts)
            .map(|(item, draft)| (item.subscription_id(), draft.as_ref()))
            .collect();
        let caches = self.prefetch_usages(&targets, now).await?;
        Ok(batch.into_iter().zip(caches).collect())
    }

    /// Rating's usage for the periods the next composition of a subscription
    /// (its due boundaries, or `draft`) will read, fetched before any
    /// transaction is open: a missing period is asked for again while
    /// composing, so this only has to be right most of the time.
    pub(crate) async fn prefetch_usage(
        &self,
        subscription_id: &str,
        now: DateTime<Utc>,
        draft: Option<&InvoiceRow>,
    ) -> Result<UsageCache> {
        let mut caches = self
            .prefetch_usages(&[(subscription_id, draft)], now)
            .await?;
        Ok(caches.pop().unwrap_or_default())
    }

    /// [`Self::prefetch_usage`] for many subscriptions: their rows and late
    /// periods in one query each, and rating asked once for all their periods
    /// (`BatchGetUsageCharges`). One cache per target, in order.
    pub(super) async fn prefetch_usages(
        &self,
        targets: &[(&str, Option<&InvoiceRow>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageCache>> {
        let ids: Vec<&str> = targets.iter().map(|(id, _)| *id).collect();
        let mut connection = self.pool.acquire().await?;
        let subscriptions = subscription_store::load_many(&mut connection, &ids).await?;
        let mut late_queries = Vec::new();
        let mut late_of = Vec::with_capacity(targets.len());
        for (id, draft) in targets {
            let subscription = subscriptions.get(*id);
            let previous = match draft {
                Some(row) => row.previous_boundary(),
                None => subscription.and_then(|subscription| subscription.billed_through),
            };
            if let (Some(subscription), Some(previous_boundary)) = (subscription, previous) {
                late_of.push(Some(late_queries.len()));
                late_queries.push(super::compose::LateQuery {
                    subscription,
                    previous_boundary,
                    exclude_invoice: draft.map(|row| row.id.as_str()),
                });
            } else {
                late_of.push(None);
            }
        }
        let late = super::compose::late_periods_many(
            &mut connection,
            &late_queries,
            Duration::days(i64::from(self.config.late_usage_lookback_days)),
        )
        .await?;
        drop(connection);
        // The periods each target's composition will read.
        let mut wanted: Vec<(usize, &str, Period)> = Vec::new();
        for (index, ((id, draft), late_index)) in targets.iter().zip(&late_of).enumerate() {
            let Some(subscription) = subscriptions.get(*id) else {
                continue;
            };
            let mut instants: BTreeSet<DateTime<Utc>> = late_index
                .map(|late_index| {
                    late[late_index]
                        .iter()
                        .map(|(period, _)| period.start())
                        .collect()
                })
                .unwrap_or_default();
            match draft {
                Some(row) => instants.extend(row.previous_boundary()),
                None => {
                    let mut after = subscription.billed_through;
                    while let Some(boundary) = subscription
                        .next_boundary(after)?
                        .filter(|boundary| *boundary <= now)
                    {
                        instants.extend(after);
                        after = Some(boundary);
                        if instants.len() >= PREFETCH_LIMIT {
                            break;
                        }
                    }
                }
            }
            let periods: BTreeSet<Period> = instants
                .into_iter()
                .map(|instant| subscription.period_containing(instant))
                .collect::<Result<_>>()?;
            wanted.extend(periods.into_iter().map(|period| (index, *id, period)));
        }
        let pairs: Vec<(&str, Period)> = wanted
            .iter()
            .map(|(_, id, period)| (*id, *period))
            .collect();
        let answers = if pairs.is_empty() {
            Vec::new()
        } else {
            self.rating.usage_charges_many(&pairs).await?
        };
        let mut caches: Vec<UsageCache> = targets.iter().map(|_| UsageCache::new()).collect();
        for ((index, _, period), answer) in wanted.into_iter().zip(answers) {
            if let Some(answer) = answer {
                caches[index].insert(period.start(), answer);
            }
        }
        Ok(caches)
    }
}
