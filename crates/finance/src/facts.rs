//! From bus messages to the domain's finance facts
//! (`tally_domain::finance::facts`): the one place that reads the wire
//! shapes of `InvoiceEvent` and `PaymentEvent`. Everything after this works
//! on domain types.
//!
//! A message that cannot be read (a missing field, an amount that is not a
//! decimal) is [`FinanceServiceError::Invalid`]: the consumer dead-letters it, since retrying
//! cannot make it readable.

use chrono::{DateTime, Utc};
use tally_domain::finance::ExternalId;
use tally_domain::finance::facts::{
    CreditNoteAmounts, CreditNoteIssued, CreditNoteSettlement, CreditSource, FinalizedLine,
    FinalizedLineKind, InvoiceFinalized, InvoiceVoided, PaymentSucceeded, RefundSucceeded,
};
use tally_domain::ids::{CreditNoteId, CustomerId, InvoiceId, MeterCode};
use tally_domain::money::Currency;
use tally_proto::convert;
use tally_runtime::error::FieldViolation;

use crate::error::FinanceServiceError;
use tally_proto::events::{InvoiceEvent, PaymentEvent, invoice_event, payment_event};
use tally_proto::invoicing::{Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, invoice_line};

/// A field the fact needs could not be read.
fn invalid(field: &str, description: impl Into<String>) -> FinanceServiceError {
    FieldViolation::new(field, "invalid_value", description).into()
}

fn parse_id<T, E: std::fmt::Display>(
    text: &str,
    field: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, FinanceServiceError> {
    parse(text).map_err(|error| invalid(field, format!("{text:?}: {error}")))
}

fn currency(code: &str, field: &str) -> Result<Currency, FinanceServiceError> {
    Currency::from_code(code).map_err(|_| invalid(field, format!("{code:?} is not a currency")))
}

/// The invoice an `InvoiceEvent` carries, and when the event happened.
fn invoice_of(event: &InvoiceEvent) -> Result<(&Invoice, DateTime<Utc>), FinanceServiceError> {
    let invoice = event
        .invoice
        .as_ref()
        .ok_or_else(|| invalid("invoice", "is required"))?;
    let occurred_at = convert::required_instant(event.occurred_at.as_ref(), "occurred_at")?;
    Ok((invoice, occurred_at))
}

/// The fact of a `Finalized` invoice event: the invoice's lines as the
/// posting rules see them.
pub fn invoice_finalized(event: &InvoiceEvent) -> Result<InvoiceFinalized, FinanceServiceError> {
    let (invoice, occurred_at) = invoice_of(event)?;
    let currency = currency(&invoice.currency, "invoice.currency")?;
    let lines = invoice
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| finalized_line(line, currency, &format!("invoice.lines[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InvoiceFinalized {
        invoice: parse_id(&invoice.id, "invoice.id", InvoiceId::parse)?,
        customer: parse_id(
            &invoice.customer_id,
            "invoice.customer_id",
            CustomerId::parse,
        )?,
        currency,
        finalized_at: occurred_at,
        lines,
    })
}

fn finalized_line(
    line: &InvoiceLine,
    currency: Currency,
    field: &str,
) -> Result<FinalizedLine, FinanceServiceError> {
    let amount = convert::money_in(line.amount.as_ref(), currency, &format!("{field}.amount"))?;
    let period = || convert::required_period(line.period.as_ref(), &format!("{field}.period"));
    let kind = match InvoiceLineKind::try_from(line.kind) {
        Ok(InvoiceLineKind::Recurring) => FinalizedLineKind::RecurringFee {
            service_period: period()?,
        },
        Ok(InvoiceLineKind::Usage) => {
            let meter = match &line.detail {
                Some(invoice_line::Detail::Usage(usage)) => usage
                    .charge
                    .as_ref()
                    .map(|charge| charge.meter_code.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            FinalizedLineKind::Usage {
                meter: parse_id(
                    &meter,
                    &format!("{field}.usage.charge.meter_code"),
                    MeterCode::parse,
                )?,
                service_period: period()?,
            }
        }
        Ok(InvoiceLineKind::ProrationCredit) => FinalizedLineKind::ProrationCredit {
            service_period: period()?,
        },
        Ok(InvoiceLineKind::ProrationCharge) => FinalizedLineKind::ProrationCharge {
            service_period: period()?,
        },
        Ok(InvoiceLineKind::MinimumTrueUp) => FinalizedLineKind::MinimumTrueUp,
        // Credit grants have no bus events yet, so finance cannot tell a
        // prepaid grant from a promotional one: credits applied draw down the
        // customer credit balance (docs/architecture.md, "Finance").
        Ok(InvoiceLineKind::CreditsApplied) => FinalizedLineKind::CreditsApplied {
            source: CreditSource::CustomerBalance,
        },
        Ok(InvoiceLineKind::Adjustment) => FinalizedLineKind::OneOff,
        _ => {
            return Err(invalid(
                &format!("{field}.kind"),
                format!("unknown invoice line kind {}", line.kind),
            ));
        }
    };
    Ok(FinalizedLine {
        line_id: parse_id(&line.id, &format!("{field}.id"), ExternalId::parse)?,
        kind,
        amount,
    })
}

/// The fact of a `Voided` invoice event.
pub fn invoice_voided(event: &InvoiceEvent) -> Result<InvoiceVoided, FinanceServiceError> {
    let (invoice, occurred_at) = invoice_of(event)?;
    Ok(InvoiceVoided {
        invoice: parse_id(&invoice.id, "invoice.id", InvoiceId::parse)?,
        customer: parse_id(
            &invoice.customer_id,
            "invoice.customer_id",
            CustomerId::parse,
        )?,
        voided_at: occurred_at,
    })
}

/// The fact of a `CreditNoteIssued` invoice event. On an invoice not yet
/// paid the note reduces what is due. On a paid one the money was received:
/// a note with a refund (an amount to refund, or made for a refund) is
/// settled by it (the refund's payment event moves the cash); any other is
/// owed to the customer, credited to their balance or settled outside Tally,
/// so it is booked as customer credit, never against the receivable.
pub fn credit_note_issued(
    event: &InvoiceEvent,
    issued: &invoice_event::CreditNoteIssued,
) -> Result<CreditNoteIssued, FinanceServiceError> {
    let (invoice, occurred_at) = invoice_of(event)?;
    let note = issued
        .credit_note
        .as_ref()
        .ok_or_else(|| invalid("credit_note_issued.credit_note", "is required"))?;
    let currency = currency(&invoice.currency, "invoice.currency")?;
    let total = convert::money_in(note.total.as_ref(), currency, "credit_note.total")?;
    let refunded = match note.refund_amount.as_ref() {
        Some(amount) => {
            convert::money_in(Some(amount), currency, "credit_note.refund_amount")?.is_positive()
        }
        None => false,
    } || !note.refund_id.is_empty();
    let paid = InvoiceStatus::try_from(invoice.status) == Ok(InvoiceStatus::Paid);
    let settlement = match (paid, refunded) {
        (true, true) => CreditNoteSettlement::Refunded,
        (true, false) => CreditNoteSettlement::CustomerCreditBalance,
        (false, _) => CreditNoteSettlement::ReducesAmountDue,
    };
    Ok(CreditNoteIssued {
        credit_note: parse_id(&note.id, "credit_note.id", CreditNoteId::parse)?,
        invoice: parse_id(&invoice.id, "invoice.id", InvoiceId::parse)?,
        customer: parse_id(
            &invoice.customer_id,
            "invoice.customer_id",
            CustomerId::parse,
        )?,
        currency,
        issued_at: convert::optional_instant(note.created_at.as_ref(), "credit_note.created_at")?
            .unwrap_or(occurred_at),
        amounts: CreditNoteAmounts::Total { amount: total },
        settlement,
    })
}

/// The fact of a `Succeeded` payment event.
pub fn payment_succeeded(
    event: &PaymentEvent,
    succeeded: &payment_event::Succeeded,
) -> Result<PaymentSucceeded, FinanceServiceError> {
    let payment = event
        .payment
        .as_ref()
        .ok_or_else(|| invalid("payment", "is required"))?;
    Ok(PaymentSucceeded {
        payment_id: parse_id(&payment.id, "payment.id", ExternalId::parse)?,
        invoice: parse_id(&event.invoice_id, "invoice_id", InvoiceId::parse)?,
        customer: parse_id(&event.customer_id, "customer_id", CustomerId::parse)?,
        amount: convert::money(succeeded.amount.as_ref(), "succeeded.amount")?,
        paid_at: convert::required_instant(event.occurred_at.as_ref(), "occurred_at")?,
    })
}

/// The fact of a `Refunded` payment event.
pub fn refund_succeeded(
    event: &PaymentEvent,
    refunded: &payment_event::Refunded,
) -> Result<RefundSucceeded, FinanceServiceError> {
    let payment = event
        .payment
        .as_ref()
        .ok_or_else(|| invalid("payment", "is required"))?;
    Ok(RefundSucceeded {
        refund_id: parse_id(&refunded.refund_id, "refunded.refund_id", ExternalId::parse)?,
        payment_id: parse_id(&payment.id, "payment.id", ExternalId::parse)?,
        invoice: parse_id(&event.invoice_id, "invoice_id", InvoiceId::parse)?,
        customer: parse_id(&event.customer_id, "customer_id", CustomerId::parse)?,
        amount: convert::money(refunded.amount.as_ref(), "refunded.amount")?,
        refunded_at: convert::required_instant(event.occurred_at.as_ref(), "occurred_at")?,
    })
}
