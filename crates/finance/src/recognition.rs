//! Revenue recognition: the schedules of deferred invoice lines (recurring
//! fees and prorations, by the domain's `RevenueSchedule`) are stored when
//! the invoice is finalized, and a job driven by the service clock posts
//! each day's recognition once the day is over (Dr deferred revenue, Cr
//! recurring-fee revenue, dated at the day's start).
//!
//! Exactly once: a day's transaction id derives from (invoice, line, day),
//! and the day is marked recognised in the same database transaction, so a
//! crash anywhere posts it once on the next round. A voided invoice's days
//! are never recognised (the void reverses what was).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use tally_domain::finance::facts::InvoiceFinalized;
use tally_domain::finance::recognition::{line_schedule, recognition_transactions};
use tally_domain::finance::{RecognitionDay, RecognitionPolicy};
use tally_domain::money::Money;
use tally_runtime::clock::Ticker;
use tally_runtime::{SharedClock, Shutdown};

use crate::error::FinanceServiceError;
use crate::journal::store::schedules::{self, DueDay, ScheduleDay};
use crate::journal::store::{self, Source};

/// Days recognised per database transaction.
const DAYS_PER_ROUND: i64 = 500;

/// The schedule days of `invoice`'s deferred lines, to store when it is
/// booked (a batch of invoices stores all of theirs in one statement).
pub fn schedule_days(
    invoice: &InvoiceFinalized,
    policy: RecognitionPolicy,
) -> Result<Vec<ScheduleDay<'_>>, FinanceServiceError> {
    let mut days = Vec::new();
    for line in &invoice.lines {
        let Some(schedule) = line_schedule(line, policy)? else {
            continue;
        };
        days.extend(schedule.days().iter().map(|day| ScheduleDay {
            invoice_id: invoice.invoice.as_str(),
            line_id: line.line_id.as_str(),
            day: day.day,
            amount: day.amount.amount(),
            currency: day.amount.currency().code(),
        }));
    }
    Ok(days)
}

/// Posts every day before `today` not yet recognised (of invoices not
/// voided); returns how many days were recognised. One database
/// transaction per batch of days.
pub async fn recognise_due(
    pool: &PgPool,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<usize, FinanceServiceError> {
    let mut recognised = 0;
    loop {
        let mut transaction = pool.begin().await?;
        let days = recognise_batch(&mut transaction, today, now).await?;
        transaction.commit().await?;
        if days == 0 {
            return Ok(recognised);
        }
        recognised += days;
    }
}

/// Recognises up to [`DAYS_PER_ROUND`] due days in the caller's transaction
/// (rows another transaction holds are skipped); returns how many.
pub async fn recognise_batch(
    connection: &mut PgConnection,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<usize, FinanceServiceError> {
    let due = schedules::lock_due_days(connection, today, DAYS_PER_ROUND).await?;
    let mut invoices: HashMap<String, InvoiceFinalized> = HashMap::new();
    let mut posted = Vec::new();
    for DueDay {
        invoice_id,
        line_id,
        day,
        amount,
        fact,
    } in &due
    {
        if !invoices.contains_key(invoice_id) {
            let invoice: InvoiceFinalized =
                serde_json::from_value(fact.clone()).map_err(|error| {
                    FinanceServiceError::Internal(format!(
                        "stored invoice {invoice_id} is unreadable: {error}"
                    ))
                })?;
            invoices.insert(invoice_id.clone(), invoice);
        }
        let invoice = &invoices[invoice_id];
        let line = invoice
            .lines
            .iter()
            .find(|line| line.line_id.as_str() == line_id)
            .ok_or_else(|| {
                FinanceServiceError::Internal(format!("invoice {invoice_id} has no line {line_id}"))
            })?;
        let scheduled = RecognitionDay {
            day: *day,
            amount: Money::new(*amount, invoice.currency),
        };
        posted.extend(
            recognition_transactions(invoice, line, &scheduled)?
                .into_iter()
                .map(|transaction| (transaction, invoice_id.as_str())),
        );
    }
    // One posting and one update for the whole batch (a day's transaction
    // and its mark stay in the same database transaction).
    let sourced: Vec<_> = posted
        .iter()
        .map(|(transaction, invoice_id)| {
            let source = Source {
                kind: "recognition",
                id: invoice_id,
            };
            (transaction, source)
        })
        .collect();
    store::post_sourced(&mut *connection, &sourced, now).await?;
    let marked: Vec<(&str, &str, NaiveDate)> = due
        .iter()
        .map(|due| (due.invoice_id.as_str(), due.line_id.as_str(), due.day))
        .collect();
    schedules::mark_days_recognised(connection, &marked).await?;
    Ok(due.len())
}

/// The recognition job: every tick of the clock (and at once when a manual
/// clock moves), recognises the days that ended.
#[derive(Debug)]
pub struct RecognitionJob {
    pool: PgPool,
    clock: SharedClock,
    poll_interval: Duration,
}

impl RecognitionJob {
    /// A job on `pool`, looking every `poll_interval`.
    pub fn new(pool: PgPool, clock: SharedClock, poll_interval: Duration) -> Self {
        Self {
            pool,
            clock,
            poll_interval,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = Ticker::new(&*self.clock, self.poll_interval);
        while !shutdown.is_triggered() {
            let now = self.clock.now();
            match recognise_due(&self.pool, now.date_naive(), now).await {
                Ok(0) => {}
                Ok(days) => tracing::info!(days, "revenue recognised"),
                Err(error) => {
                    tracing::warn!(%error, "recognition round failed; retrying at the next tick")
                }
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = ticker.tick() => {}
            }
        }
    }
}
