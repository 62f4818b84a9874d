//! Posting rules: a fact in, balanced ledger transactions out (the table is in the
//! [module docs](super)).
//!
//! Every rule is a pure function of its fact: the same fact always gives byte-identical
//! transactions with the same ids, so the service dedupes a redelivered or replayed fact by
//! transaction id. Each transaction has exactly two entries and comes from exactly one source
//! (one invoice line, one payment, one refund, one credit-note line, one usage report, one
//! grant, one burn); its description names that source as `rule key=value …`, and its id is
//! derived from the same source ids, so an auditor can walk from a ledger entry to the
//! invoice line and, by recomputing the id, from the invoice line to its entries.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::facts::{
    CreditFunding, CreditNoteAmounts, CreditNoteIssued, CreditNoteSettlement, CreditSource,
    CreditsBurned, CreditsGranted, Fact, FinalizedLine, FinalizedLineKind, InvoiceFinalized,
    InvoiceVoided, PaymentSucceeded, RefundSucceeded, UsageRated,
};
use super::ids::derived_transaction_id;
use super::{ContraKind, ExternalId, FinanceError, LedgerAccount, RevenueLine};
use crate::ids::TransactionId;
use crate::ledger::{Transaction, TransactionBuilder};
use crate::money::{Currency, Money};

/// One source, one amount, two accounts: the shape of every transaction these rules post.
struct TwoLegged<'a> {
    id: TransactionId,
    effective_at: DateTime<Utc>,
    description: String,
    /// Debited when the amount is positive, credited when it is negative.
    debit: &'a LedgerAccount,
    /// Credited when the amount is positive, debited when it is negative.
    credit: &'a LedgerAccount,
    amount: Money,
}

impl TwoLegged<'_> {
    /// The transaction, or `None` for a zero amount (nothing to post).
    fn build(self) -> Result<Option<Transaction>, FinanceError> {
        if self.amount.is_zero() {
            return Ok(None);
        }
        if !self.amount.is_rounded() {
            return Err(FinanceError::NotRounded {
                context: self.description,
                amount: self.amount,
            });
        }
        let currency = self.amount.currency();
        let magnitude = Money::new(self.amount.amount().abs(), currency);
        let (debit, credit) = if self.amount.is_positive() {
            (self.debit, self.credit)
        } else {
            (self.credit, self.debit)
        };
        let transaction = TransactionBuilder::new(self.id, self.effective_at, self.description)
            .debit(debit.id(currency)?, magnitude)
            .credit(credit.id(currency)?, magnitude)
            .build()?;
        Ok(Some(transaction))
    }

    /// [`build`](Self::build) as a list (empty for a zero amount).
    fn build_list(self) -> Result<Vec<Transaction>, FinanceError> {
        Ok(self.build()?.into_iter().collect())
    }

    /// [`build_list`](Self::build_list) for facts whose amount cannot be negative.
    fn build_list_not_negative(self) -> Result<Vec<Transaction>, FinanceError> {
        check_not_negative(&self.description, &self.amount)?;
        self.build_list()
    }
}

fn check_currency(source: &str, expected: Currency, amount: &Money) -> Result<(), FinanceError> {
    if amount.currency() != expected {
        return Err(FinanceError::CurrencyMismatch {
            context: source.to_owned(),
            expected,
            found: amount.currency(),
        });
    }
    Ok(())
}

/// Refuses a negative amount where only positive ones make sense (payments, refunds, …).
fn check_not_negative(source: &str, amount: &Money) -> Result<(), FinanceError> {
    if amount.is_negative() {
        return Err(FinanceError::WrongSign {
            context: source.to_owned(),
            amount: *amount,
        });
    }
    Ok(())
}

/// The account an invoice line moves, against receivables (or the credit balance).
fn line_account(kind: &FinalizedLineKind) -> LedgerAccount {
    match kind {
        FinalizedLineKind::RecurringFee { .. }
        | FinalizedLineKind::ProrationCharge { .. }
        | FinalizedLineKind::ProrationCredit { .. } => LedgerAccount::DeferredRevenue,
        FinalizedLineKind::Usage { .. } => LedgerAccount::UnbilledReceivables,
        FinalizedLineKind::OneOff | FinalizedLineKind::MinimumTrueUp => {
            LedgerAccount::Revenue(RevenueLine::OneOff)
        }
        FinalizedLineKind::Discount => LedgerAccount::ContraRevenue(ContraKind::Discounts),
        FinalizedLineKind::CreditsApplied { source } => match source {
            CreditSource::Prepaid => LedgerAccount::PrepaidCredits,
            CreditSource::Promotional => {
                LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits)
            }
            CreditSource::CustomerBalance => LedgerAccount::CustomerCreditBalance,
        },
    }
}

fn line_description(fact: &InvoiceFinalized, line: &FinalizedLine) -> String {
    let mut description = format!(
        "invoice_finalized invoice={} line={} kind={} customer={}",
        fact.invoice,
        line.line_id,
        line.kind.name(),
        fact.customer
    );
    if let FinalizedLineKind::Usage { meter, .. } = &line.kind {
        description.push_str(&format!(" meter={meter}"));
    }
    description
}

/// Checks every line (currency, rounding, sign, unique id) and returns the invoice total.
fn invoice_total(fact: &InvoiceFinalized) -> Result<Money, FinanceError> {
    let mut total = Money::zero(fact.currency);
    let mut seen = BTreeSet::new();
    for line in &fact.lines {
        let source = line_description(fact, line);
        check_currency(&source, fact.currency, &line.amount)?;
        if !line.amount.is_rounded() {
            return Err(FinanceError::NotRounded {
                context: source,
                amount: line.amount,
            });
        }
        if !line.kind.allows(&line.amount) {
            return Err(FinanceError::WrongSign {
                context: source,
                amount: line.amount,
            });
        }
        if !seen.insert(&line.line_id) {
            return Err(FinanceError::DuplicateLine {
                invoice: fact.invoice.clone(),
                line: line.line_id.clone(),
            });
        }
        total = total.checked_add(&line.amount)?;
    }
    Ok(total)
}

/// Invoice finalized: one transaction per non-zero line, between the line's account and the
/// invoice's counter account — accounts receivable, or the customer credit balance when the
/// invoice total is negative (the customer is owed money, not owing it).
///
/// A positive line debits the counter account and credits the line's account; a negative
/// line does the opposite. Summed over the lines, the counter account moves by the invoice
/// total. A line whose account is the counter account itself posts nothing.
pub fn post_invoice_finalized(fact: &InvoiceFinalized) -> Result<Vec<Transaction>, FinanceError> {
    let total = invoice_total(fact)?;
    let counter = if total.is_negative() {
        LedgerAccount::CustomerCreditBalance
    } else {
        LedgerAccount::AccountsReceivable
    };
    let mut transactions = Vec::with_capacity(fact.lines.len());
    for line in &fact.lines {
        let account = line_account(&line.kind);
        if account == counter {
            continue;
        }
        let posted = TwoLegged {
            id: invoice_line_transaction_id(fact, &line.line_id)?,
            effective_at: fact.finalized_at,
            description: line_description(fact, line),
            debit: &counter,
            credit: &account,
            amount: line.amount,
        }
        .build()?;
        transactions.extend(posted);
    }
    Ok(transactions)
}

/// The id of the transaction that posted line `line_id` of a finalized invoice (whether or
/// not it posted one): the way from an invoice line to its ledger entry.
pub fn invoice_line_transaction_id(
    fact: &InvoiceFinalized,
    line_id: &ExternalId,
) -> Result<TransactionId, FinanceError> {
    Ok(derived_transaction_id(
        "inv",
        &[fact.invoice.as_str(), line_id.as_str()],
    )?)
}

/// Usage true-up for one usage line of a finalized invoice: moves the difference between the
/// invoiced amount and what daily recognition already booked for the line's meter and
/// service period (`recognised_daily`, the sum of [`UsageRated`] amounts of those days) to
/// the usage revenue account, so the line's unbilled receivable ends at zero.
///
/// Invoiced more than recognised: Dr unbilled receivables, Cr revenue (usage). Recognised
/// more than invoiced: the reverse. Equal: nothing. It is a separate rule, not part of
/// [`post_invoice_finalized`], because it depends on usage facts as well: the service posts
/// it once both the invoice and the period's daily facts are in.
pub fn post_usage_true_up(
    fact: &InvoiceFinalized,
    line_id: &ExternalId,
    recognised_daily: Money,
) -> Result<Vec<Transaction>, FinanceError> {
    let line = fact
        .lines
        .iter()
        .find(|line| &line.line_id == line_id)
        .ok_or_else(|| FinanceError::NotAUsageLine {
            invoice: fact.invoice.clone(),
            line: line_id.clone(),
        })?;
    let FinalizedLineKind::Usage { meter, .. } = &line.kind else {
        return Err(FinanceError::NotAUsageLine {
            invoice: fact.invoice.clone(),
            line: line_id.clone(),
        });
    };
    let description = format!(
        "usage_true_up invoice={} line={} customer={} meter={meter} invoiced={} recognised_daily={}",
        fact.invoice,
        line.line_id,
        fact.customer,
        line.amount.amount(),
        recognised_daily.amount()
    );
    check_currency(&description, fact.currency, &recognised_daily)?;
    let difference = line.amount.checked_sub(&recognised_daily)?;
    TwoLegged {
        id: derived_transaction_id("tru", &[fact.invoice.as_str(), line_id.as_str()])?,
        effective_at: fact.finalized_at,
        description,
        debit: &LedgerAccount::UnbilledReceivables,
        credit: &LedgerAccount::usage_revenue(meter),
        amount: difference,
    }
    .build_list()
}

/// Invoice voided: the reversal of every transaction posted for the invoice
/// (`posted_for_invoice`, as the ledger holds them: its finalization, its usage true-ups and
/// the recognition days of its fees already posted — the service then stops those
/// schedules). Reversals are dated at the void and linked to the original by
/// [`Transaction::reverses`]; their ids derive from the original ids, so a redelivered void
/// gives the same reversals. Transactions that are themselves reversals are skipped.
pub fn post_invoice_voided(
    fact: &InvoiceVoided,
    posted_for_invoice: &[Transaction],
) -> Result<Vec<Transaction>, FinanceError> {
    posted_for_invoice
        .iter()
        .filter(|original| original.reverses().is_none())
        .map(|original| {
            let id =
                derived_transaction_id("void", &[fact.invoice.as_str(), original.id().as_str()])?;
            Ok(original.reversal(id, fact.voided_at))
        })
        .collect()
}

/// Payment succeeded: Dr cash, Cr accounts receivable.
pub fn post_payment(fact: &PaymentSucceeded) -> Result<Vec<Transaction>, FinanceError> {
    TwoLegged {
        id: derived_transaction_id("pay", &[fact.invoice.as_str(), fact.payment_id.as_str()])?,
        effective_at: fact.paid_at,
        description: format!(
            "payment_succeeded payment={} invoice={} customer={}",
            fact.payment_id, fact.invoice, fact.customer
        ),
        debit: &LedgerAccount::Cash,
        credit: &LedgerAccount::AccountsReceivable,
        amount: fact.amount,
    }
    .build_list_not_negative()
}

/// Refund succeeded: Dr refunds clearing, Cr cash. The credit note settled by refund
/// credited the clearing account; together they leave it at zero.
pub fn post_refund(fact: &RefundSucceeded) -> Result<Vec<Transaction>, FinanceError> {
    TwoLegged {
        id: derived_transaction_id("rfd", &[fact.invoice.as_str(), fact.refund_id.as_str()])?,
        effective_at: fact.refunded_at,
        description: format!(
            "refund_succeeded refund={} payment={} invoice={} customer={}",
            fact.refund_id, fact.payment_id, fact.invoice, fact.customer
        ),
        debit: &LedgerAccount::Refunds,
        credit: &LedgerAccount::Cash,
        amount: fact.amount,
    }
    .build_list_not_negative()
}

/// Credit note issued: Dr contra-revenue (credit notes), Cr the settlement's account —
/// accounts receivable (unpaid invoice), customer credit balance (paid, not refunded) or
/// refunds clearing (paid and refunded). One transaction per credited line, or one for a
/// note given as a total.
pub fn post_credit_note(fact: &CreditNoteIssued) -> Result<Vec<Transaction>, FinanceError> {
    let settlement_account = match fact.settlement {
        CreditNoteSettlement::ReducesAmountDue => LedgerAccount::AccountsReceivable,
        CreditNoteSettlement::CustomerCreditBalance => LedgerAccount::CustomerCreditBalance,
        CreditNoteSettlement::Refunded => LedgerAccount::Refunds,
    };
    let parts: Vec<(Option<&ExternalId>, Money)> = match &fact.amounts {
        CreditNoteAmounts::Total { amount } => vec![(None, *amount)],
        CreditNoteAmounts::PerLine { lines } => lines
            .iter()
            .map(|line| (Some(&line.line_id), line.amount))
            .collect(),
    };
    let mut transactions = Vec::with_capacity(parts.len());
    for (line_id, amount) in parts {
        let mut description = format!(
            "credit_note_issued credit_note={} invoice={}",
            fact.credit_note, fact.invoice
        );
        let mut id_parts = vec![fact.credit_note.as_str()];
        if let Some(line_id) = line_id {
            description.push_str(&format!(" line={line_id}"));
            id_parts.push(line_id.as_str());
        }
        description.push_str(&format!(" customer={}", fact.customer));
        check_currency(&description, fact.currency, &amount)?;
        check_not_negative(&description, &amount)?;
        let posted = TwoLegged {
            id: derived_transaction_id("cn", &id_parts)?,
            effective_at: fact.issued_at,
            description,
            debit: &LedgerAccount::ContraRevenue(ContraKind::CreditNotes),
            credit: &settlement_account,
            amount,
        }
        .build()?;
        transactions.extend(posted);
    }
    Ok(transactions)
}

/// Usage rated for a day: Dr unbilled receivables, Cr revenue (usage of the meter) — usage
/// is recognised as it is consumed. A negative correction posts the reverse. Dated at the
/// start of the usage day (UTC).
pub fn post_usage_rated(fact: &UsageRated) -> Result<Vec<Transaction>, FinanceError> {
    let day = fact.day.format("%Y-%m-%d").to_string();
    let sequence = fact.sequence.to_string();
    TwoLegged {
        id: derived_transaction_id(
            "use",
            &[fact.customer.as_str(), fact.meter.as_str(), &day, &sequence],
        )?,
        effective_at: fact.day.and_time(chrono::NaiveTime::MIN).and_utc(),
        description: format!(
            "usage_rated customer={} meter={} day={day} sequence={sequence}",
            fact.customer, fact.meter
        ),
        debit: &LedgerAccount::UnbilledReceivables,
        credit: &LedgerAccount::usage_revenue(&fact.meter),
        amount: fact.amount,
    }
    .build_list()
}

/// Credits granted. Paid: Dr accounts receivable, Cr prepaid credits (the purchase is owed
/// until a payment settles it; invoicing must not also bill it as a revenue line).
/// Promotional: nothing — no consideration was received, so there is no liability; the
/// credits become contra-revenue when used.
pub fn post_credits_granted(fact: &CreditsGranted) -> Result<Vec<Transaction>, FinanceError> {
    let description = format!(
        "credits_granted grant={} customer={}",
        fact.grant, fact.customer
    );
    check_not_negative(&description, &fact.amount)?;
    if fact.funding == CreditFunding::Promotional {
        return Ok(Vec::new());
    }
    TwoLegged {
        id: derived_transaction_id("grant", &[fact.grant.as_str()])?,
        effective_at: fact.granted_at,
        description,
        debit: &LedgerAccount::AccountsReceivable,
        credit: &LedgerAccount::PrepaidCredits,
        amount: fact.amount,
    }
    .build_list()
}

/// Credits burned. On an invoice: nothing (its `CreditsApplied` line posted it). Against
/// usage not invoiced: Dr prepaid credits (paid) or contra-revenue (promotional), Cr unbilled
/// receivables — the credits settle usage that daily recognition already booked.
pub fn post_credits_burned(fact: &CreditsBurned) -> Result<Vec<Transaction>, FinanceError> {
    let description = format!(
        "credits_burned burn={} grant={} customer={}",
        fact.burn_id, fact.grant, fact.customer
    );
    check_not_negative(&description, &fact.amount)?;
    if fact.invoice.is_some() {
        return Ok(Vec::new());
    }
    let debit = match fact.funding {
        CreditFunding::Paid => LedgerAccount::PrepaidCredits,
        CreditFunding::Promotional => LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits),
    };
    TwoLegged {
        id: derived_transaction_id("burn", &[fact.grant.as_str(), fact.burn_id.as_str()])?,
        effective_at: fact.burned_at,
        description,
        debit: &debit,
        credit: &LedgerAccount::UnbilledReceivables,
        amount: fact.amount,
    }
    .build_list()
}

/// Any fact through its rule (a void needs the originals: [`post_invoice_voided`]).
pub fn post_fact(fact: &Fact) -> Result<Vec<Transaction>, FinanceError> {
    match fact {
        Fact::InvoiceFinalized(fact) => post_invoice_finalized(fact),
        Fact::PaymentSucceeded(fact) => post_payment(fact),
        Fact::RefundSucceeded(fact) => post_refund(fact),
        Fact::CreditNoteIssued(fact) => post_credit_note(fact),
        Fact::UsageRated(fact) => post_usage_rated(fact),
        Fact::CreditsGranted(fact) => post_credits_granted(fact),
        Fact::CreditsBurned(fact) => post_credits_burned(fact),
    }
}
