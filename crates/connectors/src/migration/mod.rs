//! Moving a customer between an external biller and Tally: the billing
//! system of record (`external → shadow → cutover → rolled_back`), parity
//! reports, and the evidence of a cutover (docs/architecture.md,
//! "Connectors: billing system of record"; docs/migrations.md).
//!
//! The rules it keeps:
//! * every change of state is one transaction with its audit entry
//!   (`billing_system.*`, connectors' chain: actor, reason, before/after),
//!   and invoicing is told the customer's billing mode (by version, through
//!   [`TallyBilling::set_billing_mode`]) before that transaction commits, so
//!   a committed state always has its mode in invoicing (a failed commit
//!   leaves invoicing at most one version ahead, and the same request sent
//!   again sets the same version);
//! * the decisions are pure ([`model`]): cutover only in shadow, at a period
//!   boundary and after N matching shadow periods; rollback only before
//!   Tally's next invoice date;
//! * a parity report compares each amount separately ([`parity`]) and is
//!   stored per customer and period.

pub mod api;
pub mod evidence;
mod invoicing_client;
pub mod model;
pub mod parity;
mod store;
pub mod tally;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tally_audit::{Entry, Origin, Schema};
use tally_runtime::SharedClock;
use tally_runtime::ids::SharedIdGenerator;

use crate::biller::{BillerCustomer, ExternalBiller, InvoiceQuery};
use crate::error::ConnectorsError;
use model::{
    BillingPeriod, BillingSystem, BillingSystemState, CutoverPolicy, ParityReport, Refusal,
};
use tally::{BillingModeChange, TallyBilling};

pub use evidence::Evidence;
pub use invoicing_client::InvoicingClient;

/// What an operator asks: whose state to change, why, and whether only to
/// say what would happen.
#[derive(Debug, Clone)]
pub struct Change {
    /// `cus_…`.
    pub customer_id: String,
    /// Why (kept in the audit entry).
    pub reason: String,
    /// Who.
    pub origin: Origin,
    /// Decide and answer, change nothing.
    pub dry_run: bool,
}

/// What a change did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The record before.
    pub before: Option<BillingSystem>,
    /// The record after.
    pub after: BillingSystem,
    /// Nothing was written.
    pub dry_run: bool,
    /// The evidence of a cutover (JSON and CSV).
    pub evidence: Option<Evidence>,
}

/// A customer's migration as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The record (none: never enrolled; the external biller bills).
    pub system: Option<BillingSystem>,
    /// Its parity reports, newest period first.
    pub reports: Vec<ParityReport>,
    /// Its current billing period in Tally.
    pub period: Option<BillingPeriod>,
}

/// Migrations of customers between an external biller and Tally.
#[derive(Clone)]
pub struct Migrations {
    pool: PgPool,
    clock: SharedClock,
    ids: SharedIdGenerator,
    biller: Arc<dyn ExternalBiller>,
    tally: Arc<dyn TallyBilling>,
    policy: CutoverPolicy,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Migrations")
            .field("biller", &self.biller.name())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Migrations {
    /// Migrations between `biller` and Tally's invoicing (`tally`).
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        ids: SharedIdGenerator,
        biller: Arc<dyn ExternalBiller>,
        tally: Arc<dyn TallyBilling>,
        policy: CutoverPolicy,
    ) -> Self {
        Self {
            pool,
            clock,
            ids,
            biller,
            tally,
            policy,
        }
    }

    /// The customer's record, reports and current period.
    pub async fn status(&self, customer_id: &str) -> Result<Status, ConnectorsError> {
        let system = {
            let mut connection = self.pool.acquire().await?;
            store::load(&mut connection, customer_id, false).await?
        };
        Ok(Status {
            system,
            reports: store::reports(&self.pool, customer_id).await?,
            period: self.period(customer_id).await?,
        })
    }

    /// `external` (or `rolled_back`) → `shadow`: Tally computes the
    /// customer's invoices and keeps them as drafts. A customer never
    /// enrolled is enrolled as `external` first (its own audit entry).
    pub async fn start_shadow(&self, change: &Change) -> Result<Changed, ConnectorsError> {
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let before = store::load(&mut transaction, &change.customer_id, true).await?;
        model::decide_shadow(before.as_ref().map(|system| system.state))?;
        let current = match &before {
            Some(system) => system.clone(),
            None => BillingSystem {
                customer_id: change.customer_id.clone(),
                biller: self.biller.name().to_owned(),
                state: BillingSystemState::External,
                cutover_at: None,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        };
        let after = BillingSystem {
            state: BillingSystemState::Shadow,
            cutover_at: None,
            version: current.version + 1,
            updated_at: now,
            ..current.clone()
        };
        if change.dry_run {
            return Ok(Changed {
                before,
                after,
                dry_run: true,
                evidence: None,
            });
        }
        if before.is_none() {
            self.audit(
                &mut transaction,
                change,
                "billing_system.enrolled",
                None,
                &current,
            )
            .await?;
        }
        self.transition(
            transaction,
            change,
            "billing_system.shadow_started",
            Some(&current),
            &after,
        )
        .await?;
        Ok(Changed {
            before,
            after,
            dry_run: false,
            evidence: None,
        })
    }

    /// Compares Tally's invoice for the period ending at `period_end`
    /// (default: the start of the current period, i.e. the last period
    /// billed) with the biller's invoices dated that day, and stores the
    /// report (unless `dry_run`).
    pub async fn compare(
        &self,
        customer_id: &str,
        period_end: Option<DateTime<Utc>>,
        dry_run: bool,
    ) -> Result<ParityReport, ConnectorsError> {
        let now = self.clock.now();
        let end = match period_end {
            Some(end) => end,
            None => self
                .period(customer_id)
                .await?
                .map(|period| period.start)
                .ok_or_else(|| {
                    ConnectorsError::NotFound(format!(
                        "customer {customer_id} has no subscription billing in Tally: give --period-end"
                    ))
                })?,
        };
        let tally_invoice = self
            .tally
            .invoice_ending_at(customer_id, end)
            .await
            .map_err(|error| ConnectorsError::Unavailable(error.to_string()))?
            .ok_or_else(|| {
                ConnectorsError::NotFound(format!(
                    "Tally has no invoice of customer {customer_id} for a period ending {end}"
                ))
            })?;
        let external_customer = store::orb_external_id(&self.pool, customer_id)
            .await?
            .ok_or_else(|| {
                ConnectorsError::NotFound(format!(
                    "customer {customer_id} is not mapped to an external customer (tally connectors orb map)"
                ))
            })?;
        let external = self
            .biller
            .list_invoices(&InvoiceQuery {
                customer: BillerCustomer::ExternalId(external_customer),
                from: end,
                to: end + chrono::Duration::days(1),
            })
            .await
            .map_err(|error| ConnectorsError::Unavailable(error.to_string()))?;
        let prices = store::orb_prices(&self.pool).await?;
        let comparison = parity::compare(Some(&tally_invoice), &external, &prices);
        let live: Vec<_> = external
            .iter()
            .filter(|invoice| invoice.status != "void")
            .collect();
        let report = ParityReport {
            customer_id: customer_id.to_owned(),
            period: BillingPeriod {
                start: tally_invoice.period_start,
                end,
            },
            biller: self.biller.name().to_owned(),
            tally_invoice_id: tally_invoice.id.clone(),
            external_invoice_id: match live.as_slice() {
                [one] => one.id.clone(),
                _ => String::new(),
            },
            currency: tally_invoice.currency.clone(),
            matched: comparison.matched,
            lines_not_compared: comparison.lines_not_compared,
            findings: comparison.findings,
            compared_at: now,
        };
        if !dry_run {
            let mut transaction = self.pool.begin().await?;
            store::save_report(&mut transaction, &report).await?;
            transaction.commit().await?;
        }
        Ok(report)
    }

    /// `shadow` → `cutover` at the current period's start, when the last N
    /// shadow periods matched; refused with the reason otherwise. Answers
    /// the evidence bundle.
    pub async fn cutover(&self, change: &Change) -> Result<Changed, ConnectorsError> {
        let now = self.clock.now();
        let period = self.period(&change.customer_id).await?;
        let mut transaction = self.pool.begin().await?;
        let before = self.enrolled(&mut transaction, &change.customer_id).await?;
        let outcomes = store::outcomes(&mut transaction, &change.customer_id).await?;
        let boundary = model::decide_cutover(before.state, now, period, &outcomes, self.policy)?;
        let after = BillingSystem {
            state: BillingSystemState::Cutover,
            cutover_at: Some(boundary),
            version: before.version + 1,
            updated_at: now,
            ..before.clone()
        };
        let reports: Vec<ParityReport> = store::reports(&self.pool, &change.customer_id)
            .await?
            .into_iter()
            .filter(|report| report.period.end <= boundary)
            .take(self.policy.matching_periods as usize)
            .collect();
        let evidence = Evidence::of(&after, &before, &reports, change, now, self.policy);
        if change.dry_run {
            return Ok(Changed {
                before: Some(before),
                after,
                dry_run: true,
                evidence: Some(evidence),
            });
        }
        self.transition(
            transaction,
            change,
            "billing_system.cut_over",
            Some(&before),
            &after,
        )
        .await?;
        Ok(Changed {
            before: Some(before),
            after,
            dry_run: false,
            evidence: Some(evidence),
        })
    }

    /// `shadow` or `cutover` → `rolled_back`: the external biller bills
    /// again; invoicing holds every draft of the customer (the shadow drafts
    /// are never finalized). From cutover only before Tally's next invoice
    /// date.
    pub async fn rollback(&self, change: &Change) -> Result<Changed, ConnectorsError> {
        let now = self.clock.now();
        let period = self.period(&change.customer_id).await?;
        let mut transaction = self.pool.begin().await?;
        let before = self.enrolled(&mut transaction, &change.customer_id).await?;
        model::decide_rollback(&before, now, period)?;
        let after = BillingSystem {
            state: BillingSystemState::RolledBack,
            cutover_at: None,
            version: before.version + 1,
            updated_at: now,
            ..before.clone()
        };
        if change.dry_run {
            return Ok(Changed {
                before: Some(before),
                after,
                dry_run: true,
                evidence: None,
            });
        }
        self.transition(
            transaction,
            change,
            "billing_system.rolled_back",
            Some(&before),
            &after,
        )
        .await?;
        Ok(Changed {
            before: Some(before),
            after,
            dry_run: false,
            evidence: None,
        })
    }

    /// Maps an Orb price to the Tally charge key it bills, so parity
    /// compares its lines one by one.
    pub async fn map_orb_price(
        &self,
        orb_price_id: &str,
        charge_key: &str,
    ) -> Result<(), ConnectorsError> {
        if orb_price_id.is_empty() || charge_key.is_empty() {
            return Err(ConnectorsError::Refused(
                "an Orb price id and a Tally charge key are both required".to_owned(),
            ));
        }
        store::map_orb_price(&self.pool, orb_price_id, charge_key, self.clock.now()).await
    }

    async fn period(&self, customer_id: &str) -> Result<Option<BillingPeriod>, ConnectorsError> {
        self.tally
            .current_period(customer_id, self.clock.now())
            .await
            .map_err(|error| ConnectorsError::Unavailable(error.to_string()))
    }

    async fn enrolled(
        &self,
        connection: &mut PgConnection,
        customer_id: &str,
    ) -> Result<BillingSystem, ConnectorsError> {
        store::load(connection, customer_id, true)
            .await?
            .ok_or_else(|| {
                ConnectorsError::NotFound(format!(
                    "customer {customer_id} is not enrolled in a migration (tally migrate shadow)"
                ))
            })
    }

    /// Writes `after` with its audit entry, tells invoicing the mode, then
    /// commits.
    async fn transition(
        &self,
        mut transaction: sqlx::Transaction<'_, sqlx::Postgres>,
        change: &Change,
        action: &str,
        before: Option<&BillingSystem>,
        after: &BillingSystem,
    ) -> Result<(), ConnectorsError> {
        store::save(&mut transaction, after).await?;
        self.audit(&mut transaction, change, action, before, after)
            .await?;
        self.tally
            .set_billing_mode(&BillingModeChange {
                customer_id: after.customer_id.clone(),
                tally_bills_after: if after.state.tally_bills() {
                    after.cutover_at
                } else {
                    None
                },
                version: after.version,
            })
            .await
            .map_err(|error| ConnectorsError::Unavailable(error.to_string()))?;
        transaction.commit().await?;
        tracing::info!(customer_id = %after.customer_id, action, version = after.version,
            state = after.state.as_str(), "billing system of record changed");
        Ok(())
    }

    async fn audit(
        &self,
        connection: &mut PgConnection,
        change: &Change,
        action: &str,
        before: Option<&BillingSystem>,
        after: &BillingSystem,
    ) -> Result<(), ConnectorsError> {
        let mut entry = Entry::minted(
            &*self.ids,
            after.updated_at,
            action,
            ("customer", &after.customer_id),
            &change.origin,
        )
        .reason(change.reason.clone())
        .after(state_json(after));
        if let Some(before) = before {
            entry = entry.before(state_json(before));
        }
        tally_audit::record(connection, Schema::Connectors, entry).await?;
        Ok(())
    }
}

/// What the audit log keeps of a record.
pub(crate) fn state_json(system: &BillingSystem) -> Value {
    json!({
        "customer_id": system.customer_id,
        "biller": system.biller,
        "state": system.state.as_str(),
        "cutover_at": system.cutover_at.map(|at| at.to_rfc3339()),
        "version": system.version,
    })
}

impl From<Refusal> for ConnectorsError {
    fn from(refusal: Refusal) -> Self {
        ConnectorsError::Refused(refusal.to_string())
    }
}
