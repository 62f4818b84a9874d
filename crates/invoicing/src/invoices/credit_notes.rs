//! Credit notes: issued on finalized invoices within the invoice's one
//! creditable balance (see [`crate::refunds`]), listed per invoice or customer.

use chrono::{DateTime, Utc};
use prost::Message as _;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::ids::{CreditNoteId, InvoiceId};
use tally_domain::money::Money;
use tally_proto::events::invoice_event;
use tally_proto::invoicing::{
    self as proto, CreditNoteReason, InvoiceStatus, create_credit_note_request,
};

use super::Invoices;
use super::mapping as note_mapping;
use super::store as invoice_store;
use crate::billing::store::{self, InvoiceRow};
use crate::error::{InvoicingError, Result, Violations};
use crate::idempotency::{self, request_hash};
use crate::refunds::{self, Balance};
use crate::wire::{money, parse_money, timestamp};
use crate::{audit, credits, paging};
use serde_json::json;

/// One credit note to issue.
#[derive(Debug)]
pub struct NoteRequest {
    pub reason: CreditNoteReason,
    pub memo: String,
    /// `None`: everything creditable.
    pub lines: Option<Vec<proto::CreditNoteLine>>,
    pub credit_to_balance: bool,
    pub refund_id: Option<String>,
}

impl Invoices<'_> {
    /// Issues a credit note against a locked invoice row.
    pub(crate) async fn issue_credit_note(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        note: NoteRequest,
        now: DateTime<Utc>,
    ) -> Result<proto::CreditNote> {
        self.issue_credit_note_refunding(connection, row, note, None, now)
            .await
    }

    /// Issues a credit note against a locked invoice row, part of which
    /// (`refund_amount`) payments refunds to the customer's payment method.
    /// The note takes its total from the invoice's one balance (what credit
    /// notes and held refunds leave: `refunds::Balance`).
    // Longer than the 150-line gate; split it when next changed (issue 15).
    #[allow(clippy::too_many_lines)]
    pub(crate) async fn issue_credit_note_refunding(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        note: NoteRequest,
        refund_amount: Option<&tally_proto::common::Money>,
        now: DateTime<Utc>,
    ) -> Result<proto::CreditNote> {
        if !matches!(
            row.wire_status(),
            InvoiceStatus::Finalized | InvoiceStatus::Paid | InvoiceStatus::Uncollectible
        ) {
            return Err(InvoicingError::FailedPrecondition(format!(
                "invoice {} is {:?}; credit notes need a finalized, paid or uncollectible invoice",
                row.id,
                row.wire_status()
            )));
        }
        let currency = row.currency()?;
        let balance = Balance::load(&mut *connection, row).await?;
        let creditable = balance.creditable();
        let earlier: Vec<proto::CreditNote> =
            invoice_store::credit_notes_of_invoice(&mut *connection, &row.id)
                .await?
                .iter()
                .map(note_mapping::to_wire)
                .collect();
        let lines = match note.lines {
            None => {
                if creditable <= Decimal::ZERO {
                    return Err(InvoicingError::FailedPrecondition(format!(
                        "nothing remains creditable on invoice {}",
                        row.id
                    )));
                }
                vec![proto::CreditNoteLine {
                    invoice_line_id: String::new(),
                    description: "Credit of the remaining invoice amount".into(),
                    amount: Some(money(creditable, currency)),
                }]
            }
            Some(lines) => {
                if lines.is_empty() {
                    return Err(InvoicingError::invalid(
                        "partial.lines",
                        "must name at least one line",
                    ));
                }
                let invoice_lines =
                    store::lines::wire_lines(&mut *connection, &row.id, currency).await?;
                for (index, line) in lines.iter().enumerate() {
                    let field = format!("partial.lines[{index}]");
                    let amount =
                        parse_money(line.amount.as_ref(), currency, &format!("{field}.amount"))?;
                    if !amount.is_positive() || !amount.is_rounded() {
                        return Err(InvoicingError::invalid(
                            format!("{field}.amount"),
                            "must be positive, in whole minor units",
                        ));
                    }
                    if line.invoice_line_id.is_empty() {
                        continue;
                    }
                    let Some(billed) = invoice_lines
                        .iter()
                        .find(|billed| billed.id == line.invoice_line_id)
                    else {
                        return Err(InvoicingError::invalid(
                            format!("{field}.invoice_line_id"),
                            format!(
                                "{:?} is not a line of invoice {}",
                                line.invoice_line_id, row.id
                            ),
                        ));
                    };
                    let billed_amount = billed
                        .amount
                        .as_ref()
                        .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
                        .unwrap_or(Decimal::ZERO);
                    let credited: Decimal = earlier
                        .iter()
                        .flat_map(|note| &note.lines)
                        .chain(lines[..index].iter())
                        .filter(|earlier| earlier.invoice_line_id == line.invoice_line_id)
                        .filter_map(|earlier| {
                            earlier
                                .amount
                                .as_ref()
                                .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
                        })
                        .sum();
                    if amount.amount() > billed_amount - credited {
                        return Err(InvoicingError::FailedPrecondition(format!(
                            "{field}: {} is more than the {} still creditable on line {}",
                            amount.amount(),
                            billed_amount - credited,
                            line.invoice_line_id
                        )));
                    }
                }
                lines
            }
        };
        let total: Decimal = lines
            .iter()
            .filter_map(|line| {
                line.amount
                    .as_ref()
                    .and_then(|value| tally_proto::convert::decimal(&value.amount).ok())
            })
            .sum();
        balance.check_credit(total)?;
        let refund = match refund_amount {
            None => Decimal::ZERO,
            Some(value) => {
                let refund = parse_money(Some(value), currency, "refund_amount")?;
                if !refund.is_positive() || !refund.is_rounded() {
                    return Err(InvoicingError::invalid(
                        "refund_amount",
                        "must be positive, in whole minor units",
                    ));
                }
                if refund.amount() > total {
                    return Err(InvoicingError::invalid(
                        "refund_amount",
                        format!(
                            "{refund} is more than the note's total {}",
                            Money::new(total, currency)
                        ),
                    ));
                }
                balance.check_note_refund(refund.amount())?;
                refund.amount()
            }
        };
        let id = String::from(self.ids.mint::<CreditNoteId>());
        let number =
            store::next_number(&mut *connection, &self.config.credit_note_number_prefix).await?;
        let credited_to_balance =
            note.credit_to_balance && row.wire_status() == InvoiceStatus::Paid && total > refund;
        let grant = if credited_to_balance {
            Some(
                credits::insert_grant(
                    &mut *connection,
                    &*self.ids,
                    &row.customer_id,
                    false,
                    Money::new(total - refund, currency),
                    0,
                    now,
                    None,
                    &format!("credit note {number}"),
                    &id,
                    now,
                )
                .await?,
            )
        } else {
            None
        };
        let credit_note = proto::CreditNote {
            id: id.clone(),
            number,
            invoice_id: row.id.clone(),
            customer_id: row.customer_id.clone(),
            reason: note.reason as i32,
            memo: note.memo,
            lines,
            total: Some(money(total, currency)),
            credited_to_balance,
            refund_id: note.refund_id.clone().unwrap_or_default(),
            created_at: Some(timestamp(now)),
            refund_amount: (refund > Decimal::ZERO).then(|| money(refund, currency)),
        };
        invoice_store::insert_credit_note(
            &mut *connection,
            &note_mapping::from_wire(&credit_note)?,
        )
        .await?;
        invoice_store::add_amount_credited(&mut *connection, &row.id, total, now).await?;
        if refund > Decimal::ZERO {
            refunds::hold_note_refund(&mut *connection, row, &id, refund, now).await?;
        }
        let grant = match grant {
            Some(grant) => Some(grant.to_proto(now)?),
            None => None,
        };
        self.publish_invoice(
            &mut *connection,
            &row.id,
            now,
            invoice_event::Kind::CreditNoteIssued(invoice_event::CreditNoteIssued {
                credit_note: Some(credit_note.clone()),
                credit_grant: grant,
            }),
        )
        .await?;
        Ok(credit_note)
    }

    pub(super) async fn create_credit_note(
        &self,
        request: proto::CreateCreditNoteRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::CreateCreditNoteResponse> {
        const METHOD: &str = "CreateCreditNote";
        let mut violations = Violations::default();
        idempotency::check_key(&request.idempotency_key, &mut violations);
        violations.id::<InvoiceId>(&request.invoice_id, "invoice_id");
        let reason = match CreditNoteReason::try_from(request.reason) {
            Ok(CreditNoteReason::Unspecified) | Err(_) => {
                violations.add("reason", "is required");
                CreditNoteReason::Unspecified
            }
            Ok(reason) => reason,
        };
        let lines = match &request.amount {
            Some(create_credit_note_request::Amount::Full(true)) => None,
            Some(create_credit_note_request::Amount::Partial(partial)) => {
                Some(partial.lines.clone())
            }
            _ => {
                violations.add("amount", "full (true) or partial is required");
                None
            }
        };
        violations.into_result()?;
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let note_id = match idem.claim(&mut transaction).await? {
            Some(id) => id,
            None => {
                let row = store::load(&mut transaction, &request.invoice_id, true).await?;
                let note = self
                    .issue_credit_note_refunding(
                        &mut transaction,
                        &row,
                        NoteRequest {
                            reason,
                            memo: request.memo.clone(),
                            lines,
                            credit_to_balance: request.credit_to_balance,
                            refund_id: None,
                        },
                        request.refund_amount.as_ref(),
                        now,
                    )
                    .await?;
                idem.record(&mut transaction, &note.id, now).await?;
                let credited = store::load(&mut transaction, &row.id, false).await?;
                let entry = self
                    .audit_entry(now, "credit_note.issued", ("credit_note", &note.id), origin)
                    .reason(audit::reason_name(note.reason))
                    .comment(note.memo.clone())
                    .before(json!({ "invoice": audit::invoice_state(&row) }))
                    .after(json!({
                        "credit_note": audit::credit_note_state(&note),
                        "invoice": audit::invoice_state(&credited),
                    }));
                self.audit(&mut transaction, entry).await?;
                note.id
            }
        };
        let credit_note = invoice_store::credit_note(&mut transaction, &note_id).await?;
        let row = store::load(&mut transaction, &credit_note.invoice_id, false).await?;
        let invoice = store::to_proto(&mut transaction, &row, true).await?;
        transaction.commit().await?;
        Ok(proto::CreateCreditNoteResponse {
            credit_note: Some(note_mapping::to_wire(&credit_note)),
            invoice: Some(invoice),
        })
    }

    pub(super) async fn list_credit_notes(
        &self,
        request: proto::ListCreditNotesRequest,
    ) -> Result<proto::ListCreditNotesResponse> {
        let limit = paging::page_size(request.page_size);
        let before = paging::after(&request.page_token, "credit_notes")?;
        let rows = invoice_store::credit_notes_page(
            &self.pool,
            &request.invoice_id,
            &request.customer_id,
            before.as_deref(),
            limit + 1,
        )
        .await?;
        let (rows, next_page_token) = paging::finish(rows, limit, "credit_notes", |row| &row.id);
        Ok(proto::ListCreditNotesResponse {
            credit_notes: rows.iter().map(note_mapping::to_wire).collect(),
            next_page_token,
        })
    }
}
