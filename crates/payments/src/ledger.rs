//! The payments ledger: double-entry transactions built with the domain
//! ledger types (so each balances per currency before it exists), posted
//! append-only to `payments.ledger_*` in the caller's database transaction.
//!
//! The chart of accounts, one set per currency:
//!
//! | account | kind | moves when |
//! |---|---|---|
//! | `acct_receivable<cur>` | asset | an invoice is finalized (debit), paid / voided / written off / credited before payment (credit) |
//! | `acct_invoiced<cur>` | revenue | an invoice is finalized (credit); a void reverses it; a credit note not caused by a refund (debit) |
//! | `acct_stripebalance<cur>` | asset | money is collected (debit), refunded or disputed (credit) |
//! | `acct_refunds<cur>` | expense | a refund |
//! | `acct_disputes<cur>` | expense | a dispute is opened |
//! | `acct_baddebt<cur>` | expense | dunning gives up |
//! | `acct_customercredit<cur>` | liability | a credit note on a paid invoice, owed to the customer outside Stripe (credit) |
//!
//! A transaction id is `txn_` + the first 40 hex digits of SHA-256 of the key of
//! the [`Fact`] it records (`invoice:<inv>:finalized`, …): posting the same fact
//! twice is a replay ([`Posted::AlreadyRecorded`]), never a second entry.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tally_domain::ids::{AccountId, TransactionId};
use tally_domain::ledger::{
    Account, AccountKind, Fact, LedgerError, Posted, Side, Transaction, TransactionBuilder,
};
use tally_domain::money::{Currency, Money};

use crate::store::ledger::{self as store, NewEntry};

/// The accounts of the chart above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Book {
    /// Accounts receivable.
    Receivable,
    /// Invoiced revenue.
    Invoiced,
    /// Money held at Stripe.
    StripeBalance,
    /// Refunds given.
    Refunds,
    /// Disputed charges.
    Disputes,
    /// Written-off invoices.
    BadDebt,
    /// Credit owed to customers outside Stripe: credit notes on paid
    /// invoices (held in invoicing's wallet or settled out of band).
    CustomerCredit,
}

impl Book {
    fn parts(self) -> (&'static str, &'static str, AccountKind) {
        match self {
            Book::Receivable => ("receivable", "Accounts receivable", AccountKind::Asset),
            Book::Invoiced => ("invoiced", "Invoiced revenue", AccountKind::Revenue),
            Book::StripeBalance => ("stripebalance", "Stripe balance", AccountKind::Asset),
            Book::Refunds => ("refunds", "Refunds", AccountKind::Expense),
            Book::Disputes => ("disputes", "Disputes", AccountKind::Expense),
            Book::BadDebt => ("baddebt", "Bad debt", AccountKind::Expense),
            Book::CustomerCredit => (
                "customercredit",
                "Credit owed to customers",
                AccountKind::Liability,
            ),
        }
    }

    /// The account of this book in `currency`.
    pub fn account(self, currency: Currency) -> Account {
        let (slug, name, kind) = self.parts();
        let code = currency.code().to_ascii_lowercase();
        Account {
            id: parse_account(&format!("acct_{slug}{code}")),
            name: format!("{name} ({})", currency.code()),
            kind,
            currency,
        }
    }
}

fn parse_account(text: &str) -> AccountId {
    // Letters only: always a valid id.
    AccountId::parse(text).unwrap_or_else(|_| unreachable_id(text))
}

#[expect(
    clippy::panic,
    reason = "account and transaction ids are built from letters and hex digits, which always parse"
)]
fn unreachable_id(text: &str) -> ! {
    panic!("{text} is built from letters and digits only")
}

/// The id of the transaction recording `fact`.
pub fn transaction_id(fact: &Fact) -> TransactionId {
    let key = fact.as_key();
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    TransactionId::parse(&format!("txn_{}", &digest[..40])).unwrap_or_else(|_| unreachable_id(&key))
}

/// A two-entry transaction: `amount` from `credit` to `debit`.
pub fn transfer(
    fact: &Fact,
    effective_at: DateTime<Utc>,
    debit: Book,
    credit: Book,
    amount: Money,
) -> Result<Transaction, LedgerError> {
    let currency = amount.currency();
    TransactionBuilder::new(transaction_id(fact), effective_at, fact.as_key())
        .debit(debit.account(currency).id, amount)
        .credit(credit.account(currency).id, amount)
        .build()
}

/// Why a post failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The ledger refused it (different content under the same id, already reversed, …).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored transaction could not be read back.
    #[error("stored transaction {0} is unreadable: {1}")]
    Corrupt(String, String),
}

/// Posts `transaction` (opening its accounts if needed) inside the caller's
/// transaction.
pub async fn post(
    connection: &mut PgConnection,
    transaction: &Transaction,
    recorded_at: DateTime<Utc>,
) -> Result<Posted, PostError> {
    let body = serde_json::to_value(transaction)
        .map_err(|error| PostError::Corrupt(transaction.id().to_string(), error.to_string()))?;
    let inserted =
        store::insert_transaction(&mut *connection, transaction, &body, recorded_at).await;
    let inserted = match inserted {
        Ok(inserted) => inserted,
        Err(sqlx::Error::Database(error))
            if error
                .constraint()
                .is_some_and(|name| name.contains("reverses")) =>
        {
            let original = transaction.reverses().cloned();
            return Err(LedgerError::AlreadyReversed {
                id: original.unwrap_or_else(|| transaction.id().clone()),
            }
            .into());
        }
        Err(error) => return Err(error.into()),
    };
    if !inserted {
        let stored = store::transaction_body(&mut *connection, transaction.id().as_str())
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let stored: Transaction = serde_json::from_value(stored)
            .map_err(|error| PostError::Corrupt(transaction.id().to_string(), error.to_string()))?;
        return if &stored == transaction {
            Ok(Posted::AlreadyRecorded)
        } else {
            Err(LedgerError::ExistsWithDifferentContent {
                id: transaction.id().clone(),
            }
            .into())
        };
    }
    for (position, entry) in transaction.entries().iter().enumerate() {
        let account = book_account(&entry.account, entry.amount.currency());
        store::open_account(
            &mut *connection,
            account.id.as_str(),
            &account.name,
            kind_name(account.kind),
            account.currency.code(),
        )
        .await?;
        let stored_entry = NewEntry {
            transaction_id: transaction.id().as_str(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
            account_id: entry.account.as_str(),
            side: match entry.side {
                Side::Debit => "debit",
                Side::Credit => "credit",
            },
            amount: entry.amount.amount(),
            currency: entry.amount.currency().code(),
        };
        store::insert_entry(&mut *connection, stored_entry).await?;
    }
    Ok(Posted::Recorded)
}

/// Reads a posted transaction back (for reversals).
pub async fn find(
    connection: &mut PgConnection,
    id: &TransactionId,
) -> Result<Option<Transaction>, PostError> {
    let stored = store::transaction_body(&mut *connection, id.as_str()).await?;
    stored
        .map(|body| {
            serde_json::from_value(body)
                .map_err(|error| PostError::Corrupt(id.to_string(), error.to_string()))
        })
        .transpose()
}

/// The account of the chart with this id, in `currency`.
fn book_account(id: &AccountId, currency: Currency) -> Account {
    [
        Book::Receivable,
        Book::Invoiced,
        Book::StripeBalance,
        Book::Refunds,
        Book::Disputes,
        Book::BadDebt,
        Book::CustomerCredit,
    ]
    .into_iter()
    .map(|book| book.account(currency))
    .find(|account| &account.id == id)
    .unwrap_or_else(|| unreachable_id(id.as_str()))
}

fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Asset => "asset",
        AccountKind::Liability => "liability",
        AccountKind::Equity => "equity",
        AccountKind::Revenue => "revenue",
        AccountKind::Expense => "expense",
    }
}

/// Balance of `book` in `currency` on its normal side (for tests and reports).
pub async fn balance(
    connection: &mut PgConnection,
    book: Book,
    currency: Currency,
) -> Result<Money, sqlx::Error> {
    let account = book.account(currency);
    let normal = match account.kind.normal_side() {
        Side::Debit => "debit",
        Side::Credit => "credit",
    };
    let total = store::account_total(connection, account.id.as_str(), normal).await?;
    Ok(Money::new(total.unwrap_or_default(), currency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    #[test]
    fn facts_name_stable_ids_and_transfers_balance() {
        let finalized = |invoice: &str| Fact::InvoiceFinalized(invoice.to_owned());
        assert_eq!(
            transaction_id(&finalized("inv_1")),
            transaction_id(&finalized("inv_1"))
        );
        assert_ne!(
            transaction_id(&finalized("inv_1")),
            transaction_id(&finalized("inv_2"))
        );
        // Stored ids never change: the id of a fact as the ledger first wrote it.
        assert_eq!(
            transaction_id(&finalized("inv_1")).as_str(),
            format!(
                "txn_{}",
                &hex::encode(Sha256::digest(b"invoice:inv_1:finalized"))[..40]
            )
        );
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let paid = transfer(
            &Fact::PaymentCollected("pay_1".into()),
            at,
            Book::StripeBalance,
            Book::Receivable,
            Money::new(dec!(12.34), Currency::EUR),
        )
        .unwrap();
        assert_eq!(paid.entries()[0].account.as_str(), "acct_stripebalanceeur");
        assert!(
            transfer(
                &Fact::RefundSucceeded("ref_1".into()),
                at,
                Book::Refunds,
                Book::StripeBalance,
                Money::new(dec!(0.001), Currency::USD)
            )
            .is_err(),
            "unrounded amounts never reach the ledger"
        );
    }
}
