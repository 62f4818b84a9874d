//! Booking one fact: the domain's posting rules applied, the transactions
//! stored, and what finance keeps about invoices (their facts, for voids and
//! schedules). The consumers book facts as they arrive; a rebuild
//! (`journal::rebuild`) books the stored facts again, in the order they
//! were applied, through the same function — so the two cannot disagree.
//!
//! Every booked fact is kept in `finance.facts` (append-only): the books
//! can be rebuilt from it without the bus, whose retention is days.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tally_domain::finance::facts::{
    CreditNoteIssued, FinalizedLineKind, InvoiceFinalized, InvoiceVoided, PaymentSucceeded,
    RefundSucceeded,
};
use tally_domain::finance::{RecognitionPolicy, posting};
use tally_domain::money::Money;

use crate::error::FinanceServiceError;
use crate::journal::store::facts::{self, NewInvoice};
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
    let body = serde_json::to_value(fact).map_err(|error| {
        FinanceServiceError::Internal(format!(
            "serialising the fact of {}: {error}",
            fact.source_id()
        ))
    })?;
    facts::insert_fact(connection, fact.kind(), fact.source_id(), &body, now).await?;
    book(connection, fact, policy, now).await
}

/// Books `fact` in the caller's transaction (see the module docs).
pub async fn book(
    connection: &mut PgConnection,
    fact: &Booked,
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    match fact {
        Booked::InvoiceFinalized(fact) => finalized(connection, fact, policy, now).await,
        Booked::InvoiceVoided(fact) => voided(connection, fact, now).await,
        Booked::CreditNoteIssued(fact) => {
            let posted = posting::post_credit_note(fact)?;
            let source = Source {
                kind: "credit_note",
                id: fact.credit_note.as_str(),
            };
            post_in(connection, fact.currency, &posted, source, now).await
        }
        Booked::PaymentSucceeded(fact) => {
            let posted = posting::post_payment(fact)?;
            let source = Source {
                kind: "payment",
                id: fact.payment_id.as_str(),
            };
            post_in(connection, fact.amount.currency(), &posted, source, now).await
        }
        Booked::RefundSucceeded(fact) => {
            let posted = posting::post_refund(fact)?;
            let source = Source {
                kind: "refund",
                id: fact.refund_id.as_str(),
            };
            post_in(connection, fact.amount.currency(), &posted, source, now).await
        }
    }
}

/// Opens the fixed accounts of `currency` and stores `posted`.
async fn post_in(
    connection: &mut PgConnection,
    currency: tally_domain::money::Currency,
    posted: &[tally_domain::ledger::Transaction],
    source: Source<'_>,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    let accounts = store::chart(currency, [])?;
    store::open_accounts(connection, &accounts).await?;
    store::post(connection, posted, source, now).await?;
    Ok(())
}

/// A finalized invoice: its lines, its usage true-ups and the schedules of
/// its deferred lines. Usage is recognised when invoiced for now: no daily
/// rated-usage facts reach finance yet, so each usage line's true-up
/// (invoiced − recognised daily, with nothing recognised daily) moves the
/// whole line from unbilled receivables to usage revenue.
async fn finalized(
    connection: &mut PgConnection,
    fact: &InvoiceFinalized,
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    let meters = fact.lines.iter().filter_map(|line| match &line.kind {
        FinalizedLineKind::Usage { meter, .. } => Some(meter),
        _ => None,
    });
    let accounts = store::chart(fact.currency, meters)?;
    store::open_accounts(connection, &accounts).await?;
    let body = serde_json::to_value(fact).map_err(|error| {
        FinanceServiceError::Internal(format!("serialising {}: {error}", fact.invoice))
    })?;
    let invoice = NewInvoice {
        invoice_id: fact.invoice.as_str(),
        customer_id: fact.customer.as_str(),
        currency: fact.currency.code(),
        finalized_at: fact.finalized_at,
        fact: &body,
    };
    facts::insert_invoice(connection, invoice).await?;
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
    store::post(connection, &posted, source, now).await?;
    recognition::store_schedules(connection, fact, policy).await
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
