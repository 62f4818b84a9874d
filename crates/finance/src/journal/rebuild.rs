//! Rebuilding the books from the facts finance kept (`finance.facts`): the
//! journal, the invoices' schedules and recognition are emptied and booked
//! again, fact by fact in the order they were applied, through the same
//! `books::book` as the consumers. Transaction ids and bodies derive from
//! the facts, so the rebuilt journal is the same, transaction for
//! transaction, as long as the posting rules did not change — and when they
//! did, the rebuild is how the books adopt them.
//!
//! Timing is replayed too, so effective dates come out the same: the closes
//! are re-applied at the instants they were made, and before each fact or
//! close the days that had ended by then are recognised (the recognition
//! job keeps up with the clock; if it had fallen behind before a close, the
//! rebuild recognises those days before the close, where they belong).
//!
//! It runs in one database transaction holding the close lock: consumers
//! and the recognition job wait for it, and a failure leaves the books as
//! they were.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tally_audit::Origin;
use tally_domain::finance::RecognitionPolicy;
use tally_runtime::ids::IdGenerator;

use crate::books::{self, Booked};
use crate::error::FinanceServiceError;
use crate::recognition;

use super::audit::{self, BooksSize};
use super::store;
use super::store::closes::{self, Close};
use super::store::facts::{self, StoredFact};

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Facts booked again.
    pub facts: usize,
    /// Journal transactions after the rebuild.
    pub transactions: i64,
}

/// Something that happened to the books, in replay order.
enum Step {
    Fact(Booked, DateTime<Utc>),
    Close(Close),
}

impl Step {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Step::Fact(_, at) => *at,
            Step::Close(close) => close.closed_at,
        }
    }
}

/// Rebuilds the books from `finance.facts`, recognising what had ended by
/// `now`, on behalf of `origin` (audited: `ledger.rebuilt`).
pub async fn rebuild(
    pool: &PgPool,
    policy: RecognitionPolicy,
    now: DateTime<Utc>,
    (ids, origin): (&dyn IdGenerator, &Origin),
) -> Result<Rebuilt, FinanceServiceError> {
    let mut transaction = pool.begin().await?;
    closes::lock_closes(&mut transaction).await?;
    let facts = facts::facts_in_applied_order(&mut transaction).await?;
    let made = closes::closes_in_order_made(&mut transaction).await?;
    let made_count = made.len();
    let mut steps = Vec::with_capacity(facts.len() + made.len());
    for StoredFact { fact, applied_at } in facts {
        let fact: Booked = serde_json::from_value(fact).map_err(|error| {
            FinanceServiceError::Internal(format!("a stored fact is unreadable: {error}"))
        })?;
        steps.push(Step::Fact(fact, applied_at));
    }
    steps.extend(made.into_iter().map(Step::Close));
    // Facts keep their order; a close goes before the facts applied after it.
    steps.sort_by_key(|step| (step.at(), matches!(step, Step::Fact(..))));

    let before = BooksSize {
        transactions: store::transaction_count(&mut transaction).await?,
        facts: steps.len() - made_count,
    };
    store::truncate_books(&mut transaction).await?;
    let mut booked = 0;
    for step in &steps {
        recognise_until(&mut transaction, step.at()).await?;
        match step {
            Step::Fact(fact, applied_at) => {
                books::book(&mut transaction, fact, policy, *applied_at).await?;
                booked += 1;
            }
            Step::Close(close) => closes::insert_close(&mut transaction, close).await?,
        }
    }
    recognise_until(&mut transaction, now).await?;
    let transactions = store::transaction_count(&mut transaction).await?;
    let after = BooksSize {
        transactions,
        facts: booked,
    };
    audit::rebuilt(&mut transaction, (ids, origin, now), &before, &after).await?;
    transaction.commit().await?;
    Ok(Rebuilt {
        facts: booked,
        transactions,
    })
}

/// Recognises every day that had ended by `at`, posted at `at`.
async fn recognise_until(
    connection: &mut sqlx::PgConnection,
    at: DateTime<Utc>,
) -> Result<(), FinanceServiceError> {
    while recognition::recognise_batch(connection, at.date_naive(), at).await? > 0 {}
    Ok(())
}
