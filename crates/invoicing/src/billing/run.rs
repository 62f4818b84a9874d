//! The bill run: due subscriptions and drafts in batches, each batch in one
//! transaction, a failing item isolated and named. Rating's answers come
//! from [`super::prefetch`]; finalization is [`super::finalize`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;
use sqlx::PgConnection;
use tally_proto::invoicing::InvoiceLine;

use super::Billing;
use super::compose::{Composer, LatePeriods, UsageCache};
use super::finalize::{Known, Sealing};
use super::store::{self, runs};
use crate::error::{InvoicingError, Result};
use crate::subscriptions::model;
use crate::subscriptions::store as subscription_store;
use crate::{credits, customers};

/// Most failures a summary names (it counts them all).
const MAX_NAMED_FAILURES: usize = 100;

/// What one bill run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub periods_examined: u64,
    pub invoices_created: u64,
    pub invoices_updated: u64,
    pub invoices_finalized: u64,
    pub credits_expired: u64,
    pub failures: u64,
    /// The first [`MAX_NAMED_FAILURES`] failures, named.
    pub failed: Vec<BillingFailure>,
}

/// A subscription (or one of its drafts) a bill run could not bill. One
/// customer's bad data must never stop anyone else's billing, so a failure
/// costs its own subscription only, and is named so an operator can act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingFailure {
    pub subscription_id: String,
    /// Empty when the subscription itself could not be read.
    pub customer_id: String,
    /// The draft being refreshed or finalized.
    pub invoice_id: Option<String>,
    pub reason: String,
}

impl RunSummary {
    fn add(&mut self, other: RunSummary) {
        self.periods_examined += other.periods_examined;
        self.invoices_created += other.invoices_created;
        self.invoices_updated += other.invoices_updated;
        self.invoices_finalized += other.invoices_finalized;
        self.credits_expired += other.credits_expired;
        self.failures += other.failures;
        for failure in other.failed {
            self.push_failure(failure);
        }
    }

    /// Counts `failure` and names it (up to [`MAX_NAMED_FAILURES`]).
    fn fail(&mut self, failure: BillingFailure) {
        self.failures += 1;
        self.push_failure(failure);
    }

    fn push_failure(&mut self, failure: BillingFailure) {
        if self.failed.len() < MAX_NAMED_FAILURES {
            self.failed.push(failure);
        }
    }
}

/// One item of a bill run.
#[derive(Clone, Debug)]
pub(super) enum Work {
    /// A subscription with a boundary due.
    Subscription { subscription_id: String },
    /// A draft to refresh with late usage, or to finalize after its grace.
    Draft {
        invoice_id: String,
        subscription_id: String,
    },
}

impl Work {
    pub(super) fn subscription_id(&self) -> &str {
        match self {
            Work::Subscription { subscription_id }
            | Work::Draft {
                subscription_id, ..
            } => subscription_id,
        }
    }

    fn invoice_id(&self) -> Option<&str> {
        match self {
            Work::Subscription { .. } => None,
            Work::Draft { invoice_id, .. } => Some(invoice_id),
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Subscription { subscription_id } => formatter.write_str(subscription_id),
            Work::Draft { invoice_id, .. } => formatter.write_str(invoice_id),
        }
    }
}

/// What a bill-run batch read once for all its items, and what it writes
/// once for all of them.
struct Batch {
    /// The customers of the batch's subscriptions.
    customers: HashMap<String, tally_proto::invoicing::Customer>,
    /// Those with a credit grant that may be burned.
    with_credits: HashSet<String>,
    /// Invoices to number and finalize before the commit.
    sealings: Vec<Sealing>,
    /// Subscriptions billed: (id, billed through, next bill at).
    advanced: Vec<store::Advanced>,
    /// Late-usage periods of each claimed subscription after the boundary it
    /// was billed through (the first boundary its run composes).
    late: HashMap<String, LatePeriods>,
    /// The bill run's audit origin (`None` only in the audit-cost benchmark).
    audit: Option<tally_audit::Origin>,
    /// `invoice.created` entries, appended with the finalizations' at the end.
    created: Vec<tally_audit::Entry>,
}

impl Batch {
    fn known(&self, customer_id: &str, lines: Option<Vec<InvoiceLine>>) -> Known<'_> {
        Known {
            lines,
            customer: self.customers.get(customer_id),
            without_credits: !self.with_credits.contains(customer_id),
        }
    }
}

impl Billing<'_> {
    /// One bill run as of the clock's now: expire credits, invoice every
    /// boundary that has passed, refresh drafts in grace, finalize the rest.
    /// Safe to run concurrently from several replicas.
    pub async fn bill_run(&self, customer_id: Option<&str>) -> Result<RunSummary> {
        let now = self.clock.now();
        let started = std::time::Instant::now();
        let mut summary = RunSummary::default();
        {
            let mut transaction = self.pool.begin().await?;
            let expired = credits::expire(&mut transaction, &*self.ids, now).await?;
            transaction.commit().await?;
            summary.credits_expired = u64::try_from(expired).unwrap_or(0);
        }
        // Due subscriptions, then drafts to refresh or finalize, in batches
        // of `bill_run_batch_size`, `bill_run_concurrency` batches at a time.
        let batch_size = usize::try_from(self.config.bill_run_batch_size)
            .unwrap_or(1)
            .max(1);
        // A batch holds one connection for its transaction and may need a
        // second one meanwhile (rating asked again for a period the prefetch
        // missed; in `tally dev` rating shares the pool): at most half the
        // pool, so batches never starve each other of connections.
        let pool_half = usize::try_from(self.pool.options().get_max_connections() / 2)
            .unwrap_or(1)
            .max(1);
        let concurrency = usize::try_from(self.config.bill_run_concurrency)
            .unwrap_or(1)
            .clamp(1, pool_half);
        let mut after = String::new();
        loop {
            let due = runs::due_subscription_ids(
                &self.pool,
                now,
                customer_id,
                &after,
                i64::try_from(batch_size * concurrency).unwrap_or(i64::MAX),
            )
            .await?;
            let Some(last) = due.last() else {
                break;
            };
            after.clone_from(last);
            let work: Vec<Work> = due
                .into_iter()
                .map(|subscription_id| Work::Subscription { subscription_id })
                .collect();
            summary.add(self.run_batches(work, batch_size, concurrency, now).await);
        }
        let drafts = runs::drafts_to_refresh(
            &self.pool,
            customer_id,
            now,
            now - Duration::minutes(i64::from(self.config.draft_refresh_minutes)),
        )
        .await?;
        let work: Vec<Work> = drafts
            .into_iter()
            .map(|draft| Work::Draft {
                invoice_id: draft.id,
                subscription_id: draft.subscription_id,
            })
            .collect();
        summary.add(self.run_batches(work, batch_size, concurrency, now).await);
        self.metrics.record(&summary, started.elapsed());
        Ok(summary)
    }

    /// Runs `work` in batches of `batch_size`, `concurrency` at a time.
    async fn run_batches(
        &self,
        work: Vec<Work>,
        batch_size: usize,
        concurrency: usize,
        now: DateTime<Utc>,
    ) -> RunSummary {
        let mut batches: Vec<Vec<Work>> = Vec::new();
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            batches.push(work.by_ref().take(batch_size).collect());
        }
        let results: Vec<RunSummary> = futures::stream::iter(batches)
            .map(|batch| self.bill_batch(batch, now))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut summary = RunSummary::default();
        for billed in results {
            summary.add(billed);
        }
        summary
    }

    /// One batch. Rating is asked first, outside any transaction; then the
    /// whole batch is billed in one transaction, and the invoices finalized
    /// are numbered together just before the commit (the number counter is
    /// locked for the commit only, not while composing). When anything
    /// fails — rating's answer for the batch, or one item — the batch is
    /// rolled back and its items are billed one by one, so only the failing
    /// item waits for the next run, named in the summary and the log.
    async fn bill_batch(&self, batch: Vec<Work>, now: DateTime<Utc>) -> RunSummary {
        let size = batch.len();
        let items: Vec<(Work, Option<UsageCache>)> = if size > 1 {
            match self.prefetch_batch(batch.clone(), now).await {
                Ok(prefetched) => match self.bill_together(&prefetched, now).await {
                    Ok(summary) => return summary,
                    Err(error) => {
                        tracing::info!(%error, size, "a bill-run batch failed; billing its items one by one");
                        prefetched
                            .into_iter()
                            .map(|(item, usage)| (item, Some(usage)))
                            .collect()
                    }
                },
                Err(error) => {
                    tracing::info!(%error, size, "rating's usage for a bill-run batch could not be read; billing its items one by one");
                    batch.into_iter().map(|item| (item, None)).collect()
                }
            }
        } else {
            batch.into_iter().map(|item| (item, None)).collect()
        };
        let mut summary = RunSummary::default();
        for (item, usage) in items {
            let result = match usage {
                Some(usage) => self.bill_together(&[(item.clone(), usage)], now).await,
                None => match self.prefetch_batch(vec![item.clone()], now).await {
                    Ok(prefetched) => self.bill_together(&prefetched, now).await,
                    Err(error) => Err(error),
                },
            };
            match result {
                Ok(billed) => summary.add(billed),
                Err(error) => summary.fail(self.failure(&item, &error).await),
            }
        }
        summary
    }

    /// Names a failed item (with its customer, read apart from the failed
    /// transaction) and logs it.
    async fn failure(&self, item: &Work, error: &InvoicingError) -> BillingFailure {
        let customer_id = runs::subscription_customer(&self.pool, item.subscription_id())
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let failure = BillingFailure {
            subscription_id: item.subscription_id().to_owned(),
            customer_id,
            invoice_id: item.invoice_id().map(str::to_owned),
            reason: error.to_string(),
        };
        tracing::warn!(
            subscription_id = %failure.subscription_id,
            customer_id = %failure.customer_id,
            invoice_id = failure.invoice_id.as_deref().unwrap_or(""),
            reason = %failure.reason,
            "a subscription could not be billed; the others were; retried next run"
        );
        failure
    }

    /// Bills `items` (all of one kind) in one transaction.
    async fn bill_together(
        &self,
        items: &[(Work, UsageCache)],
        now: DateTime<Utc>,
    ) -> Result<RunSummary> {
        let mut transaction = self.pool.begin().await?;
        match self.bill_in(&mut transaction, items, now).await {
            Ok(summary) => {
                transaction.commit().await?;
                Ok(summary)
            }
            Err(error) => {
                // Roll back now, not when the dropped transaction's connection
                // is next used: the items are retried one by one right after,
                // and `SKIP LOCKED` would silently skip rows this transaction
                // still held.
                transaction.rollback().await?;
                Err(error)
            }
        }
    }

    async fn bill_in(
        &self,
        transaction: &mut PgConnection,
        items: &[(Work, UsageCache)],
        now: DateTime<Utc>,
    ) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        // Lock the subscriptions first (a skipped one is another replica's),
        // then look for unpublished changes: a change committed before our
        // lock is seen, a later one waits for our commit.
        let ids: Vec<&str> = items
            .iter()
            .map(|(item, _)| item.subscription_id())
            .collect();
        let due_by = match items.first() {
            Some((Work::Subscription { .. }, _)) => Some(now),
            _ => None,
        };
        let claimed: HashMap<String, model::Subscription> =
            subscription_store::claim_many(&mut *transaction, &ids, due_by)
                .await?
                .into_iter()
                .map(|subscription| (subscription.id.clone(), subscription))
                .collect();
        let customers: Vec<&str> = claimed
            .values()
            .map(|subscription| subscription.customer_id.as_str())
            .collect();
        let unpublished = self
            .unpublished_changes(&mut *transaction, &customers)
            .await?;
        let mut batch = Batch {
            customers: customers::load_many(&mut *transaction, &customers).await?,
            with_credits: credits::customers_with_open_grants(&mut *transaction, &customers)
                .await?,
            sealings: Vec::new(),
            advanced: Vec::new(),
            late: HashMap::new(),
            audit: self
                .bill_run_audited
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| tally_audit::Origin::system(crate::audit::BILL_RUN)),
            created: Vec::new(),
        };
        if due_by.is_some() {
            batch.late = self.late_periods_of(&mut *transaction, &claimed).await?;
        }
        for (item, usage) in items {
            let Some(subscription) = claimed.get(item.subscription_id()) else {
                continue;
            };
            // Rating would price usage on phases it has not seen yet: only
            // what needs no usage (the start's in-advance fees) is billed.
            let rating_current = !unpublished.contains(&subscription.customer_id);
            let deferred = match item {
                Work::Subscription { .. } => {
                    let (billed, deferred) = self
                        .bill_subscription(
                            &mut *transaction,
                            subscription.clone(),
                            now,
                            usage,
                            rating_current,
                            &mut batch,
                        )
                        .await?;
                    summary.add(billed);
                    deferred
                }
                Work::Draft { .. } if !rating_current => true,
                Work::Draft { invoice_id, .. } => {
                    summary.add(
                        self.settle_draft(&mut *transaction, invoice_id, now, usage, &mut batch)
                            .await?,
                    );
                    false
                }
            };
            if deferred {
                summary.fail(BillingFailure {
                    subscription_id: subscription.id.clone(),
                    customer_id: subscription.customer_id.clone(),
                    invoice_id: item.invoice_id().map(str::to_owned),
                    reason: "a subscription change of the customer is not yet published to rating"
                        .into(),
                });
                tracing::info!(item = %item, customer_id = %subscription.customer_id,
                    "a subscription change of the customer is not yet published to rating; billed next run");
            }
        }
        store::advance_subscriptions(&mut *transaction, &batch.advanced).await?;
        self.seal(
            &mut *transaction,
            batch.sealings,
            now,
            batch.audit.as_ref(),
            batch.created,
        )
        .await?;
        Ok(summary)
    }

    /// Invoices every boundary of a locked subscription that has passed;
    /// invoices whose grace is already over are prepared for finalization
    /// (pushed to `sealings`). Unless `rating_current` (rating has seen every
    /// change of the customer), only the start is invoiced — its in-advance
    /// fees need no usage — and `true` says boundaries were left for the next
    /// run. Invoices do not depend on that: each boundary bills in advance
    /// on the subscription as it stood then.
    async fn bill_subscription(
        &self,
        connection: &mut PgConnection,
        mut subscription: model::Subscription,
        now: DateTime<Utc>,
        usage: &UsageCache,
        rating_current: bool,
        batch: &mut Batch,
    ) -> Result<(RunSummary, bool)> {
        let mut summary = RunSummary::default();
        let grace = Duration::hours(i64::from(self.config.grace_period_hours));
        let mut deferred = false;
        while let Some(boundary) = subscription
            .next_bill_at()?
            .filter(|boundary| *boundary <= now)
        {
            if !rating_current && subscription.billed_through.is_some() {
                deferred = true;
                break;
            }
            summary.periods_examined += 1;
            let mut composer = Composer::new(
                &mut *connection,
                &self.rating,
                &self.plans,
                &subscription,
                None,
            )
            .with_usage(usage.clone())
            .with_lookback(self.config.late_usage_lookback_days);
            if let Some((previous, periods)) = batch.late.remove(&subscription.id) {
                composer = composer.with_late_periods(previous, periods);
            }
            let composition = composer
                .compose(subscription.billed_through, boundary)
                .await?;
            if let Some(composition) = composition {
                // Late events can change only an invoice that bills usage.
                let grace = if composition.waits_for_late_usage() {
                    grace
                } else {
                    Duration::zero()
                };
                // A customer another system bills: the draft is held.
                let grace = crate::customers::billing_mode::grace_for(
                    &mut *connection,
                    &subscription.customer_id,
                    boundary,
                    grace,
                )
                .await?;
                let created = store::insert_draft(
                    &mut *connection,
                    &*self.ids,
                    &subscription.id,
                    &subscription.customer_id,
                    subscription.currency,
                    &composition,
                    grace,
                    now,
                )
                .await?;
                if let Some((row, lines)) = created {
                    summary.invoices_created += 1;
                    if let Some(origin) = &batch.audit {
                        let entry = self.created_entry(&row, lines.len(), now, origin);
                        batch.created.push(entry);
                    }
                    // Grace already over (none configured, no usage
                    // billed, or a boundary billed late): finalize now,
                    // composed as it is.
                    if boundary + grace <= now {
                        let known = batch.known(&subscription.customer_id, Some(lines));
                        let sealing = self
                            .prepare_finalization(&mut *connection, &row, now, known)
                            .await?;
                        batch.sealings.push(sealing);
                        summary.invoices_finalized += 1;
                    }
                }
            }
            subscription.billed_through = Some(boundary);
        }
        let next_bill_at = subscription.next_bill_at()?;
        batch
            .advanced
            .push((subscription.id, subscription.billed_through, next_bill_at));
        Ok((summary, deferred))
    }

    /// Recomposes a draft of a locked subscription (late usage) and prepares
    /// it for finalization once its grace is over.
    async fn settle_draft(
        &self,
        connection: &mut PgConnection,
        invoice_id: &str,
        now: DateTime<Utc>,
        usage: &UsageCache,
        batch: &mut Batch,
    ) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        let row = store::load(&mut *connection, invoice_id, true).await?;
        if row.status != crate::billing::model::InvoiceStatus::Draft {
            return Ok(summary);
        }
        if self
            .refresh_draft(&mut *connection, &row, now, usage.clone())
            .await?
        {
            summary.invoices_updated += 1;
        }
        if row.grace_period_ends_at <= now {
            let row = store::load(&mut *connection, invoice_id, true).await?;
            let known = batch.known(&row.customer_id, None);
            let sealing = self
                .prepare_finalization(&mut *connection, &row, now, known)
                .await?;
            batch.sealings.push(sealing);
            summary.invoices_finalized += 1;
        }
        Ok(summary)
    }

    /// The late-usage periods of `claimed` after the boundary each is billed
    /// through, in one query (read under the subscriptions' locks, as the
    /// composer would read them).
    async fn late_periods_of(
        &self,
        connection: &mut PgConnection,
        claimed: &HashMap<String, model::Subscription>,
    ) -> Result<HashMap<String, LatePeriods>> {
        let queries: Vec<super::compose::LateQuery<'_>> = claimed
            .values()
            .filter_map(|subscription| {
                Some(super::compose::LateQuery {
                    subscription,
                    previous_boundary: subscription.billed_through?,
                    exclude_invoice: None,
                })
            })
            .collect();
        let periods = super::compose::late_periods_many(
            connection,
            &queries,
            Duration::days(i64::from(self.config.late_usage_lookback_days)),
        )
        .await?;
        Ok(queries
            .iter()
            .zip(periods)
            .map(|(query, periods)| {
                (
                    query.subscription.id.clone(),
                    (query.previous_boundary, periods),
                )
            })
            .collect())
    }

    /// The customers among `customers` with a subscription change still in
    /// the outbox (not yet seen by rating).
    async fn unpublished_changes(
        &self,
        connection: &mut PgConnection,
        customers: &[&str],
    ) -> Result<HashSet<String>> {
        let pending = runs::customers_with_unpublished(
            connection,
            tally_bus::topics::SUBSCRIPTION_EVENTS,
            customers,
        )
        .await?;
        Ok(pending.into_iter().collect())
    }

    /// Refuses to compose while a subscription change of the customer is
    /// still in the outbox: rating would price usage on phases it has not
    /// seen yet. The run retries at the next tick.
    pub(crate) async fn require_published(
        &self,
        connection: &mut PgConnection,
        customer_id: &str,
    ) -> Result<()> {
        let pending = self.unpublished_changes(connection, &[customer_id]).await?;
        if pending.contains(customer_id) {
            return Err(InvoicingError::Unavailable(format!(
                "a subscription change of {customer_id} is not yet published to rating"
            )));
        }
        Ok(())
    }
}
