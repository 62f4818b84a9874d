//! One creditable / refundable balance per invoice, shared by credit notes
//! and refunds (docs/architecture.md, "One balance per
//! invoice").
//!
//! Invoicing owns the balance. Payments makes refunds, but only after
//! invoicing reserved the amount (`InvoiceService.ReserveRefund`, called by
//! payments before Stripe); a credit note is issued only when it fits. Both
//! decisions are taken under the invoice row's lock (`FOR UPDATE`), so two
//! concurrent requests are decided one after the other against the same
//! figures:
//!
//! ```text
//! creditable = total − amount_credited − refunds held (reserved, no note yet)
//! ```
//!
//! A reservation becomes a REFUND credit note when payments reports the
//! refund (`PaymentEvent.Refunded`: the hold is swapped for the note, the
//! balance does not move) and is released when it fails
//! (`PaymentEvent.RefundFailed`). A credit note's own `refund_amount` is a
//! refund of money the note already took from the balance: it only has to
//! fit in what was paid less the refunds made or held.

mod store;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tally_domain::ids::{InvoiceId, RefundId};
use tally_domain::money::Money;
use tally_proto::events::payment_event;
use tally_proto::invoicing::{self as proto, CreditNoteReason, InvoiceStatus};

use self::store::{NewReservation, RefundRow, RefundStatus, RefundTotals, refund_by_id};
use crate::billing::store::{self as billing_store, InvoiceRow};
use crate::error::{InvoicingError, Result, Violations};
use crate::invoices::NoteRequest;
use crate::wire::{money, parse_money};

/// The balance of one invoice, read under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub invoice_id: String,
    pub currency: tally_domain::money::Currency,
    /// What the invoice billed.
    pub total: Decimal,
    /// Paid, as far as `payment-events` told invoicing.
    pub amount_paid: Decimal,
    /// Sum of its credit notes (refund notes included).
    pub amount_credited: Decimal,
    /// Refunds reserved by payments that no credit note carries yet.
    pub refunds_held: Decimal,
    /// Refunds made or being made, whatever carries them.
    pub amount_refunded: Decimal,
}

impl Balance {
    /// Reads the balance of `row` (which the caller holds locked).
    pub async fn load(connection: &mut PgConnection, row: &InvoiceRow) -> Result<Self> {
        let RefundTotals {
            refunds_held,
            amount_refunded,
        } = store::refund_totals(connection, &row.id).await?;
        Ok(Self {
            invoice_id: row.id.clone(),
            currency: row.currency()?,
            total: row.total,
            amount_paid: row.amount_paid,
            amount_credited: row.amount_credited,
            refunds_held,
            amount_refunded,
        })
    }

    /// What a credit note or a refund reservation may still take.
    pub fn creditable(&self) -> Decimal {
        (self.total - self.amount_credited - self.refunds_held).max(Decimal::ZERO)
    }

    /// What was paid and not yet refunded (nor being refunded).
    pub fn refundable(&self) -> Decimal {
        (self.amount_paid - self.amount_refunded).max(Decimal::ZERO)
    }

    fn show(&self, amount: Decimal) -> Money {
        let mut amount = amount;
        if amount.scale() < self.currency.minor_units() {
            amount.rescale(self.currency.minor_units());
        }
        Money::new(amount, self.currency)
    }

    /// The figures, for refusals: `billed 49.00 USD, credited 45.00 USD, …`.
    pub fn describe(&self) -> String {
        format!(
            "billed {}, credited {} (credit notes), refunds reserved {}",
            self.show(self.total),
            self.show(self.amount_credited),
            self.show(self.refunds_held)
        )
    }

    /// The balance on the wire.
    pub fn to_proto(&self) -> proto::InvoiceBalance {
        proto::InvoiceBalance {
            invoice_id: self.invoice_id.clone(),
            total: Some(money(self.total, self.currency)),
            amount_paid: Some(money(self.amount_paid, self.currency)),
            amount_credited: Some(money(self.amount_credited, self.currency)),
            refunds_held: Some(money(self.refunds_held, self.currency)),
            amount_refunded: Some(money(self.amount_refunded, self.currency)),
            creditable: Some(money(self.creditable(), self.currency)),
        }
    }

    /// Refuses `amount` of a credit note when it does not fit.
    pub fn check_credit(&self, amount: Decimal) -> Result<()> {
        if amount > self.creditable() {
            return Err(InvoicingError::FailedPrecondition(format!(
                "credit notes of invoice {} would total more than it billed: {} requested, {} creditable ({})",
                self.invoice_id,
                self.show(amount).amount(),
                self.show(self.creditable()).amount(),
                self.describe()
            )));
        }
        Ok(())
    }

    /// Refuses a credit note's `refund_amount` above what was paid and not
    /// yet refunded.
    pub fn check_note_refund(&self, refund: Decimal) -> Result<()> {
        if refund > self.refundable() {
            return Err(InvoicingError::FailedPrecondition(format!(
                "refund_amount {} exceeds the {} refundable on invoice {} (paid {}, refunded or being refunded {})",
                self.show(refund),
                self.show(self.refundable()),
                self.invoice_id,
                self.show(self.amount_paid),
                self.show(self.amount_refunded)
            )));
        }
        Ok(())
    }
}

impl RefundRow {
    fn wire_status(&self) -> proto::RefundReservationStatus {
        match self.status {
            RefundStatus::Held => proto::RefundReservationStatus::Held,
            RefundStatus::Refunded => proto::RefundReservationStatus::Refunded,
            RefundStatus::Released => proto::RefundReservationStatus::Released,
        }
    }

    fn to_proto(&self, currency: tally_domain::money::Currency) -> proto::RefundReservation {
        proto::RefundReservation {
            refund_id: self.refund_id.clone().unwrap_or_default(),
            invoice_id: self.invoice_id.clone(),
            amount: Some(money(self.amount, currency)),
            status: self.wire_status() as i32,
            credit_note_id: self.credit_note_id.clone().unwrap_or_default(),
        }
    }
}

fn creditable_status(row: &InvoiceRow) -> Result<()> {
    if matches!(
        row.wire_status(),
        InvoiceStatus::Finalized | InvoiceStatus::Paid | InvoiceStatus::Uncollectible
    ) {
        Ok(())
    } else {
        Err(InvoicingError::FailedPrecondition(format!(
            "invoice {} is {:?}; refunds and credit notes need a finalized, paid or uncollectible invoice",
            row.id,
            row.wire_status()
        )))
    }
}

/// Holds `amount` of a credit note's `refund_amount` (the note is already
/// inserted; payments pays it out and names the refund later).
pub(crate) async fn hold_note_refund(
    connection: &mut PgConnection,
    row: &InvoiceRow,
    credit_note_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<()> {
    store::insert_note_refund_hold(
        connection,
        &row.id,
        credit_note_id,
        &row.currency,
        amount,
        now,
    )
    .await
}

crate::feature_service!(
    /// The one creditable / refundable balance of an invoice: reservations
    /// before Stripe, and the refunds payments reports.
    Refunds,
    refunds
);

impl Refunds<'_> {
    /// `ReserveRefund`: holds `amount` of the invoice's balance for a refund
    /// payments is about to make.
    pub(crate) async fn reserve_refund(
        &self,
        request: proto::ReserveRefundRequest,
    ) -> Result<proto::ReserveRefundResponse> {
        let mut violations = Violations::default();
        violations.id::<RefundId>(&request.refund_id, "refund_id");
        violations.id::<InvoiceId>(&request.invoice_id, "invoice_id");
        if request.amount.is_none() {
            violations.add("amount", "is required");
        }
        violations.into_result()?;
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        // The invoice row's lock serializes every decision on its balance.
        let row = billing_store::load(&mut transaction, &request.invoice_id, true).await?;
        let currency = row.currency()?;
        let amount = parse_money(request.amount.as_ref(), currency, "amount")?;
        if !amount.is_positive() || !amount.is_rounded() {
            return Err(InvoicingError::invalid(
                "amount",
                format!("must be positive, in whole minor units (got {amount})"),
            ));
        }
        if let Some(existing) = refund_by_id(&mut transaction, &request.refund_id).await? {
            if existing.invoice_id != row.id || existing.amount != amount.amount() {
                return Err(InvoicingError::AlreadyExists(format!(
                    "refund {} is already reserved for {} on invoice {}",
                    request.refund_id,
                    Money::new(existing.amount, currency),
                    existing.invoice_id
                )));
            }
            let balance = Balance::load(&mut transaction, &row).await?;
            transaction.commit().await?;
            return Ok(proto::ReserveRefundResponse {
                reservation: Some(existing.to_proto(currency)),
                balance: Some(balance.to_proto()),
            });
        }
        creditable_status(&row)?;
        let balance = Balance::load(&mut transaction, &row).await?;
        if amount.amount() > balance.creditable() {
            return Err(InvoicingError::FailedPrecondition(format!(
                "refund {} of {} exceeds the {} still creditable on invoice {} ({})",
                request.refund_id,
                balance.show(amount.amount()),
                balance.show(balance.creditable()),
                row.id,
                balance.describe()
            )));
        }
        let reservation = NewReservation {
            invoice_id: &row.id,
            refund_id: &request.refund_id,
            payment_id: &request.payment_id,
            currency: &row.currency,
            amount: amount.amount(),
        };
        let inserted = store::insert_reservation(&mut transaction, reservation, now).await?;
        if !inserted {
            // Reserved concurrently on another invoice (this one's lock does
            // not cover it).
            return Err(InvoicingError::AlreadyExists(format!(
                "refund {} is already reserved on another invoice",
                request.refund_id
            )));
        }
        let balance = Balance::load(&mut transaction, &row).await?;
        let reservation = refund_by_id(&mut transaction, &request.refund_id)
            .await?
            .ok_or_else(|| InvoicingError::internal("the reservation just written is missing"))?;
        transaction.commit().await?;
        tracing::info!(refund_id = %request.refund_id, invoice_id = %row.id, amount = %amount, "refund reserved");
        Ok(proto::ReserveRefundResponse {
            reservation: Some(reservation.to_proto(currency)),
            balance: Some(balance.to_proto()),
        })
    }

    /// `PaymentEvent.Refunded` on the locked `row`: a reservation becomes its
    /// REFUND credit note; a credit note's refund is linked to the note; a
    /// refund nobody reserved (made in the Stripe dashboard) gets a note for
    /// what remains creditable, never more.
    pub(crate) async fn apply_refunded(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        refunded: &payment_event::Refunded,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if refunded.refund_id.is_empty() {
            return Err(InvoicingError::invalid("refunded.refund_id", "is required"));
        }
        let currency = row.currency()?;
        let amount = parse_money(refunded.amount.as_ref(), currency, "refunded.amount")?;
        if !amount.is_positive() {
            return Err(InvoicingError::invalid(
                "refunded.amount",
                format!("must be positive (got {amount})"),
            ));
        }
        if !refunded.credit_note_id.is_empty() {
            return self.link_note_refund(connection, row, refunded, now).await;
        }
        let existing = refund_by_id(&mut *connection, &refunded.refund_id).await?;
        match existing.as_ref().map(|refund| refund.status) {
            Some(RefundStatus::Refunded) => return Ok(()),
            Some(RefundStatus::Held) => {
                let held = existing
                    .as_ref()
                    .map(|refund| refund.amount)
                    .unwrap_or_default();
                if held != amount.amount() {
                    tracing::warn!(refund_id = %refunded.refund_id, reserved = %held, refunded = %amount, "a refund differs from its reservation; the reservation is credited");
                }
                // Swap the hold for its note: the balance does not move.
                self.set_refunded(connection, &refunded.refund_id, now)
                    .await?;
                let note = self
                    .refund_note(connection, row, &refunded.refund_id, held, now)
                    .await?;
                self.attach_note(connection, &refunded.refund_id, &note.id, now)
                    .await?;
                return Ok(());
            }
            Some(RefundStatus::Released) | None => {}
        }
        // Nobody reserved it: a refund made outside Tally (the Stripe
        // dashboard), or before reservations existed, or one whose
        // reservation was released. The money has left; record it, and credit
        // no more than remains.
        let noted = store::credit_note_names_refund(&mut *connection, &refunded.refund_id).await?;
        if noted {
            return Ok(());
        }
        if existing.is_some() {
            self.set_refunded(connection, &refunded.refund_id, now)
                .await?;
        } else {
            store::insert_unreserved_refund(
                &mut *connection,
                &row.id,
                &refunded.refund_id,
                &row.currency,
                amount.amount(),
                now,
            )
            .await?;
        }
        let balance = Balance::load(&mut *connection, row).await?;
        let credited = amount.amount().min(balance.creditable());
        if credited < amount.amount() {
            tracing::error!(
                refund_id = %refunded.refund_id,
                invoice_id = %row.id,
                refunded = %amount,
                credited = %balance.show(credited),
                "a refund made outside Tally exceeds what remained creditable on the invoice; its credit note covers only what remained ({})",
                balance.describe()
            );
            self.metrics.refund_beyond_balance();
        }
        if credited > Decimal::ZERO {
            let note = self
                .refund_note(connection, row, &refunded.refund_id, credited, now)
                .await?;
            self.attach_note(connection, &refunded.refund_id, &note.id, now)
                .await?;
        }
        Ok(())
    }

    /// `PaymentEvent.RefundFailed` on the locked `row`: what was held for it
    /// is free again (a credit note's refund: the note stands, its refund
    /// part was credited outside Stripe by payments).
    pub(crate) async fn apply_refund_failed(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        failed: &payment_event::RefundFailed,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if failed.refund_id.is_empty() {
            return Err(InvoicingError::invalid(
                "refund_failed.refund_id",
                "is required",
            ));
        }
        let released = if failed.credit_note_id.is_empty() {
            store::release_reservation(&mut *connection, &failed.refund_id, &row.id, now).await?
        } else {
            store::release_note_refund(
                &mut *connection,
                &failed.refund_id,
                &failed.credit_note_id,
                &row.id,
                now,
            )
            .await?
        };
        if released > 0 {
            tracing::warn!(refund_id = %failed.refund_id, invoice_id = %row.id, credit_note_id = %failed.credit_note_id, reason = %failed.failure_reason, "refund failed; its reservation is released");
        }
        Ok(())
    }

    async fn link_note_refund(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        refunded: &payment_event::Refunded,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let linked = store::link_note_refund(
            &mut *connection,
            &refunded.refund_id,
            &refunded.credit_note_id,
            &row.id,
            now,
        )
        .await?;
        if linked == 0 {
            return Err(InvoicingError::invalid(
                "refunded.credit_note_id",
                format!(
                    "credit note {} of invoice {} asked for no refund, or for another one than {}",
                    refunded.credit_note_id, row.id, refunded.refund_id
                ),
            ));
        }
        Ok(())
    }

    async fn set_refunded(
        &self,
        connection: &mut PgConnection,
        refund_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        store::mark_refunded(connection, refund_id, now).await
    }

    async fn attach_note(
        &self,
        connection: &mut PgConnection,
        refund_id: &str,
        credit_note_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        store::attach_credit_note(connection, refund_id, credit_note_id, now).await
    }

    async fn refund_note(
        &self,
        connection: &mut PgConnection,
        row: &InvoiceRow,
        refund_id: &str,
        amount: Decimal,
        now: DateTime<Utc>,
    ) -> Result<proto::CreditNote> {
        let currency = row.currency()?;
        self.invoices()
            .issue_credit_note(
                connection,
                row,
                NoteRequest {
                    reason: CreditNoteReason::Refund,
                    memo: format!("refund {refund_id}"),
                    lines: Some(vec![proto::CreditNoteLine {
                        invoice_line_id: String::new(),
                        description: format!("Refund {refund_id}"),
                        amount: Some(money(amount, currency)),
                    }]),
                    credit_to_balance: false,
                    refund_id: Some(refund_id.to_owned()),
                },
                now,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;
    use tally_domain::money::Currency;

    use super::*;

    fn balance(total: Decimal, paid: Decimal, credited: Decimal, held: Decimal) -> Balance {
        Balance {
            invoice_id: "inv_1".into(),
            currency: Currency::USD,
            total,
            amount_paid: paid,
            amount_credited: credited,
            refunds_held: held,
            amount_refunded: held,
        }
    }

    #[test]
    fn credit_notes_and_held_refunds_draw_on_one_balance() {
        // (total, credited, held) → creditable
        let table = [
            (dec!(49.00), dec!(0), dec!(0), dec!(49.00)),
            (dec!(49.00), dec!(45.00), dec!(0), dec!(4.00)),
            (dec!(49.00), dec!(0), dec!(46.00), dec!(3.00)),
            (dec!(49.00), dec!(45.00), dec!(4.00), dec!(0)),
            (dec!(49.00), dec!(49.00), dec!(0), dec!(0)),
        ];
        for (total, credited, held, creditable) in table {
            let balance = balance(total, total, credited, held);
            assert_eq!(balance.creditable(), creditable, "{balance:?}");
            assert!(balance.check_credit(creditable).is_ok());
            assert!(balance.check_credit(creditable + dec!(0.01)).is_err());
        }
    }

    #[test]
    fn a_refusal_names_the_figures() {
        let error = balance(dec!(49.00), dec!(49.00), dec!(45.00), dec!(0))
            .check_credit(dec!(46.00))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "credit notes of invoice inv_1 would total more than it billed: 46.00 requested, \
             4.00 creditable (billed 49.00 USD, credited 45.00 USD (credit notes), refunds reserved 0.00 USD)"
        );
    }

    #[test]
    fn a_note_refunds_no_more_than_was_paid_and_not_refunded() {
        let balance = balance(dec!(49.00), dec!(49.00), dec!(0), dec!(20.00));
        assert_eq!(balance.refundable(), dec!(29.00));
        assert!(balance.check_note_refund(dec!(29.00)).is_ok());
        let error = balance.check_note_refund(dec!(29.01)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("refund_amount 29.01 USD exceeds the 29.00 USD refundable")
        );
    }
}
