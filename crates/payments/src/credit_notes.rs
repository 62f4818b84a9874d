//! Credit notes issued in invoicing (`InvoiceEvent.CreditNoteIssued`),
//! mirrored to Stripe so Stripe never collects more than Tally asks for.
//!
//! - **Open invoice** (finalized, not paid): a Stripe credit note for the
//!   exact amount lowers the Stripe invoice's `amount_due`; payments lowers
//!   the payment and the invoice's amount due by the same amount and moves
//!   it out of the receivable (debit invoiced revenue, credit receivable).
//!   A note that leaves nothing due ends collection (Stripe marks its
//!   invoice paid; the payment is canceled: nothing more to collect).
//! - **What never reached Stripe**: invoicing credits up to the invoice
//!   total, but wallet credits applied before finalization were never part
//!   of the Stripe invoice (whose total is Tally's amount due then), and
//!   Stripe refuses notes beyond its total. Only the part within what
//!   Stripe billed (less earlier notes) is sent; the rest is Tally's alone.
//! - **Paid invoice**: the money was collected, so the Stripe credit note is
//!   recorded as credited *outside Stripe* (`out_of_band_amount`): no Stripe
//!   refund and no Stripe customer balance. Invoicing holds such credit in
//!   its own wallet and subtracts it from later invoices before they reach
//!   Stripe; a Stripe balance credit would be applied a second time there.
//!   The ledger moves it to the credit owed to customers.
//! - **A note that becomes a refund** (`refund_amount`, on a paid invoice):
//!   invoicing took the note from the invoice's one balance and held the
//!   refund; payments refunds that part of the charge first (a refund row
//!   keyed by the note, `POST /v1/refunds` with `tally:refund:<ref>:create`,
//!   `PaymentEvent.Refunded` naming the note) and then links it to the
//!   Stripe credit note (`refunds[]`), the rest of the note credited outside
//!   Stripe — one Stripe credit note that is the refund, as Stripe's own
//!   `refund_amount` makes it, without a refund Tally would learn of only
//!   from a webhook. A refund Stripe refuses (or that cannot be made: nothing
//!   collected through Stripe) is `PaymentEvent.RefundFailed` and its part of
//!   the note is credited outside Stripe.
//! - **A note mirroring a payments refund** (`refund_id` set): payments
//!   caused it and Stripe already has the refund; nothing is sent.
//! - Void, written-off, never-collected or refused invoices have nothing in
//!   Stripe to credit: the note is recorded and ignored.
//!
//! Idempotent: the Stripe call carries `tally:credit_note:<cn>:create`, and
//! the effect is written once per credit note (`payments.credit_notes`), in
//! the transaction that records the inbox entry.

use tally_bus::consumer::HandlerError;
use tally_domain::ids::RefundId;
use tally_domain::ledger::{Fact, TransactionBuilder};
use tally_domain::money::Money;
use tally_proto::events::InvoiceEvent;
use tally_proto::events::invoice_event::CreditNoteIssued;
use tally_proto::invoicing::{CreditNote, CreditNoteReason};

use crate::core::{Core, RefundFailure};
use crate::error::PaymentsError;
use crate::ledger::{self, Book};
use crate::store::credit_notes::{
    self as notes_store, CreditedInvoice, MirroredNote, NewNoteRefund,
};
use crate::store::{self, PaymentKey, PaymentState, record_inbox, refunds};
use crate::stripe::{
    CreditNoteRequest, RemoteRefundStatus, StripeCreditNoteReason, StripeRefundReason,
};
use tally_proto::convert::money as parse_money;

/// What to do with one credit note, decided from payments' own state.
enum Plan {
    /// Nothing to send to Stripe; only the inbox entry.
    RecordOnly(&'static str),
    /// Mirror it in Stripe against this Stripe invoice.
    Mirror {
        stripe_invoice_id: String,
        split: Split,
    },
}

/// The part of a credit note Stripe is told about; the rest of the note (if
/// any) credits what was settled before finalization, outside Stripe.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Lowers what the open invoice still asks for (pre-payment).
    reduce_due: Money,
    /// Credited outside Stripe on a paid invoice (`out_of_band_amount`).
    out_of_band: Money,
    /// Paid back by the note's own refund, linked to the Stripe note.
    refund: Money,
}

impl Split {
    /// The Stripe credit note's total.
    fn stripe_amount(&self) -> Result<Money, HandlerError> {
        self.reduce_due
            .checked_add(&self.out_of_band)
            .and_then(|sum| sum.checked_add(&self.refund))
            .map_err(|error| HandlerError::Poison(error.to_string()))
    }

    /// What the credit note itself moves in the ledger (the refund part
    /// posts as the refund it is).
    fn credited(&self) -> Result<Money, PaymentsError> {
        Ok(self.reduce_due.checked_add(&self.out_of_band)?)
    }
}

/// A refund payments made for a credit note's `refund_amount`.
#[derive(Debug, Clone)]
struct LinkedRefund {
    stripe_refund_id: String,
    amount: Money,
}

/// Applies a `CreditNoteIssued` event (message `message_id`).
pub async fn issued(
    core: &Core,
    message_id: &str,
    event: &InvoiceEvent,
    issued: &CreditNoteIssued,
) -> Result<(), HandlerError> {
    let note = issued
        .credit_note
        .as_ref()
        .ok_or_else(|| HandlerError::Poison("credit_note_issued.credit_note: required".into()))?;
    let amount = parse_money(note.total.as_ref(), "credit_note.total")
        .map_err(|error| HandlerError::Poison(error.to_string()))?;
    if !amount.is_positive() || !amount.is_rounded() {
        return Err(HandlerError::Poison(format!(
            "credit_note.total: {amount} is not a positive amount in whole minor units"
        )));
    }
    if note.invoice_id != event.invoice_id {
        return Err(HandlerError::Poison(format!(
            "credit_note.invoice_id `{}` differs from invoice_id `{}`",
            note.invoice_id, event.invoice_id
        )));
    }
    let refund_amount = note_refund_amount(note, amount)?;
    let linked = match refund_amount {
        Some(wanted) if note.refund_id.is_empty() && note.reason() != CreditNoteReason::Refund => {
            pay_out(core, note, wanted).await?
        }
        _ => None,
    };
    let plan = plan(core, note, amount, linked.as_ref()).await?;
    let (stripe_invoice_id, split) = match plan {
        Plan::RecordOnly(why) => {
            tracing::info!(credit_note_id = %note.id, invoice_id = %note.invoice_id, why, "credit note not mirrored to Stripe");
            return record(core, message_id, None).await.map_err(retry);
        }
        Plan::Mirror {
            stripe_invoice_id,
            split,
        } => (stripe_invoice_id, split),
    };
    let request = CreditNoteRequest {
        tally_credit_note_id: note.id.clone(),
        stripe_invoice_id,
        amount: split.stripe_amount()?,
        reason: stripe_reason(note.reason()),
        tally_reason: note.reason().as_str_name().to_owned(),
        memo: note.memo.clone(),
        out_of_band: split.out_of_band,
        linked_refund: linked
            .as_ref()
            .filter(|_| split.refund.is_positive())
            .map(|refund| (refund.stripe_refund_id.clone(), split.refund)),
    };
    let created = match core.stripe.create_credit_note(&request).await {
        Ok(created) => created,
        Err(error) if error.is_transient() => return Err(retry(error.into())),
        Err(error) => {
            // Stripe refused for good: dead-lettered so someone looks at it
            // (Stripe may still ask for the uncredited amount).
            tracing::error!(credit_note_id = %note.id, invoice_id = %note.invoice_id, %error, "Stripe refused the credit note");
            return Err(HandlerError::Poison(format!(
                "Stripe refused credit note {}: {error}",
                note.id
            )));
        }
    };
    let mirrored = Mirrored {
        note,
        amount,
        split,
        stripe_credit_note_id: &created.id,
    };
    record(core, message_id, Some(&mirrored))
        .await
        .map_err(retry)
}

/// The note's `refund_amount`, checked against the note.
fn note_refund_amount(note: &CreditNote, amount: Money) -> Result<Option<Money>, HandlerError> {
    let Some(value) = note.refund_amount.as_ref() else {
        return Ok(None);
    };
    let refund = parse_money(Some(value), "credit_note.refund_amount")
        .map_err(|error| HandlerError::Poison(error.to_string()))?;
    if refund.is_zero() {
        return Ok(None);
    }
    if !refund.is_positive()
        || !refund.is_rounded()
        || refund.currency() != amount.currency()
        || refund.amount() > amount.amount()
    {
        return Err(HandlerError::Poison(format!(
            "credit_note.refund_amount: {refund} is not a positive amount in whole minor units \
             within the note's total {amount}"
        )));
    }
    Ok(Some(refund))
}

/// Refunds a credit note's `refund_amount` from the invoice's payment, once
/// per note: `None` when it could not be made (then that part of the note is
/// credited outside Stripe, and invoicing is told by `RefundFailed`).
// Longer than the 150-line gate; split it when next changed (issue 15).
#[allow(clippy::too_many_lines)]
async fn pay_out(
    core: &Core,
    note: &CreditNote,
    wanted: Money,
) -> Result<Option<LinkedRefund>, HandlerError> {
    let now = core.clock.now();
    let read = |error: sqlx::Error| retry(error.into());
    let mut transaction = core.pool.begin().await.map_err(read)?;
    let Some(payment) = store::payment(
        &mut transaction,
        PaymentKey::Invoice(&note.invoice_id),
        true,
    )
    .await
    .map_err(read)?
    else {
        tracing::warn!(credit_note_id = %note.id, invoice_id = %note.invoice_id, "a credit note asks for a refund of an invoice payments never collected; credited outside Stripe");
        return Ok(None);
    };
    let existing = notes_store::note_refund(&mut transaction, &note.id)
        .await
        .map_err(read)?;
    let (refund_id, amount) = match existing {
        Some(refund) if refund.status == "succeeded" => {
            return Ok(refund
                .stripe_refund_id
                .map(|stripe_refund_id| LinkedRefund {
                    stripe_refund_id,
                    amount: Money::new(refund.amount, wanted.currency()),
                }));
        }
        Some(refund) if refund.status == "failed" => return Ok(None),
        Some(refund) => (refund.id, Money::new(refund.amount, wanted.currency())),
        None => {
            let refund_id = String::from(core.ids.mint::<RefundId>());
            let reason = refund_reason(note.reason());
            let memo = format!("credit note {}", note.number);
            let new = NewNoteRefund {
                id: &refund_id,
                payment_id: &payment.id,
                invoice_id: &payment.invoice_id,
                credit_note_id: &note.id,
                amount: wanted.amount(),
                currency: wanted.currency().code(),
                reason: store::refund_reason_name(reason),
                memo: &memo,
            };
            notes_store::insert_note_refund(&mut transaction, new, now)
                .await
                .map_err(read)?;
            if let Some(problem) = cannot_refund(&mut transaction, &payment, wanted).await? {
                let failure = RefundFailure {
                    reason: &problem,
                    code: "",
                    stripe_refund_id: None,
                };
                core.record_refund_failed(&mut transaction, &payment, &refund_id, failure, now)
                    .await
                    .map_err(retry)?;
                transaction.commit().await.map_err(read)?;
                tracing::warn!(credit_note_id = %note.id, refund_id, problem, "a credit note's refund cannot be made; credited outside Stripe");
                return Ok(None);
            }
            (refund_id, wanted)
        }
    };
    transaction.commit().await.map_err(read)?;
    let Some(charge) = payment.stripe_charge_id.clone() else {
        return Ok(None);
    };
    let stripe_reason = match refund_reason(note.reason()) {
        tally_proto::payments::RefundReason::Duplicate => StripeRefundReason::Duplicate,
        tally_proto::payments::RefundReason::Fraudulent => StripeRefundReason::Fraudulent,
        _ => StripeRefundReason::RequestedByCustomer,
    };
    let answer = core
        .stripe
        .create_refund(&refund_id, &charge, &amount, stripe_reason)
        .await;
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await.map_err(read)?;
    let Some(mut payment) = store::payment(&mut transaction, PaymentKey::Id(&payment.id), true)
        .await
        .map_err(read)?
    else {
        return Err(HandlerError::Retry(format!(
            "payment {} vanished",
            payment.id
        )));
    };
    let linked = match answer {
        Ok(remote) => match remote.status {
            RemoteRefundStatus::Succeeded => {
                core.record_refund_succeeded(
                    &mut transaction,
                    &mut payment,
                    &refund_id,
                    &remote.id,
                    now,
                )
                .await
                .map_err(retry)?;
                Some(LinkedRefund {
                    stripe_refund_id: remote.id,
                    amount,
                })
            }
            RemoteRefundStatus::Pending => {
                refunds::set_stripe_refund_id(&mut transaction, &refund_id, &remote.id, now)
                    .await
                    .map_err(retry)?;
                Some(LinkedRefund {
                    stripe_refund_id: remote.id,
                    amount,
                })
            }
            RemoteRefundStatus::Failed => {
                let failure = RefundFailure {
                    reason: &remote.failure_reason,
                    code: "",
                    stripe_refund_id: Some(&remote.id),
                };
                core.record_refund_failed(&mut transaction, &payment, &refund_id, failure, now)
                    .await
                    .map_err(retry)?;
                None
            }
        },
        Err(error) if error.is_transient() => return Err(retry(error.into())),
        Err(error) => {
            let message = error.failure_message();
            let failure = RefundFailure {
                reason: &message,
                code: "",
                stripe_refund_id: None,
            };
            core.record_refund_failed(&mut transaction, &payment, &refund_id, failure, now)
                .await
                .map_err(retry)?;
            tracing::warn!(credit_note_id = %note.id, refund_id, %error, "Stripe refused a credit note's refund; credited outside Stripe");
            None
        }
    };
    transaction.commit().await.map_err(read)?;
    Ok(linked)
}

/// Why `wanted` cannot be refunded from `payment` through Stripe, if it cannot.
async fn cannot_refund(
    connection: &mut sqlx::PgConnection,
    payment: &store::PaymentRow,
    wanted: Money,
) -> Result<Option<String>, HandlerError> {
    if !payment.status.was_collected() {
        return Ok(Some(format!(
            "payment {} is {}: nothing was collected to refund",
            payment.id,
            payment.status.as_str()
        )));
    }
    if payment.stripe_charge_id.is_none() {
        return Ok(Some(format!(
            "payment {} has no Stripe charge to refund (paid outside Stripe)",
            payment.id
        )));
    }
    // The note's own pending row is counted: compare with it included.
    let reserved = store::refunds_total(connection, &payment.id)
        .await
        .map_err(|error| retry(error.into()))?;
    if reserved > payment.amount.amount() {
        return Ok(Some(format!(
            "a refund of {wanted} exceeds what remains refundable on payment {} (paid {}, refunded or \
             being refunded {} before it)",
            payment.id,
            payment.amount,
            Money::new(reserved - wanted.amount(), wanted.currency())
        )));
    }
    Ok(None)
}

/// The refund reason of a credit note's reason.
fn refund_reason(reason: CreditNoteReason) -> tally_proto::payments::RefundReason {
    match reason {
        CreditNoteReason::Duplicate => tally_proto::payments::RefundReason::Duplicate,
        CreditNoteReason::Fraudulent => tally_proto::payments::RefundReason::Fraudulent,
        CreditNoteReason::BillingError => tally_proto::payments::RefundReason::BillingError,
        CreditNoteReason::OrderChange
        | CreditNoteReason::ProductUnsatisfactory
        | CreditNoteReason::Refund
        | CreditNoteReason::Unspecified => tally_proto::payments::RefundReason::RequestedByCustomer,
    }
}

/// Decides from payments' invoice row whether and how Stripe is told.
async fn plan(
    core: &Core,
    note: &CreditNote,
    amount: Money,
    linked: Option<&LinkedRefund>,
) -> Result<Plan, HandlerError> {
    if !note.refund_id.is_empty() || note.reason() == CreditNoteReason::Refund {
        return Ok(Plan::RecordOnly("it mirrors a payments refund"));
    }
    let mirrored = notes_store::stripe_credit_note(&core.pool, &note.id)
        .await
        .map_err(|error| retry(error.into()))?;
    if mirrored.is_some() {
        return Ok(Plan::RecordOnly("already mirrored"));
    }
    let row = notes_store::credited_invoice(&core.pool, &note.invoice_id)
        .await
        .map_err(|error| retry(error.into()))?;
    let Some(row) = row else {
        // Finalization comes first on the customer's ordering key; until it
        // is applied here there is nothing to credit yet.
        return Err(HandlerError::Retry(format!(
            "invoice {} is not known to payments yet",
            note.invoice_id
        )));
    };
    let CreditedInvoice {
        status,
        stripe_invoice_id,
        currency,
        amount_due,
        out_of_band: out_of_band_before,
    } = row;
    if currency != amount.currency().code() {
        return Err(HandlerError::Poison(format!(
            "credit note {} is in {}, invoice {} in {currency}",
            note.id,
            amount.currency(),
            note.invoice_id
        )));
    }
    // Stripe can credit at most its invoice's total, which is Tally's amount
    // due at finalization: what was settled before (wallet credits) never
    // reached Stripe, so that part of a note is Tally's alone.
    let currency = amount.currency();
    let zero = Money::zero(currency);
    let split = match status.as_str() {
        // Still being mirrored: Stripe cannot credit a draft.
        "syncing" => {
            return Err(HandlerError::Retry(format!(
                "invoice {} is still being mirrored to Stripe",
                note.invoice_id
            )));
        }
        "open" => Split {
            reduce_due: Money::new(amount.amount().min(amount_due), currency),
            out_of_band: zero,
            refund: zero,
        },
        "paid" => {
            // Stripe credits a paid invoice up to what it collected, less
            // its earlier post-payment notes (their refunds included).
            let cap = (amount_due - out_of_band_before).max(rust_decimal::Decimal::ZERO);
            let refunded = linked
                .map(|refund| refund.amount.amount())
                .unwrap_or_default();
            let refund = refunded.min(cap);
            Split {
                reduce_due: zero,
                out_of_band: Money::new(
                    (amount.amount() - refunded)
                        .min(cap - refund)
                        .max(rust_decimal::Decimal::ZERO),
                    currency,
                ),
                refund: Money::new(refund, currency),
            }
        }
        _ => {
            return Ok(Plan::RecordOnly(
                "the invoice has nothing in Stripe to credit",
            ));
        }
    };
    if split.reduce_due.is_zero() && split.out_of_band.is_zero() && split.refund.is_zero() {
        return Ok(Plan::RecordOnly(
            "nothing of the invoice that went through Stripe is left to credit",
        ));
    }
    let Some(stripe_invoice_id) = stripe_invoice_id else {
        return Ok(Plan::RecordOnly("the invoice has no Stripe invoice"));
    };
    Ok(Plan::Mirror {
        stripe_invoice_id,
        split,
    })
}

/// A credit note Stripe has accepted.
struct Mirrored<'a> {
    note: &'a CreditNote,
    amount: Money,
    split: Split,
    stripe_credit_note_id: &'a str,
}

/// Records the inbox entry and, for a mirrored note seen for the first time,
/// its effect on the invoice, the payment and the ledger.
async fn record(
    core: &Core,
    message_id: &str,
    mirrored: Option<&Mirrored<'_>>,
) -> Result<(), PaymentsError> {
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    if !record_inbox(&mut transaction, message_id).await? {
        return Ok(());
    }
    let Some(mirrored) = mirrored else {
        transaction.commit().await?;
        return Ok(());
    };
    let note = mirrored.note;
    let split = mirrored.split;
    let stored = MirroredNote {
        credit_note_id: &note.id,
        invoice_id: &note.invoice_id,
        currency: mirrored.amount.currency().code(),
        amount: mirrored.amount.amount(),
        reduced_amount_due: split.reduce_due.amount(),
        out_of_band_amount: split.out_of_band.amount(),
        refund_amount: split.refund.amount(),
        stripe_credit_note_id: mirrored.stripe_credit_note_id,
    };
    let inserted = notes_store::insert_mirrored_note(&mut transaction, stored, now).await?;
    if !inserted {
        transaction.commit().await?;
        return Ok(());
    }
    if split.reduce_due.is_positive() {
        reduce_amount_due(&mut transaction, note, split.reduce_due, now).await?;
    }
    // Revenue down by the part that went through Stripe; the receivable by
    // what Stripe will no longer collect, or owed to the customer outside
    // Stripe when it was already collected. A linked refund posted its own
    // entries when it succeeded, as every refund does.
    let stripe_part = split.credited()?;
    if !stripe_part.is_positive() {
        transaction.commit().await?;
        return Ok(());
    }
    let fact = Fact::CreditNoteIssued(note.id.clone());
    let currency = mirrored.amount.currency();
    let mut entry = TransactionBuilder::new(ledger::transaction_id(&fact), now, fact.as_key())
        .debit(Book::Invoiced.account(currency).id, stripe_part);
    for (book, part) in [
        (Book::Receivable, split.reduce_due),
        (Book::CustomerCredit, split.out_of_band),
    ] {
        if part.is_positive() {
            entry = entry.credit(book.account(currency).id, part);
        }
    }
    ledger::post(&mut transaction, &entry.build()?, now).await?;
    transaction.commit().await?;
    Ok(())
}

/// Lowers what is due on an open invoice and what its payment collects.
async fn reduce_amount_due(
    transaction: &mut sqlx::PgConnection,
    note: &CreditNote,
    amount: Money,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), PaymentsError> {
    notes_store::reduce_amount_due(&mut *transaction, &note.invoice_id, amount.amount(), now)
        .await?;
    let Some(mut payment) =
        store::payment(transaction, PaymentKey::Invoice(&note.invoice_id), true).await?
    else {
        return Ok(());
    };
    if !payment.status.is_collectible() {
        return Ok(());
    }
    let remaining = payment.amount.checked_sub(&amount)?;
    if remaining.is_positive() {
        notes_store::set_payment_amount(&mut *transaction, &payment.id, remaining.amount(), now)
            .await?;
        return Ok(());
    }
    // Credited in full: Stripe marks its invoice paid (by the credit note)
    // and there is nothing left to collect. The payment keeps the amount it
    // was opened for; the receivable is already cleared by the credit note.
    payment.status = PaymentState::Canceled;
    payment.next_retry_at = None;
    payment.updated_at = now;
    store::update_payment(transaction, &payment).await?;
    notes_store::mark_invoice_paid(&mut *transaction, &note.invoice_id, now).await?;
    Ok(())
}

/// Stripe's reason for Tally's; a billing error has no Stripe equivalent.
fn stripe_reason(reason: CreditNoteReason) -> Option<StripeCreditNoteReason> {
    match reason {
        CreditNoteReason::Duplicate => Some(StripeCreditNoteReason::Duplicate),
        CreditNoteReason::Fraudulent => Some(StripeCreditNoteReason::Fraudulent),
        CreditNoteReason::OrderChange => Some(StripeCreditNoteReason::OrderChange),
        CreditNoteReason::ProductUnsatisfactory => {
            Some(StripeCreditNoteReason::ProductUnsatisfactory)
        }
        CreditNoteReason::BillingError
        | CreditNoteReason::Refund
        | CreditNoteReason::Unspecified => None,
    }
}

fn retry(error: PaymentsError) -> HandlerError {
    HandlerError::Retry(error.to_string())
}
