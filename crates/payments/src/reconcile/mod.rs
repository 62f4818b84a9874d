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
mod store;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tally_domain::ids::{ReconciliationFindingId, ReconciliationReportId};
use tally_domain::ledger::Fact;
use tally_domain::money::{Currency, Money};
use tally_runtime::Shutdown;
use tally_runtime::clock::Ticker;
use tally_runtime::idempotency::{Fingerprint, fingerprint};

use crate::core::Core;
use crate::error::PaymentsError;
use crate::ledger;
use crate::metrics;
use crate::stripe::{Page, StripeError};
use matching::{
    Finding, FindingKind, Matching, StripeSide, TallyCharge, TallyInvoice, TallyRefund, TallySide,
};
use store::{KeyedReport, NewFinding, NewReport, ReportCounts};

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
        let hash = window_fingerprint(&window);
        let id = String::from(self.core.ids.mint::<ReconciliationReportId>());
        let report = NewReport {
            id: &id,
            idempotency_key,
            request_hash: &hash.to_stored(),
            window_start: window.start,
            window_end: window.end,
            scheduled,
            started_at: self.core.clock.now(),
        };
        if let Some(id) = store::insert_report(&self.core.pool, report).await? {
            return Ok((id, true));
        }
        let KeyedReport {
            id,
            request_hash: stored_hash,
        } = store::report_by_key(&self.core.pool, idempotency_key).await?;
        if !hash.matches_stored(&stored_hash, || legacy_window_hash(&window)) {
            return Err(PaymentsError::IdempotencyConflict(
                idempotency_key.to_owned(),
            ));
        }
        Ok((id, false))
    }

    /// Runs report `report_id` to completion (or failure, recorded on it).
    pub async fn run(&self, report_id: &str) -> Result<(), PaymentsError> {
        let (start, end) =
            store::start_report(&self.core.pool, report_id, self.core.clock.now()).await?;
        let window = Window { start, end };
        match self.reconcile(window).await {
            Ok(outcome) => self.complete(report_id, &outcome).await,
            Err(error) => {
                tracing::error!(report_id, %error, "reconciliation failed");
                store::fail_report(
                    &self.core.pool,
                    report_id,
                    &error.to_string(),
                    self.core.clock.now(),
                )
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

        let invoices = store::invoices(&mut connection, &invoice_ids, window.start, window.end)
            .await?
            .into_iter()
            .map(|row| {
                Ok(TallyInvoice {
                    id: row.invoice_id,
                    stripe_invoice_id: row.stripe_invoice_id,
                    amount_due: money(row.amount_due, row.currency)?,
                    status: row.status,
                })
            })
            .collect::<Result<Vec<_>, PaymentsError>>()?;

        let mut charges = store::charges(
            &mut connection,
            &charge_ids,
            &sources,
            window.start,
            window.end,
        )
        .await?
        .into_iter()
        .map(|row| {
            Ok(TallyCharge {
                payment_id: row.id,
                stripe_charge_id: row.stripe_charge_id,
                amount: money(row.amount, row.currency.clone())?,
                amount_refunded: money(row.amount_refunded, row.currency)?,
                status: row.status,
                in_ledger: false,
            })
        })
        .collect::<Result<Vec<_>, PaymentsError>>()?;
        let failed = store::failed_attempts(&mut connection, &charge_ids).await?;
        for row in failed {
            let amount = money(row.amount, row.currency)?;
            charges.push(TallyCharge {
                payment_id: row.payment_id,
                stripe_charge_id: row.stripe_charge_id,
                amount,
                amount_refunded: Money::zero(amount.currency()),
                status: "failed".into(),
                in_ledger: false,
            });
        }

        let mut refunds = store::refunds(
            &mut connection,
            &refund_ids,
            &sources,
            window.start,
            window.end,
        )
        .await?
        .into_iter()
        .map(|row| {
            Ok(TallyRefund {
                id: row.id,
                stripe_refund_id: row.stripe_refund_id,
                amount: money(row.amount, row.currency)?,
                status: row.status,
                in_ledger: false,
            })
        })
        .collect::<Result<Vec<_>, PaymentsError>>()?;

        // Which of them the ledger records.
        let collected = |charge: &TallyCharge| Fact::PaymentCollected(charge.payment_id.clone());
        let succeeded = |refund: &TallyRefund| Fact::RefundSucceeded(refund.id.clone());
        let mut facts: Vec<String> = charges
            .iter()
            .map(|charge| ledger::transaction_id(&collected(charge)).to_string())
            .collect();
        facts.extend(
            refunds
                .iter()
                .map(|refund| ledger::transaction_id(&succeeded(refund)).to_string()),
        );
        let posted = store::posted_transaction_ids(&mut connection, &facts).await?;
        for charge in &mut charges {
            let id = ledger::transaction_id(&collected(charge));
            charge.in_ledger = posted.iter().any(|posted| posted == id.as_str());
        }
        for refund in &mut refunds {
            let id = ledger::transaction_id(&succeeded(refund));
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
        let counts = ReportCounts {
            matched: i64::try_from(outcome.matched).unwrap_or(i64::MAX),
            missing_in_tally: count(FindingKind::MissingInTally),
            missing_in_stripe: count(FindingKind::MissingInStripe),
            amount_mismatch: count(FindingKind::AmountMismatch),
            status_mismatch: count(FindingKind::StatusMismatch),
        };
        store::complete_report(&mut transaction, report_id, counts, self.core.clock.now()).await?;
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
            let state = store::report_state(&self.core.pool, &report_id).await?;
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
    let id = String::from(core.ids.mint::<ReconciliationFindingId>());
    let tally_currency = currency(&finding.tally_amount);
    let stripe_currency = currency(&finding.stripe_amount);
    let new = NewFinding {
        id: &id,
        report_id,
        position: i32::try_from(position).unwrap_or(i32::MAX),
        kind: finding.kind.as_str(),
        object: finding.object.as_str(),
        tally_id: &finding.tally_id,
        stripe_id: &finding.stripe_id,
        tally_amount: finding.tally_amount.map(|amount| amount.amount()),
        tally_currency: &tally_currency,
        stripe_amount: finding.stripe_amount.map(|amount| amount.amount()),
        stripe_currency: &stripe_currency,
        tally_status: &finding.tally_status,
        stripe_status: &finding.stripe_status,
        description: &finding.description,
    };
    store::insert_finding(connection, new).await?;
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

/// A report request's fingerprint (the runtime's one framing): its window.
fn window_fingerprint(window: &Window) -> Fingerprint {
    let (start, end) = (window.start.to_rfc3339(), window.end.to_rfc3339());
    fingerprint([start.as_bytes(), end.as_bytes()])
}

/// The hash `payments.reconciliation_reports.request_hash` held before the runtime's
/// fingerprint (64 hex digits, no prefix): SHA-256 of `<start>|<end>`. Only compared
/// with rows written then, never written.
fn legacy_window_hash(window: &Window) -> String {
    hex::encode(Sha256::digest(
        format!("{}|{}", window.start.to_rfc3339(), window.end.to_rfc3339()).as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `payments.reconciliation_reports.request_hash` of reports created before the
    /// runtime's fingerprint holds this exact hash; asking again must still match it.
    #[test]
    fn reports_requested_before_the_upgrade_still_match() {
        let window = Window {
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
        };
        let stored_before = "816f99f3c7010b31dec7be355f21e5bedbd847ea3cb55f07432815d22db2fa6e";
        assert_eq!(legacy_window_hash(&window), stored_before);
        let hash = window_fingerprint(&window);
        assert_eq!(
            hash.to_stored(),
            "v2:8b4caad3cc937917efe64d89fe1662164c30c65a94d1a4f841665f38e4d59f0a"
        );
        assert!(hash.matches_stored(stored_before, || legacy_window_hash(&window)));
        assert!(hash.matches_stored(&hash.to_stored(), || legacy_window_hash(&window)));
    }
}
