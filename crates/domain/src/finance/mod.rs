//! Finance: the chart of accounts, the posting rules that turn billing facts into ledger
//! transactions, revenue recognition and MRR analytics. Pure: the finance service stores,
//! dedupes and schedules; this module decides the numbers.
//!
//! | module | what it holds |
//! |---|---|
//! | [`accounts`] | [`LedgerAccount`]: the chart per currency, kinds, codes, deterministic [`AccountId`](crate::ids::AccountId)s; opening them in a [`Ledger`](crate::ledger::Ledger) |
//! | [`facts`] | the facts the service receives (invoice finalized or voided, payment, refund, credit note, usage rated per day, credits granted and burned) |
//! | [`posting`] | one rule per fact: fact → `Vec<Transaction>`, balanced, with ids derived from the fact |
//! | [`recognition`] | ratable schedules (by day or by second) that sum exactly, and the daily recognition transaction |
//! | [`mrr`] | MRR normalisation, subscription and customer MRR, movements, churn and retention rates |
//!
//! # Posting rules
//!
//! Every transaction has two entries and one source; an amount of zero posts nothing, and a
//! fact that posts nothing gives an empty `Vec`. "Counter" is accounts receivable, or the
//! customer credit balance when the invoice total is negative.
//!
//! | fact | debit | credit |
//! |---|---|---|
//! | invoice finalized, recurring fee / proration charge (in advance) | counter | deferred revenue |
//! | — proration credit (negative) | deferred revenue | counter |
//! | — usage line | counter | unbilled receivables (recognised daily already) |
//! | — one-off, adjustment, minimum true-up | counter | revenue (one-off); a negative adjustment the reverse |
//! | — discount (negative) | contra-revenue (discounts) | counter |
//! | — credits applied (negative) | prepaid credits / customer credit balance / contra-revenue (promotional) | counter |
//! | usage true-up (invoiced − recognised daily, per usage line) | unbilled receivables | revenue (usage of the meter); negative: the reverse |
//! | invoice voided | the reversal of every transaction posted for the invoice | |
//! | payment succeeded | cash | accounts receivable |
//! | refund succeeded | refunds clearing | cash |
//! | credit note, invoice unpaid | contra-revenue (credit notes) | accounts receivable |
//! | credit note, paid, not refunded | contra-revenue (credit notes) | customer credit balance |
//! | credit note, paid and refunded | contra-revenue (credit notes) | refunds clearing |
//! | usage rated for a day | unbilled receivables | revenue (usage of the meter); a negative correction the reverse |
//! | paid credits granted | accounts receivable | prepaid credits |
//! | promotional credits granted | — (no liability; contra-revenue when used) | |
//! | credits burned on an invoice | — (the invoice's credits-applied line posted it) | |
//! | credits burned against uninvoiced usage | prepaid credits / contra-revenue (promotional) | unbilled receivables |
//! | recognition of one day of a deferred fee | deferred revenue | revenue (recurring fees); a proration credit's day the reverse |
//!
//! Why these choices:
//! - **Usage** is revenue the day it is consumed (rated usage per day), so invoicing it only
//!   moves it from unbilled to billed receivables. What the invoice says and what the days
//!   said can differ (late events, minimums inside a price, rounding once per line): the
//!   usage true-up posts that difference to usage revenue, so the line's unbilled receivable
//!   closes at zero and usage revenue equals what was invoiced.
//! - **Proration credits** are negative fees over the unused part of the period: deferred
//!   revenue goes down at invoice time and their negative schedule un-recognises exactly the
//!   days the original fee's schedule still recognises, so each unused day nets to zero.
//! - **Refunds** is a clearing account: the credit note (the revenue correction) credits it,
//!   the refund (the cash leaving) debits it; a balance left is a reconciliation finding.
//! - **Discounts and credit notes** are contra-revenue when invoiced or issued; they are not
//!   spread over a fee's service period.
//!
//! # Traceability and idempotency
//!
//! A transaction's description names its source as `rule key=value …` (e.g.
//! `invoice_finalized invoice=inv_1 line=il_3 kind=usage customer=cus_1 meter=tokens`); its
//! id is `txn_` + a rule tag + the FNV-1a-128 hash of the source ids, so a replay gives the
//! identical transaction and [`posting::invoice_line_transaction_id`] walks from an invoice
//! line to its entry. Reversals point at what they reverse ([`Transaction::reverses`](crate::ledger::Transaction::reverses)).
//!
//! # Recognition and its remainder rule
//!
//! A fee for the service period `[start, end)` is split over UTC days in proportion to each
//! day's share — whole days ([`RecognitionPolicy::ByDay`], the day of `start` counts in full,
//! the day of `end` not at all unless the period lies within one day) or seconds
//! ([`RecognitionPolicy::BySecond`]). The split is the **largest-remainder allocation** of
//! [`Money::allocate`](crate::money::Money::allocate): each day gets its exact share rounded
//! toward zero, and the minor units left over go one each to the days with the largest
//! dropped remainders, earlier days first on ties. The days sum exactly to the amount and
//! each is within one minor unit of its exact share.
//!
//! # MRR and its rounding rule
//!
//! A recurring fee is normalised to a month: monthly × 1, quarterly ÷ 3, yearly ÷ 12, every
//! N months ÷ N, weekly × 52 ÷ 12 (52 weeks a year; 4.333… weeks a month), daily × 365 ÷ 12.
//! MRR keeps full `Decimal` precision through every sum and movement: a quotient such as
//! 10.00 × 52 ÷ 12 = 43.333… is kept to `Decimal`'s 28–29 significant digits, and sums of
//! such quotients round at that last digit (far below a millionth of a cent for any real
//! amount). Round only what is shown, with [`mrr::round_for_report`] (half-even to the
//! currency's minor units). Only active and past-due subscriptions contribute; trials,
//! paused and canceled ones do not; forever discounts reduce MRR, limited ones do not (their
//! end would be a movement no customer made).
//!
//! Usage is **not** in MRR (as with Stripe and Lago; Chargebee can count it in the month it
//! is invoiced): [`mrr::usage_run_rate`] — the usage recognised over the trailing 30 days —
//! stands beside it.
//!
//! Movements ([`mrr::mrr_movements`]) compare a customer's MRR before and after a change:
//! new (0 → x, the first time), expansion (up), contraction (down, not to 0), churn (x → 0:
//! the last paid subscription ended), reactivation (0 → x after an earlier churn). Changes of
//! one customer within a window of the group's first change are one movement, dated at the
//! group's last change; a group that ends where it began is no movement. Rates: gross MRR
//! churn = (churn + contraction) ÷ starting MRR; net MRR churn = (churn + contraction −
//! expansion − reactivation) ÷ starting MRR; quick ratio = (new + expansion + reactivation) ÷
//! (churn + contraction); ARR = MRR × 12; ARPA = MRR ÷ paying customers; a cohort's gross
//! revenue retention = Σ min(ending, starting) ÷ Σ starting, net = Σ ending ÷ Σ starting.
//!
//! # Left to the service
//!
//! Storing and deduplicating transactions, opening usage accounts before posting
//! ([`open_usage_account`]), running the recognition schedule day by day, summing the daily
//! usage behind a usage true-up, period close and late facts, FX.

pub mod accounts;
pub mod facts;
mod ids;
pub mod mrr;
pub mod posting;
pub mod recognition;
pub mod retention;

#[cfg(test)]
mod mrr_tests;
#[cfg(test)]
mod posting_tests;

use crate::ids::{IdError, InvoiceId};
use crate::ledger::LedgerError;
use crate::money::{Currency, Money, MoneyError};

pub use accounts::{
    ContraKind, LedgerAccount, RevenueLine, open_fixed_accounts, open_usage_account,
};
pub use ids::{ExternalId, MAX_EXTERNAL_ID_LEN};
pub use recognition::{RecognitionDay, RecognitionPolicy, RevenueSchedule};

/// What can go wrong in the finance rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinanceError {
    /// An amount is in another currency than its fact, invoice or history.
    #[error("{context}: expected {expected}, found {found}")]
    CurrencyMismatch {
        /// What the amount belongs to (a description of the source).
        context: String,
        /// The currency required.
        expected: Currency,
        /// The currency given.
        found: Currency,
    },
    /// An amount to post is not in whole minor units.
    #[error("{context}: {amount} is not in whole minor units")]
    NotRounded {
        /// What the amount belongs to.
        context: String,
        /// The amount.
        amount: Money,
    },
    /// An amount has a sign its kind does not allow (a negative payment, a positive discount).
    #[error("{context}: {amount} has the wrong sign")]
    WrongSign {
        /// What the amount belongs to.
        context: String,
        /// The amount.
        amount: Money,
    },
    /// Two lines of one invoice have the same id.
    #[error("invoice {invoice}: line {line} appears twice")]
    DuplicateLine {
        /// The invoice.
        invoice: InvoiceId,
        /// The line id.
        line: ExternalId,
    },
    /// A usage true-up was asked for a line that is not a usage line of the invoice.
    #[error("invoice {invoice}: {line} is not one of its usage lines")]
    NotAUsageLine {
        /// The invoice.
        invoice: InvoiceId,
        /// The line id.
        line: ExternalId,
    },
    /// An MRR history is not in strictly ascending time order.
    #[error("MRR history: change {index} is not after the one before it")]
    UnorderedHistory {
        /// Position of the offending change.
        index: usize,
    },
    /// A normalisation interval of zero length (`every 0 months`).
    #[error("an interval must be at least 1")]
    ZeroInterval,
    /// A percentage discount outside 0–100.
    #[error("discount percentage {percent} is outside 0..=100")]
    InvalidPercentage {
        /// The percentage.
        percent: rust_decimal::Decimal,
    },
    /// An id could not be built.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The ledger refused a transaction.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}
