//! Double-entry ledger: transactions that balance per currency before they exist,
//! posted append-only; a correction is a reversing transaction, never an edit.
//! A transaction that records one business fact is keyed by its [`Fact`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TransactionId};
use crate::money::{Currency, Money, MoneyError};

mod fact;

pub use fact::{Fact, FactError};

/// What can go wrong in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A transaction needs at least one debit and one credit.
    #[error("a transaction needs at least two entries")]
    TooFewEntries,
    /// Entry amounts are positive, in whole minor units; the side says which way.
    #[error("entry {index}: amount must be positive and rounded, got {amount}")]
    InvalidEntryAmount {
        /// Entry position.
        index: usize,
        /// The amount.
        amount: Money,
    },
    /// Debits and credits differ in a currency.
    #[error("unbalanced in {currency}: debits {debits}, credits {credits}")]
    Unbalanced {
        /// The currency.
        currency: Currency,
        /// Sum of debits.
        debits: Decimal,
        /// Sum of credits.
        credits: Decimal,
    },
    /// An entry names an account the ledger does not have.
    #[error("unknown account {account}")]
    UnknownAccount {
        /// The account.
        account: AccountId,
    },
    /// An entry's currency differs from its account's.
    #[error("account {account} holds {expected}, entry is in {found}")]
    AccountCurrency {
        /// The account.
        account: AccountId,
        /// The account's currency.
        expected: Currency,
        /// The entry's currency.
        found: Currency,
    },
    /// The id was already posted with different content (a replay must be identical).
    #[error("transaction {id} exists with different content")]
    ExistsWithDifferentContent {
        /// The id.
        id: TransactionId,
    },
    /// No such transaction.
    #[error("unknown transaction {id}")]
    UnknownTransaction {
        /// The id.
        id: TransactionId,
    },
    /// A transaction is reversed at most once.
    #[error("transaction {id} is already reversed")]
    AlreadyReversed {
        /// The id.
        id: TransactionId,
    },
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The kind of an account, which fixes its normal balance side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// What we own or are owed (receivables, cash); debit-normal.
    Asset,
    /// What we owe (prepaid credits, deferred revenue); credit-normal.
    Liability,
    /// Owners' stake; credit-normal.
    Equity,
    /// Earned income; credit-normal.
    Revenue,
    /// Costs (write-offs); debit-normal.
    Expense,
}

impl AccountKind {
    /// The side on which the balance grows.
    pub fn normal_side(self) -> Side {
        match self {
            AccountKind::Asset | AccountKind::Expense => Side::Debit,
            AccountKind::Liability | AccountKind::Equity | AccountKind::Revenue => Side::Credit,
        }
    }
}

/// Debit or credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Left side.
    Debit,
    /// Right side.
    Credit,
}

impl Side {
    fn opposite(self) -> Side {
        match self {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }
}

/// A ledger account in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Display name, e.g. `Accounts receivable — cus_1`.
    pub name: String,
    /// Its kind.
    pub kind: AccountKind,
    /// The currency it holds.
    pub currency: Currency,
}

/// One line of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The account.
    pub account: AccountId,
    /// Debit or credit.
    pub side: Side,
    /// Positive amount in whole minor units.
    pub amount: Money,
}

/// Collects entries; [`build`](TransactionBuilder::build) refuses anything unbalanced.
#[derive(Clone, Debug)]
pub struct TransactionBuilder {
    id: TransactionId,
    effective_at: DateTime<Utc>,
    description: String,
    entries: Vec<Entry>,
    reverses: Option<TransactionId>,
}

impl TransactionBuilder {
    /// Starts a transaction; its id is its idempotency key.
    pub fn new(
        id: TransactionId,
        effective_at: DateTime<Utc>,
        description: impl Into<String>,
    ) -> TransactionBuilder {
        TransactionBuilder {
            id,
            effective_at,
            description: description.into(),
            entries: Vec::new(),
            reverses: None,
        }
    }

    /// Adds a debit.
    pub fn debit(mut self, account: AccountId, amount: Money) -> TransactionBuilder {
        self.entries.push(Entry {
            account,
            side: Side::Debit,
            amount,
        });
        self
    }

    /// Adds a credit.
    pub fn credit(mut self, account: AccountId, amount: Money) -> TransactionBuilder {
        self.entries.push(Entry {
            account,
            side: Side::Credit,
            amount,
        });
        self
    }

    /// The transaction, if every currency's debits equal its credits.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use rust_decimal_macros::dec;
    /// use tally_domain::ids::{AccountId, TransactionId};
    /// use tally_domain::ledger::{LedgerError, TransactionBuilder};
    /// use tally_domain::money::{Currency, Money};
    ///
    /// let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    /// let account = |id: &str| AccountId::parse(id).unwrap();
    /// let usd = |amount| Money::new(amount, Currency::USD);
    /// let unbalanced = TransactionBuilder::new(TransactionId::parse("txn_1").unwrap(), at, "invoice inv_1")
    ///     .debit(account("acct_receivable"), usd(dec!(15.00)))
    ///     .credit(account("acct_revenue"), usd(dec!(14.99)))
    ///     .build();
    /// assert!(matches!(unbalanced, Err(LedgerError::Unbalanced { .. })));
    /// ```
    pub fn build(self) -> Result<Transaction, LedgerError> {
        if self.entries.len() < 2 {
            return Err(LedgerError::TooFewEntries);
        }
        let mut totals: BTreeMap<Currency, (Decimal, Decimal)> = BTreeMap::new();
        for (index, entry) in self.entries.iter().enumerate() {
            if !entry.amount.is_positive() || !entry.amount.is_rounded() {
                return Err(LedgerError::InvalidEntryAmount {
                    index,
                    amount: entry.amount,
                });
            }
            let (debits, credits) = totals.entry(entry.amount.currency()).or_default();
            let total = match entry.side {
                Side::Debit => debits,
                Side::Credit => credits,
            };
            *total = total
                .checked_add(entry.amount.amount())
                .ok_or(MoneyError::Overflow)?;
        }
        if let Some((currency, (debits, credits))) = totals
            .into_iter()
            .find(|(_, (debits, credits))| debits != credits)
        {
            return Err(LedgerError::Unbalanced {
                currency,
                debits,
                credits,
            });
        }
        Ok(Transaction {
            id: self.id,
            effective_at: self.effective_at,
            description: self.description,
            entries: self.entries,
            reverses: self.reverses,
        })
    }
}

/// A balanced transaction. Its fields are read-only: it can only be reversed.
/// Deserialising re-checks the balance, so a stored transaction is as valid as a built one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TransactionRecord")]
pub struct Transaction {
    id: TransactionId,
    effective_at: DateTime<Utc>,
    description: String,
    entries: Vec<Entry>,
    reverses: Option<TransactionId>,
}

/// The stored shape of a [`Transaction`], validated on the way in.
#[derive(Deserialize)]
struct TransactionRecord {
    id: TransactionId,
    effective_at: DateTime<Utc>,
    description: String,
    entries: Vec<Entry>,
    reverses: Option<TransactionId>,
}

impl TryFrom<TransactionRecord> for Transaction {
    type Error = LedgerError;

    fn try_from(record: TransactionRecord) -> Result<Self, Self::Error> {
        TransactionBuilder {
            id: record.id,
            effective_at: record.effective_at,
            description: record.description,
            entries: record.entries,
            reverses: record.reverses,
        }
        .build()
    }
}

impl Transaction {
    /// The id (idempotency key).
    pub fn id(&self) -> &TransactionId {
        &self.id
    }

    /// When it takes effect.
    pub fn effective_at(&self) -> DateTime<Utc> {
        self.effective_at
    }

    /// What it records.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The transaction this one reverses, if it is a reversal.
    pub fn reverses(&self) -> Option<&TransactionId> {
        self.reverses.as_ref()
    }

    /// The reversing transaction: the same entries on the opposite sides.
    pub fn reversal(&self, id: TransactionId, effective_at: DateTime<Utc>) -> Transaction {
        Transaction {
            id,
            effective_at,
            description: format!("reversal of {}", self.id),
            entries: self
                .entries
                .iter()
                .map(|entry| Entry {
                    side: entry.side.opposite(),
                    ..entry.clone()
                })
                .collect(),
            reverses: Some(self.id.clone()),
        }
    }
}

/// Whether a post wrote something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Newly recorded.
    Recorded,
    /// The identical transaction was already recorded (a replay).
    AlreadyRecorded,
}

/// An in-memory, append-only ledger: the reference the Postgres implementation follows.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    accounts: BTreeMap<AccountId, Account>,
    transactions: Vec<Transaction>,
    positions: BTreeMap<TransactionId, usize>,
    reversed: BTreeMap<TransactionId, TransactionId>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Opens (or re-opens identically) an account.
    pub fn open_account(&mut self, account: Account) {
        self.accounts.insert(account.id.clone(), account);
    }

    /// Records a transaction. A replay of the same id with the same content is
    /// [`Posted::AlreadyRecorded`]; with different content it is an error.
    pub fn post(&mut self, transaction: Transaction) -> Result<Posted, LedgerError> {
        if let Some(position) = self.positions.get(&transaction.id) {
            return if self.transactions[*position] == transaction {
                Ok(Posted::AlreadyRecorded)
            } else {
                Err(LedgerError::ExistsWithDifferentContent { id: transaction.id })
            };
        }
        for entry in &transaction.entries {
            let account =
                self.accounts
                    .get(&entry.account)
                    .ok_or_else(|| LedgerError::UnknownAccount {
                        account: entry.account.clone(),
                    })?;
            if account.currency != entry.amount.currency() {
                return Err(LedgerError::AccountCurrency {
                    account: account.id.clone(),
                    expected: account.currency,
                    found: entry.amount.currency(),
                });
            }
        }
        if let Some(original) = &transaction.reverses {
            if !self.positions.contains_key(original) {
                return Err(LedgerError::UnknownTransaction {
                    id: original.clone(),
                });
            }
            if self.reversed.contains_key(original) {
                return Err(LedgerError::AlreadyReversed {
                    id: original.clone(),
                });
            }
            self.reversed
                .insert(original.clone(), transaction.id.clone());
        }
        self.positions
            .insert(transaction.id.clone(), self.transactions.len());
        self.transactions.push(transaction);
        Ok(Posted::Recorded)
    }

    /// Posts the reversal of transaction `original` under the new id.
    pub fn reverse(
        &mut self,
        original: &TransactionId,
        id: TransactionId,
        effective_at: DateTime<Utc>,
    ) -> Result<Posted, LedgerError> {
        let position =
            self.positions
                .get(original)
                .ok_or_else(|| LedgerError::UnknownTransaction {
                    id: original.clone(),
                })?;
        let reversal = self.transactions[*position].reversal(id, effective_at);
        self.post(reversal)
    }

    /// All transactions in posting order.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    /// The account's balance on its normal side (an asset's debits minus credits, a
    /// liability's credits minus debits).
    pub fn balance(&self, account: &AccountId) -> Result<Money, LedgerError> {
        let found = self
            .accounts
            .get(account)
            .ok_or_else(|| LedgerError::UnknownAccount {
                account: account.clone(),
            })?;
        let normal = found.kind.normal_side();
        let mut balance = Money::zero(found.currency);
        for entry in self
            .transactions
            .iter()
            .flat_map(|transaction| &transaction.entries)
        {
            if &entry.account != account {
                continue;
            }
            balance = if entry.side == normal {
                balance.checked_add(&entry.amount)?
            } else {
                balance.checked_sub(&entry.amount)?
            };
        }
        Ok(balance)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
    }

    fn id(text: &str) -> AccountId {
        AccountId::parse(text).unwrap()
    }

    fn txn(text: &str) -> TransactionId {
        TransactionId::parse(text).unwrap()
    }

    fn usd(amount: Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn ledger() -> Ledger {
        let mut ledger = Ledger::new();
        for (account, kind) in [
            ("acct_ar", AccountKind::Asset),
            ("acct_rev", AccountKind::Revenue),
        ] {
            ledger.open_account(Account {
                id: id(account),
                name: account.into(),
                kind,
                currency: Currency::USD,
            });
        }
        ledger
    }

    fn invoice_posting(id_text: &str, amount: Decimal) -> Transaction {
        TransactionBuilder::new(txn(id_text), at(), "invoice")
            .debit(id("acct_ar"), usd(amount))
            .credit(id("acct_rev"), usd(amount))
            .build()
            .unwrap()
    }

    #[test]
    fn balance_per_currency_is_required() {
        let mixed = TransactionBuilder::new(txn("txn_1"), at(), "fx")
            .debit(id("acct_a"), usd(dec!(1)))
            .credit(id("acct_b"), Money::new(dec!(1), Currency::EUR))
            .build();
        assert_eq!(
            mixed,
            Err(LedgerError::Unbalanced {
                currency: Currency::EUR,
                debits: dec!(0),
                credits: dec!(1)
            })
        );
        let single = TransactionBuilder::new(txn("txn_1"), at(), "x")
            .debit(id("acct_a"), usd(dec!(1)))
            .build();
        assert_eq!(single, Err(LedgerError::TooFewEntries));
        let negative = TransactionBuilder::new(txn("txn_1"), at(), "x")
            .debit(id("acct_a"), usd(dec!(-1)))
            .credit(id("acct_b"), usd(dec!(-1)))
            .build();
        assert!(matches!(
            negative,
            Err(LedgerError::InvalidEntryAmount { index: 0, .. })
        ));
    }

    #[test]
    fn posting_is_idempotent_and_corrections_are_reversals() {
        let mut ledger = ledger();
        assert_eq!(
            ledger.post(invoice_posting("txn_1", dec!(15))).unwrap(),
            Posted::Recorded
        );
        assert_eq!(
            ledger.post(invoice_posting("txn_1", dec!(15))).unwrap(),
            Posted::AlreadyRecorded
        );
        assert_eq!(
            ledger.post(invoice_posting("txn_1", dec!(16))),
            Err(LedgerError::ExistsWithDifferentContent { id: txn("txn_1") })
        );
        assert_eq!(ledger.balance(&id("acct_ar")).unwrap(), usd(dec!(15)));
        assert_eq!(ledger.balance(&id("acct_rev")).unwrap(), usd(dec!(15)));

        ledger.reverse(&txn("txn_1"), txn("txn_2"), at()).unwrap();
        assert!(ledger.balance(&id("acct_ar")).unwrap().is_zero());
        let stored = serde_json::to_string(&ledger.transactions()[1]).unwrap();
        assert_eq!(
            serde_json::from_str::<Transaction>(&stored).unwrap(),
            ledger.transactions()[1]
        );
        let tampered = stored.replacen("\"15\"", "\"14\"", 1);
        assert!(serde_json::from_str::<Transaction>(&tampered).is_err());
        assert_eq!(ledger.transactions().len(), 2);
        assert_eq!(ledger.transactions()[1].reverses(), Some(&txn("txn_1")));
        assert_eq!(
            ledger.reverse(&txn("txn_1"), txn("txn_3"), at()),
            Err(LedgerError::AlreadyReversed { id: txn("txn_1") })
        );
    }

    #[test]
    fn accounts_must_exist_and_match_the_currency() {
        let mut ledger = ledger();
        let unknown = TransactionBuilder::new(txn("txn_9"), at(), "x")
            .debit(id("acct_nope"), usd(dec!(1)))
            .credit(id("acct_rev"), usd(dec!(1)))
            .build()
            .unwrap();
        assert_eq!(
            ledger.post(unknown),
            Err(LedgerError::UnknownAccount {
                account: id("acct_nope")
            })
        );
        let euros = TransactionBuilder::new(txn("txn_8"), at(), "x")
            .debit(id("acct_ar"), Money::new(dec!(1), Currency::EUR))
            .credit(id("acct_rev"), Money::new(dec!(1), Currency::EUR))
            .build()
            .unwrap();
        assert!(matches!(
            ledger.post(euros),
            Err(LedgerError::AccountCurrency { .. })
        ));
    }
}
