//! Booking one fact: the domain's posting rules applied, the transactions
//! stored, and what finance keeps about invoices (their facts, for voids and
//! schedules). The consumers book facts as they arrive; a rebuild
//! (`journal::rebuild`) books the stored facts again, in the order they
//! were applied, through the same function — so the two cannot disagree.
//!
//! Every booked fact is kept in `finance.facts` (append-only): the books
//! can be rebuilt from it without the bus, whose retention is days.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tally_domain::finance::facts::{
    CreditNoteIssued, FinalizedLineKind, InvoiceFinalized, InvoiceVoided, PaymentSucceeded,
    RefundSucceeded,
};
use tally_domain::finance::{LedgerAccount, RecognitionPolicy, posting};
use tally_domain::ledger::{Account, Transaction};
use tally_domain::money::Money;

use crate::error::FinanceServiceError;
use crate::journal::store::facts::{self, NewFact, NewInvoice};
use crate::journal::store::schedules::{self, ScheduleDay};
use crate::journal::store::{self, Source};
use crate::recognition;

/// A fact the ledger books, as stored in `finance.facts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Booked {
    /// An invoice was finalized.
    InvoiceFinalized(InvoiceFinalized),
    /// A finalized invoice was voided.
    InvoiceVoided(InvoiceVoided),
    /// A credit note was issued.
    CreditNoteIssued(CreditNoteIssued),
    /// A payment succeeded.
    PaymentSucceeded(PaymentSucceeded),
    /// A refund succeeded.
    RefundSucceeded(RefundSucceeded),
}

impl Booked {
    /// The kind of fact, as `finance.facts.kind` stores it (the JSON tag).
    pub fn kind(&self) -> &'static str {
        match self {
            Booked::InvoiceFinalized(_) => "invoice_finalized",
            Booked::InvoiceVoided(_) => "invoice_voided",
            Booked::CreditNoteIssued(_) => "credit_note_issued",
            Booked::PaymentSucceeded(_) => "payment_succeeded",
            Booked::RefundSucceeded(_) => "refund_succeeded",
        }
    }

    /// The id of the fact's object (`inv_…`, `cn_…`, `pay_…`, `ref_…`).
    pub fn source_id(&self) -> &str {
        match self {
            Booked::InvoiceFinalized(fact) => fact.invoice.as_str(),
            Booked::InvoiceVoided(fact) => fact.invoice.as_str(),
            Booked::CreditNoteIssued(fact) => fact.credit_note.as_str(),
            Booked::PaymentSucceeded(fact) => fact.payment_id.as_str(),
            Booked::RefundSucceeded(fact) => fact.refund_id.as_str(),
        }
    }
}

/// Keeps `fact` in `finance.facts` (once per kind and object: a replayed
/// fact is not kept again), then books it, in the caller's transaction.
pub async fn record_and_book(
    connection: &mut PgConnection,
    fact: &Booked,
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    record_and_book_all(connection, std::slice::from_ref(fact), policy, now).await
}

/// [`record_and_book`] for several facts, in the order given, with what a
/// fact-by-fact booking stores, to the row — set-based: the facts between
/// two voids are stored in one statement per table (facts, accounts,
/// invoices, transactions, entries, schedule days) whatever their number. A
/// void reads what was posted for its invoice, so the facts before it are
/// stored first and the void is booked on its own.
pub async fn record_and_book_all(
    connection: &mut PgConnection,
    facts: &[Booked],
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    let mut pending = Writes::default();
    for fact in facts {
        pending.keep(fact)?;
        match fact {
            Booked::InvoiceVoided(void) => {
                std::mem::take(&mut pending).store(connection, now).await?;
                voided(connection, void, now).await?;
            }
            _ => pending.book(fact, policy)?,
        }
    }
    pending.store(connection, now).await
}

/// Books `fact` in the caller's transaction (see the module docs).
pub async fn book(
    connection: &mut PgConnection,
    fact: &Booked,
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    if let Booked::InvoiceVoided(void) = fact {
        return voided(connection, void, now).await;
    }
    let mut writes = Writes::default();
    writes.book(fact, policy)?;
    writes.store(connection, now).await
}

/// What booking facts (other than voids) writes, gathered so that any
/// number of facts is stored in one statement per table, in their order.
#[derive(Default)]
struct Writes<'f> {
    /// Facts to keep in `finance.facts`.
    facts: Vec<NewFact<'f>>,
    /// The accounts to open, by id.
    accounts: BTreeMap<String, (LedgerAccount, Account)>,
    /// Finalized invoices to keep, with their fact as JSON.
    invoices: Vec<(&'f InvoiceFinalized, serde_json::Value)>,
    /// The transactions built, in posting order.
    transactions: Vec<(Transaction, Source<'f>)>,
    /// The deferred lines' schedule days.
    schedule_days: Vec<ScheduleDay<'f>>,
}

impl<'f> Writes<'f> {
    /// Keeps `fact` in `finance.facts` with the others.
    fn keep(&mut self, fact: &'f Booked) -> Result<(), FinanceServiceError> {
        let body = serde_json::to_value(fact).map_err(|error| {
            FinanceServiceError::Internal(format!(
                "serialising the fact of {}: {error}",
                fact.source_id()
            ))
        })?;
        self.facts.push((fact.kind(), fact.source_id(), body));
        Ok(())
    }

    /// Applies the posting rules to `fact` (not a void: see [`voided`]).
    fn book(
        &mut self,
        fact: &'f Booked,
        policy: RecognitionPolicy,
    ) -> Result<(), FinanceServiceError> {
        let (kind, currency, posted) = match fact {
            Booked::InvoiceFinalized(fact) => return self.finalized(fact, policy),
            Booked::InvoiceVoided(fact) => {
                return Err(FinanceServiceError::Internal(format!(
                    "the void of {} is booked on its own",
                    fact.invoice
                )));
            }
            Booked::CreditNoteIssued(fact) => (
                "credit_note",
                fact.currency,
                posting::post_credit_note(fact)?,
            ),
            Booked::PaymentSucceeded(fact) => (
                "payment",
                fact.amount.currency(),
                posting::post_payment(fact)?,
            ),
            Booked::RefundSucceeded(fact) => (
                "refund",
                fact.amount.currency(),
                posting::post_refund(fact)?,
            ),
        };
        self.open(store::chart(currency, [])?);
        let source = Source {
            kind,
            id: fact.source_id(),
        };
        self.transactions
            .extend(posted.into_iter().map(|transaction| (transaction, source)));
        Ok(())
    }

    /// A finalized invoice: its lines, its usage true-ups and the schedules
    /// of its deferred lines. Usage is recognised when invoiced for now: no
    /// daily rated-usage facts reach finance yet, so each usage line's
    /// true-up (invoiced − recognised daily, with nothing recognised daily)
    /// moves the whole line from unbilled receivables to usage revenue.
    fn finalized(
        &mut self,
        fact: &'f InvoiceFinalized,
        policy: RecognitionPolicy,
    ) -> Result<(), FinanceServiceError> {
        let meters = fact.lines.iter().filter_map(|line| match &line.kind {
            FinalizedLineKind::Usage { meter, .. } => Some(meter),
            _ => None,
        });
        self.open(store::chart(fact.currency, meters)?);
        let body = serde_json::to_value(fact).map_err(|error| {
            FinanceServiceError::Internal(format!("serialising {}: {error}", fact.invoice))
        })?;
        self.invoices.push((fact, body));
        let mut posted = posting::post_invoice_finalized(fact)?;
        for line in &fact.lines {
            if matches!(line.kind, FinalizedLineKind::Usage { .. }) {
                posted.extend(posting::post_usage_true_up(
                    fact,
                    &line.line_id,
                    Money::zero(fact.currency),
                )?);
            }
        }
        let source = Source {
            kind: "invoice",
            id: fact.invoice.as_str(),
        };
        self.transactions
            .extend(posted.into_iter().map(|transaction| (transaction, source)));
        self.schedule_days
            .extend(recognition::schedule_days(fact, policy)?);
        Ok(())
    }

    fn open(&mut self, accounts: Vec<(LedgerAccount, Account)>) {
        for (ledger_account, account) in accounts {
            self.accounts
                .entry(account.id.as_str().to_owned())
                .or_insert((ledger_account, account));
        }
    }

    /// Stores everything gathered, one statement per table, in the caller's
    /// transaction.
    async fn store(
        self,
        connection: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<(), FinanceServiceError> {
        facts::insert_facts(connection, &self.facts, now).await?;
        let accounts: Vec<(LedgerAccount, Account)> = self.accounts.into_values().collect();
        if !accounts.is_empty() {
            store::open_accounts(connection, &accounts).await?;
        }
        let invoices: Vec<NewInvoice<'_>> = self
            .invoices
            .iter()
            .map(|(fact, body)| NewInvoice {
                invoice_id: fact.invoice.as_str(),
                customer_id: fact.customer.as_str(),
                currency: fact.currency.code(),
                finalized_at: fact.finalized_at,
                fact: body,
            })
            .collect();
        facts::insert_invoices(connection, &invoices).await?;
        let sourced: Vec<(&Transaction, Source<'_>)> = self
            .transactions
            .iter()
            .map(|(transaction, source)| (transaction, *source))
            .collect();
        store::post_sourced(connection, &sourced, now).await?;
        schedules::insert_schedule_days(connection, &self.schedule_days).await
    }
}

/// A void: the reversal of everything posted for the invoice, and its
/// remaining schedule days never recognised.
async fn voided(
    connection: &mut PgConnection,
    fact: &InvoiceVoided,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    let posted = store::posted_for(connection, fact.invoice.as_str()).await?;
    let reversals = posting::post_invoice_voided(fact, &posted)?;
    let source = Source {
        kind: "invoice",
        id: fact.invoice.as_str(),
    };
    store::post(connection, &reversals, source, now).await?;
    facts::mark_invoice_voided(connection, fact.invoice.as_str(), fact.voided_at).await
}
