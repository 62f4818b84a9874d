//! Reconciliation: for a window, page through Stripe's invoices, charges,
//! refunds and balance transactions created in it, match them with Tally's
//! ([`matching`]), confirm what looks missing in Stripe with a direct read,
//! and store a report with its findings and counts (also recorded as the
//! `tally.payments.reconciliation_findings` gauge, so an alert can fire).
//!
//! `RunReconciliation` stores the report `pending` and runs it in the
//! background; the periodic scheduler reconciles each finished window of
//! `payments.reconciliation_interval_hours` once (idempotency key
//! `scheduled:<window start>`).

pub mod api;
pub mod matching;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tally_domain::money::{Currency, Money};
use tally_runtime::Shutdown;
use tally_runtime::clock::Ticker;

use crate::core::Core;
use crate::error::PaymentsError;
use crate::ledger;
use crate::metrics;
use crate::stripe::{Page, StripeError};
use matching::{
    Finding, FindingKind, Matching, StripeSide, TallyCharge, TallyInvoice, TallyRefund, TallySide,
};

/// Runs reconciliations.
#[derive(Debug, Clone)]
pub struct Reconciler {
    core: Core,
    interval_hours: u32,
}

/// A window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

impl Reconciler {
    /// A reconciler; `interval_hours` 0 turns the periodic run off.
    pub fn new(core: Core, interval_hours: u32) -> Self {
        Self {
            core,
            interval_hours,
        }
    }

    /// Stores a pending report for `window` (or returns the one stored under
    /// `idempotency_key`); `true` when it is new.
    pub async fn create_report(
        &self,
        idempotency_key: &str,
        window: Window,
        scheduled: bool,
    ) -> Result<(String, bool), PaymentsError> {
        let hash = hex::encode(Sha256::digest(
            format!("{}|{}", window.start.to_rfc3339(), window.end.to_rfc3339()).as_bytes(),
        ));
        let id = self.core.ids.new_id("rec");
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO payments.reconciliation_reports (id, idempotency_key, request_hash, window_start, \
             window_end, state, scheduled, started_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(&id)
        .bind(idempotency_key)
        .bind(&hash)
        .bind(window.start)
        .bind(window.end)
        .bind(scheduled)
        .bind(self.core.clock.now())
        .fetch_optional(&self.core.pool)
        .await?;
        if let Some(id) = inserted {
            return Ok((id, true));
        }
        let (id, stored_hash): (String, String) = sqlx::query_as(
            "SELECT id, request_hash FROM payments.reconciliation_reports WHERE idempotency_key = $1",
        )
        .bind(idempotency_key)
        .fetch_one(&self.core.pool)
        .await?;
        if stored_hash != hash {
            return Err(PaymentsError::IdempotencyConflict(
                idempotency_key.to_owned(),
            ));
        }
        Ok((id, false))
    }

    /// Runs report `report_id` to completion (or failure, recorded on it).
    pub async fn run(&self, report_id: &str) -> Result<(), PaymentsError> {
        let (start, end): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "UPDATE payments.reconciliation_reports SET state = 'running', error = '', finished_at = NULL, \
             started_at = $2 WHERE id = $1 RETURNING window_start, window_end",
        )
        .bind(report_id)
        .bind(self.core.clock.now())
        .fetch_one(&self.core.pool)
        .await?;
        let window = Window { start, end };
        match self.reconcile(window).await {
            Ok(outcome) => self.complete(report_id, &outcome).await,
            Err(error) => {
                tracing::error!(report_id, %error, "reconciliation failed");
                sqlx::query(
                    "UPDATE payments.reconciliation_reports SET state = 'failed', error = $2, finished_at = $3 WHERE id = $1",
                )
                .bind(report_id)
                .bind(error.to_string())
                .bind(self.core.clock.now())
                .execute(&self.core.pool)
                .await?;
                Ok(())
            }
        }
    }

    async fn reconcile(&self, window: Window) -> Result<Matching, PaymentsError> {
        let stripe = self.stripe_side(window).await?;
        let tally = self.tally_side(window, &stripe).await?;
        let mut outcome = matching::reconcile(&tally, &stripe);
        let unseen = std::mem::take(&mut outcome.unseen);
        for invoice in unseen.invoices {
            let remote = match &invoice.stripe_invoice_id {
                Some(id) => read_or_missing(self.core.stripe.get_invoice(id).await)?,
                None => None,
            };
            let findings = remote.map(|remote| matching::compare_invoice(&invoice, &remote));
            confirm(&mut outcome, findings, invoice.missing_in_stripe());
        }
        for charge in unseen.charges {
            let remote = self.core.stripe.get_charge(&charge.stripe_charge_id).await;
            let findings =
                read_or_missing(remote)?.map(|remote| matching::compare_charge(&charge, &remote));
            confirm(&mut outcome, findings, charge.missing_in_stripe());
        }
        for refund in unseen.refunds {
            let remote = self.core.stripe.get_refund(&refund.stripe_refund_id).await;
            let findings =
                read_or_missing(remote)?.map(|remote| matching::compare_refund(&refund, &remote));
            confirm(&mut outcome, findings, refund.missing_in_stripe());
        }
        Ok(outcome)
    }

    async fn stripe_side(&self, window: Window) -> Result<StripeSide, StripeError> {
        let (start, end) = (window.start.timestamp(), window.end.timestamp());
        let stripe = &self.core.stripe;
        Ok(StripeSide {
            invoices: all(
                |after| stripe.list_invoices(start, end, after),
                |item| item.id.clone(),
            )
            .await?,
            charges: all(
                |after| stripe.list_charges(start, end, after),
                |item| item.id.clone(),
            )
            .await?,
            refunds: all(
                |after| stripe.list_refunds(start, end, after),
                |item| item.id.clone(),
            )
            .await?,
            balance_transactions: all(
                |after| stripe.list_balance_transactions(start, end, after),
                |item| item.id.clone(),
            )
            .await?,
        })
    }

    async fn tally_side(
        &self,
        window: Window,
        stripe: &StripeSide,
    ) -> Result<TallySide, PaymentsError> {
        let invoice_ids: Vec<&str> = stripe
            .invoices
            .iter()
            .map(|item| item.id.as_str())
            .collect();
        let charge_ids: Vec<&str> = stripe.charges.iter().map(|item| item.id.as_str()).collect();
        let refund_ids: Vec<&str> = stripe.refunds.iter().map(|item| item.id.as_str()).collect();
        let sources: Vec<&str> = stripe
            .balance_transactions
            .iter()
            .filter_map(|item| item.source.as_deref())
            .collect();
        let mut connection = self.core.pool.acquire().await?;

        let invoices = sqlx::query(
            "SELECT invoice_id, stripe_invoice_id, amount_due, currency, status FROM payments.invoices \
             WHERE stripe_invoice_id = ANY($1) OR (created_at >= $2 AND created_at < $3 AND status <> 'nothing_due')",
        )
        .bind(&invoice_ids)
        .bind(window.start)
        .bind(window.end)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| {
            Ok(TallyInvoice {
                id: row.try_get("invoice_id")?,
                stripe_invoice_id: row.try_get("stripe_invoice_id")?,
                amount_due: money(row.try_get("amount_due")?, row.try_get("currency")?)?,
                status: row.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, PaymentsError>>()?;

        let mut charges = sqlx::query(
            "SELECT id, stripe_charge_id, amount, amount_refunded, currency, status FROM payments.payments \
             WHERE stripe_charge_id IS NOT NULL AND (stripe_charge_id = ANY($1) OR stripe_charge_id = ANY($2) \
             OR id IN (SELECT payment_id FROM payments.payment_attempts WHERE succeeded AND attempted_at >= $3 AND attempted_at < $4))",
        )
        .bind(&charge_ids)
        .bind(&sources)
        .bind(window.start)
        .bind(window.end)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| {
            let currency: String = row.try_get("currency")?;
            Ok(TallyCharge {
                payment_id: row.try_get("id")?,
                stripe_charge_id: row.try_get("stripe_charge_id")?,
                amount: money(row.try_get("amount")?, currency.clone())?,
                amount_refunded: money(row.try_get("amount_refunded")?, currency)?,
                status: row.try_get("status")?,
                in_ledger: false,
            })
        })
        .collect::<Result<Vec<_>, PaymentsError>>()?;
        let failed = sqlx::query(
            "SELECT a.payment_id, a.stripe_charge_id, p.amount, p.currency FROM payments.payment_attempts a \
             JOIN payments.payments p ON p.id = a.payment_id WHERE NOT a.succeeded AND a.stripe_charge_id = ANY($1)",
        )
        .bind(&charge_ids)
        .fetch_all(&mut *connection)
        .await?;
        for row in &failed {
            let amount = money(row.try_get("amount")?, row.try_get("currency")?)?;
            charges.push(TallyCharge {
                payment_id: row.try_get("payment_id")?,
                stripe_charge_id: row.try_get("stripe_charge_id")?,
                amount,
                amount_refunded: Money::zero(amount.currency()),
                status: "failed".into(),
                in_ledger: false,
            });
        }

        let mut refunds = sqlx::query(
            "SELECT id, stripe_refund_id, amount, currency, status FROM payments.refunds \
             WHERE stripe_refund_id IS NOT NULL AND (stripe_refund_id = ANY($1) OR stripe_refund_id = ANY($2) \
             OR (created_at >= $3 AND created_at < $4))",
        )
        .bind(&refund_ids)
        .bind(&sources)
        .bind(window.start)
        .bind(window.end)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| {
            Ok(TallyRefund {
                id: row.try_get("id")?,
                stripe_refund_id: row.try_get("stripe_refund_id")?,
                amount: money(row.try_get("amount")?, row.try_get("currency")?)?,
                status: row.try_get("status")?,
                in_ledger: false,
            })
        })
        .collect::<Result<Vec<_>, PaymentsError>>()?;

        // Which of them the ledger records.
        let mut facts: Vec<String> = charges
            .iter()
            .map(|charge| {
                ledger::transaction_id(&format!("payment:{}:collected", charge.payment_id))
                    .to_string()
            })
            .collect();
        facts.extend(refunds.iter().map(|refund| {
            ledger::transaction_id(&format!("refund:{}:succeeded", refund.id)).to_string()
        }));
        let posted: Vec<String> =
            sqlx::query_scalar("SELECT id FROM payments.ledger_transactions WHERE id = ANY($1)")
                .bind(&facts)
                .fetch_all(&mut *connection)
                .await?;
        for charge in &mut charges {
            let id = ledger::transaction_id(&format!("payment:{}:collected", charge.payment_id));
            charge.in_ledger = posted.iter().any(|posted| posted == id.as_str());
        }
        for refund in &mut refunds {
            let id = ledger::transaction_id(&format!("refund:{}:succeeded", refund.id));
            refund.in_ledger = posted.iter().any(|posted| posted == id.as_str());
        }
        Ok(TallySide {
            invoices,
            charges,
            refunds,
        })
    }

    async fn complete(&self, report_id: &str, outcome: &Matching) -> Result<(), PaymentsError> {
        let count = |kind: FindingKind| {
            let found = outcome
                .findings
                .iter()
                .filter(|finding| finding.kind == kind)
                .count();
            i64::try_from(found).unwrap_or(i64::MAX)
        };
        let mut transaction = self.core.pool.begin().await?;
        for (position, finding) in outcome.findings.iter().enumerate() {
            insert_finding(&mut transaction, &self.core, report_id, position, finding).await?;
        }
        sqlx::query(
            "UPDATE payments.reconciliation_reports SET state = 'completed', matched = $2, missing_in_tally = $3, \
             missing_in_stripe = $4, amount_mismatch = $5, status_mismatch = $6, finished_at = $7 WHERE id = $1",
        )
        .bind(report_id)
        .bind(i64::try_from(outcome.matched).unwrap_or(i64::MAX))
        .bind(count(FindingKind::MissingInTally))
        .bind(count(FindingKind::MissingInStripe))
        .bind(count(FindingKind::AmountMismatch))
        .bind(count(FindingKind::StatusMismatch))
        .bind(self.core.clock.now())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        for kind in [
            FindingKind::MissingInTally,
            FindingKind::MissingInStripe,
            FindingKind::AmountMismatch,
            FindingKind::StatusMismatch,
        ] {
            metrics::reconciliation(kind.as_str(), u64::try_from(count(kind)).unwrap_or(0));
        }
        tracing::info!(
            report_id,
            matched = outcome.matched,
            findings = outcome.findings.len(),
            "reconciliation completed"
        );
        Ok(())
    }

    /// Reconciles the latest finished window of the periodic schedule, once
    /// (again after a failed run).
    pub async fn run_scheduled(&self) -> Result<Option<String>, PaymentsError> {
        if self.interval_hours == 0 {
            return Ok(None);
        }
        let interval = i64::from(self.interval_hours) * 3600;
        let now = self.core.clock.now().timestamp();
        let end = now - now.rem_euclid(interval);
        let (Some(start), Some(end)) = (
            Utc.timestamp_opt(end - interval, 0).single(),
            Utc.timestamp_opt(end, 0).single(),
        ) else {
            return Ok(None);
        };
        let key = format!("scheduled:{}", start.to_rfc3339());
        let (report_id, created) = self
            .create_report(&key, Window { start, end }, true)
            .await?;
        if !created {
            // A window is reconciled once, unless that run failed (Stripe
            // unreachable, …): then it is tried again at the next tick.
            let state: String = sqlx::query_scalar(
                "SELECT state FROM payments.reconciliation_reports WHERE id = $1",
            )
            .bind(&report_id)
            .fetch_one(&self.core.pool)
            .await?;
            if state != "failed" {
                return Ok(None);
            }
        }
        self.run(&report_id).await?;
        Ok(Some(report_id))
    }

    /// Runs the periodic schedule until `shutdown`.
    pub async fn run_periodically(self, poll_interval: Duration, shutdown: Shutdown) {
        if self.interval_hours == 0 {
            return;
        }
        let mut ticker = Ticker::new(&*self.core.clock, poll_interval);
        while !shutdown.is_triggered() {
            if let Err(error) = self.run_scheduled().await {
                tracing::warn!(%error, "scheduled reconciliation failed; retrying at the next tick");
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = ticker.tick() => {}
            }
        }
    }
}

/// Records the comparison with the object read directly from Stripe, or
/// `missing` when Stripe does not have it.
fn confirm(outcome: &mut Matching, findings: Option<Vec<Finding>>, missing: Finding) {
    record(outcome, findings.unwrap_or_else(|| vec![missing]));
}

fn record(outcome: &mut Matching, findings: Vec<Finding>) {
    if findings.is_empty() {
        outcome.matched += 1;
    } else {
        outcome.findings.extend(findings);
    }
}

/// `None` when Stripe says the object does not exist.
fn read_or_missing<T>(read: Result<T, StripeError>) -> Result<Option<T>, StripeError> {
    match read {
        Ok(object) => Ok(Some(object)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

fn money(amount: Decimal, currency: String) -> Result<Money, PaymentsError> {
    Ok(Money::new(amount, Currency::from_code(&currency)?))
}

async fn insert_finding(
    connection: &mut sqlx::PgConnection,
    core: &Core,
    report_id: &str,
    position: usize,
    finding: &Finding,
) -> Result<(), sqlx::Error> {
    let currency = |amount: &Option<Money>| {
        amount
            .map(|amount| amount.currency().code().to_owned())
            .unwrap_or_default()
    };
    sqlx::query(
        "INSERT INTO payments.reconciliation_findings (id, report_id, position, kind, object, tally_id, stripe_id, \
         tally_amount, tally_currency, stripe_amount, stripe_currency, tally_status, stripe_status, description) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(core.ids.new_id("rcf"))
    .bind(report_id)
    .bind(i32::try_from(position).unwrap_or(i32::MAX))
    .bind(finding.kind.as_str())
    .bind(finding.object.as_str())
    .bind(&finding.tally_id)
    .bind(&finding.stripe_id)
    .bind(finding.tally_amount.map(|amount| amount.amount()))
    .bind(currency(&finding.tally_amount))
    .bind(finding.stripe_amount.map(|amount| amount.amount()))
    .bind(currency(&finding.stripe_amount))
    .bind(&finding.tally_status)
    .bind(&finding.stripe_status)
    .bind(&finding.description)
    .execute(connection)
    .await?;
    Ok(())
}

/// Every page of a list: `fetch` answers the page after the given id.
async fn all<T, F, Fut>(fetch: F, id: impl Fn(&T) -> String) -> Result<Vec<T>, StripeError>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, StripeError>>,
{
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let Page {
            items: page,
            has_more,
        } = fetch(after.take()).await?;
        after = page.last().map(&id);
        items.extend(page);
        if !has_more || after.is_none() {
            return Ok(items);
        }
    }
}
