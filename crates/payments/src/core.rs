//! What every path that changes a payment shares (the invoice consumer, the
//! webhooks, dunning, refunds): the dependencies, the dunning schedule, and
//! the state changes themselves — each applied to a row locked `FOR UPDATE`
//! inside the caller's transaction, together with its ledger transaction and
//! its `PaymentEvent` in the outbox.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};
use tally_domain::ledger::Fact;
use tally_domain::money::Money;
use tally_proto::events::payment_event::{self, Kind};
use tally_runtime::SharedClock;
use tally_runtime::config::PaymentsConfig;
use tally_runtime::ids::SharedIdGenerator;

use crate::error::PaymentsError;
use crate::invoicing::InvoicingPeer;
use crate::ledger::{self, Book};
use crate::store::refunds::{self, SucceededRefund};
use crate::store::{self, Attempt, PaymentRow, PaymentState};
use crate::stripe::{RemoteInvoiceStatus, Stripe, StripeError};
use crate::wire::{money, timestamp};
use crate::{events, metrics};

/// Sets `payments.invoices.status` (kept here for the callers of `core`).
pub use crate::store::set_invoice_status;

/// The dunning schedule: retries at days after the first failure, then the
/// final step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningPolicy {
    /// Days after the first failure of each retry, increasing.
    pub retry_days: Vec<u32>,
    /// Days after the first failure of the final step.
    pub final_after_days: u32,
    /// Whether the final step asks for the subscription to be canceled.
    pub cancel_subscription: bool,
}

/// What a dunning step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DunningAction {
    /// Charge again.
    Retry,
    /// Mark the invoice uncollectible (and maybe cancel the subscription).
    GiveUp,
}

impl DunningAction {
    /// The name in `PaymentEvent.DunningStep.action`.
    pub fn name(self) -> &'static str {
        match self {
            DunningAction::Retry => "retry",
            DunningAction::GiveUp => "mark_uncollectible",
        }
    }
}

impl DunningPolicy {
    /// The schedule of `config`.
    pub fn from_config(config: &PaymentsConfig) -> Self {
        Self {
            retry_days: config.dunning_retry_days.clone(),
            final_after_days: config.dunning_final_after_days,
            cancel_subscription: config.dunning_cancel_subscription,
        }
    }

    /// The step after `steps_taken` steps, and when it is due.
    pub fn step_after(
        &self,
        first_failed_at: DateTime<Utc>,
        steps_taken: u32,
    ) -> Option<(DunningAction, DateTime<Utc>)> {
        let index = usize::try_from(steps_taken).ok()?;
        match self.retry_days.get(index) {
            Some(days) => Some((
                DunningAction::Retry,
                first_failed_at + Duration::days(i64::from(*days)),
            )),
            None if index == self.retry_days.len() => Some((
                DunningAction::GiveUp,
                first_failed_at + Duration::days(i64::from(self.final_after_days)),
            )),
            None => None,
        }
    }
}

/// What payments is built from.
#[derive(Debug, Clone)]
pub struct Core {
    /// The database (schema `payments`).
    pub pool: PgPool,
    /// The Stripe adapter.
    pub stripe: Stripe,
    /// The service clock.
    pub clock: SharedClock,
    /// Id minting.
    pub ids: SharedIdGenerator,
    /// The dunning schedule.
    pub dunning: DunningPolicy,
    /// Invoicing, which reserves refunds on each invoice's one balance.
    pub invoicing: InvoicingPeer,
}

/// How one collection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Collected.
    Paid {
        /// `pi_…`.
        payment_intent: Option<String>,
        /// `ch_…`.
        charge: Option<String>,
    },
    /// Not collected.
    Failed {
        /// Decline or error code.
        code: String,
        /// Stripe's message.
        message: String,
        /// `pi_…`.
        payment_intent: Option<String>,
        /// `ch_…`.
        charge: Option<String>,
    },
}

impl Core {
    /// Charges the invoice (attempt `number`, part of the idempotency key).
    /// A decline or refusal is a failed attempt; only an unreachable Stripe
    /// is an error (try again later with the same number).
    pub async fn attempt_payment(
        &self,
        tally_invoice_id: &str,
        stripe_invoice_id: &str,
        number: u32,
    ) -> Result<AttemptOutcome, PaymentsError> {
        let outcome = match self
            .stripe
            .pay_invoice(tally_invoice_id, stripe_invoice_id, number)
            .await
        {
            Ok(invoice) if invoice.status == RemoteInvoiceStatus::Paid => AttemptOutcome::Paid {
                payment_intent: invoice.payment_intent,
                charge: invoice.charge,
            },
            Ok(invoice) => AttemptOutcome::Failed {
                code: format!("invoice_{}", invoice.status.as_str()),
                message: "Stripe did not collect the invoice".into(),
                payment_intent: invoice.payment_intent,
                charge: invoice.charge,
            },
            Err(error) if error.is_transient() => return Err(error.into()),
            Err(error) => failed_attempt(&error),
        };
        Ok(outcome)
    }

    /// Records attempt `number` of `payment` and its consequences: success,
    /// or failure with the next dunning step scheduled.
    pub async fn apply_attempt(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        number: u32,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), PaymentsError> {
        let (succeeded, code, message, payment_intent, charge) = match outcome {
            AttemptOutcome::Paid {
                payment_intent,
                charge,
            } => (true, "", "", payment_intent, charge),
            AttemptOutcome::Failed {
                code,
                message,
                payment_intent,
                charge,
            } => (
                false,
                code.as_str(),
                message.as_str(),
                payment_intent,
                charge,
            ),
        };
        store::insert_attempt(
            connection,
            &payment.id,
            &Attempt {
                number,
                attempted_at: now,
                succeeded,
                failure_code: code.to_owned(),
                failure_message: message.to_owned(),
                stripe_payment_intent_id: payment_intent.clone().unwrap_or_default(),
                stripe_charge_id: charge.clone().unwrap_or_default(),
            },
        )
        .await?;
        payment.attempt_count = payment.attempt_count.max(number);
        if payment_intent.is_some() {
            payment.stripe_payment_intent_id = payment_intent.clone();
        }
        if succeeded {
            let event_id = format!("pevt_{}_attempt{number}_succeeded", payment.id);
            self.mark_succeeded(connection, payment, charge.clone(), &event_id, now)
                .await?;
            return Ok(());
        }
        if !payment.status.is_collectible() {
            store::update_payment(connection, payment).await?;
            return Ok(());
        }
        metrics::payment_failed(code);
        payment.status = PaymentState::Failed;
        let first_failed_at = *payment.first_failed_at.get_or_insert(now);
        payment.next_retry_at = self
            .dunning
            .step_after(first_failed_at, payment.dunning_step)
            .map(|(_, due)| due);
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        let next_attempt_at = self
            .dunning
            .step_after(first_failed_at, payment.dunning_step)
            .filter(|(action, _)| *action == DunningAction::Retry)
            .map(|(_, due)| timestamp(due));
        events::publish(
            connection,
            format!("pevt_{}_attempt{number}_failed", payment.id),
            payment,
            now,
            Kind::Failed(payment_event::Failed {
                amount: Some(money(&payment.amount)),
                attempt_number: number,
                failure_code: code.to_owned(),
                failure_message: message.to_owned(),
                next_attempt_at,
                stripe_payment_intent_id: payment_intent.clone().unwrap_or_default(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Marks a collectible payment succeeded: the cash entry, the invoice
    /// paid, `PaymentEvent.Succeeded`. Returns `false` (and changes nothing)
    /// when it was no longer collectible — a late or repeated success.
    pub async fn mark_succeeded(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        charge: Option<String>,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PaymentsError> {
        if !payment.status.is_collectible() {
            return Ok(false);
        }
        if charge.is_some() {
            payment.stripe_charge_id = charge;
        }
        let kind = Kind::Succeeded(payment_event::Succeeded {
            amount: Some(money(&payment.amount)),
            attempt_number: payment.attempt_count,
            stripe_payment_intent_id: payment.stripe_payment_intent_id.clone().unwrap_or_default(),
            stripe_charge_id: payment.stripe_charge_id.clone().unwrap_or_default(),
            stripe_invoice_id: payment.stripe_invoice_id.clone().unwrap_or_default(),
        });
        let closing = Closing {
            state: PaymentState::Succeeded,
            invoice_status: "paid",
            fact: Fact::PaymentCollected,
            debit: Book::StripeBalance,
        };
        self.close(connection, payment, closing, event_id, now, kind)
            .await?;
        Ok(true)
    }

    /// Writes off a collectible payment: bad debt, invoice uncollectible,
    /// `PaymentEvent.Uncollectible`. `false` when no longer collectible.
    pub async fn mark_uncollectible(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PaymentsError> {
        if !payment.status.is_collectible() {
            return Ok(false);
        }
        let kind = Kind::Uncollectible(payment_event::Uncollectible {
            amount: Some(money(&payment.amount)),
            attempts: payment.attempt_count,
            cancel_subscription: self.dunning.cancel_subscription,
        });
        let closing = Closing {
            state: PaymentState::Uncollectible,
            invoice_status: "uncollectible",
            fact: Fact::PaymentWrittenOff,
            debit: Book::BadDebt,
        };
        self.close(connection, payment, closing, event_id, now, kind)
            .await?;
        Ok(true)
    }

    /// Ends collection: the payment's final state, the invoice's, the
    /// receivable moved to `closing.debit`, and the event.
    async fn close(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        closing: Closing,
        event_id: &str,
        now: DateTime<Utc>,
        kind: Kind,
    ) -> Result<(), PaymentsError> {
        payment.status = closing.state;
        payment.next_retry_at = None;
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        set_invoice_status(connection, &payment.invoice_id, closing.invoice_status, now).await?;
        let transfer = ledger::transfer(
            &(closing.fact)(payment.id.clone()),
            now,
            closing.debit,
            Book::Receivable,
            payment.amount,
        )?;
        ledger::post(connection, &transfer, now).await?;
        events::publish(connection, event_id.to_owned(), payment, now, kind).await?;
        Ok(())
    }

    /// Records that refund `refund_id` of `amount` succeeded in Stripe as
    /// `stripe_refund_id`: the refunded total, the status, the ledger and
    /// `PaymentEvent.Refunded`. `false` when it was already recorded.
    pub async fn record_refund_succeeded(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        refund_id: &str,
        stripe_refund_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PaymentsError> {
        let row =
            refunds::mark_refund_succeeded(&mut *connection, refund_id, stripe_refund_id, now)
                .await?;
        let Some(SucceededRefund {
            amount,
            reason,
            credit_note_id,
        }) = row
        else {
            return Ok(false);
        };
        let amount = Money::new(amount, payment.amount.currency());
        payment.amount_refunded = payment.amount_refunded.checked_add(&amount)?;
        if payment.status != PaymentState::Disputed {
            payment.status = if payment.amount_refunded == payment.amount {
                PaymentState::Refunded
            } else {
                PaymentState::PartiallyRefunded
            };
        }
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        let refunded = ledger::transfer(
            &Fact::RefundSucceeded(refund_id.to_owned()),
            now,
            Book::Refunds,
            Book::StripeBalance,
            amount,
        )?;
        ledger::post(connection, &refunded, now).await?;
        events::publish(
            connection,
            format!("pevt_{refund_id}_refunded"),
            payment,
            now,
            Kind::Refunded(payment_event::Refunded {
                refund_id: refund_id.to_owned(),
                amount: Some(money(&amount)),
                total_refunded: Some(money(&payment.amount_refunded)),
                reason: store::refund_reason_from_name(&reason).into(),
                stripe_refund_id: stripe_refund_id.to_owned(),
                credit_note_id: credit_note_id.unwrap_or_default(),
            }),
        )
        .await?;
        Ok(true)
    }

    /// Marks a pending refund failed (`reason`, and `failure_code` when it
    /// failed before Stripe was asked) and publishes
    /// `PaymentEvent.RefundFailed`, so invoicing releases what it reserved
    /// for it (not when invoicing refused it). Nothing happens to a refund
    /// that is no longer pending. The webhook path should call it too when
    /// Stripe fails a refund that was pending.
    pub async fn record_refund_failed(
        &self,
        connection: &mut PgConnection,
        payment: &PaymentRow,
        refund_id: &str,
        failure: RefundFailure<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, PaymentsError> {
        let row = refunds::mark_refund_failed(
            &mut *connection,
            refund_id,
            (failure.reason, failure.code, failure.stripe_refund_id),
            now,
        )
        .await?;
        let Some((amount, credit_note_id)) = row else {
            return Ok(false);
        };
        if failure.code == EXCEEDS_INVOICE_BALANCE {
            // Invoicing refused it: it holds nothing to release.
            return Ok(true);
        }
        events::publish(
            connection,
            format!("pevt_{refund_id}_failed"),
            payment,
            now,
            Kind::RefundFailed(payment_event::RefundFailed {
                refund_id: refund_id.to_owned(),
                amount: Some(money(&Money::new(amount, payment.amount.currency()))),
                failure_reason: failure.reason.to_owned(),
                credit_note_id: credit_note_id.unwrap_or_default(),
            }),
        )
        .await?;
        Ok(true)
    }
}

/// Why a refund failed.
#[derive(Debug, Clone, Copy)]
pub struct RefundFailure<'a> {
    /// Stripe's message, or why payments did not ask Stripe.
    pub reason: &'a str,
    /// Empty when Stripe refused; `exceeds_invoice_balance` when invoicing
    /// refused the reservation (a replay of the key is refused again).
    pub code: &'a str,
    /// The Stripe refund, when Stripe made one that failed.
    pub stripe_refund_id: Option<&'a str>,
}

/// `payments.refunds.failure_code` of a refund invoicing refused.
pub const EXCEEDS_INVOICE_BALANCE: &str = "exceeds_invoice_balance";

/// How collection of a payment ends.
struct Closing {
    state: PaymentState,
    invoice_status: &'static str,
    /// The ledger fact of the closing transfer, from the payment's id.
    fact: fn(String) -> Fact,
    debit: Book,
}

/// A refused attempt as an outcome.
pub fn failed_attempt(error: &StripeError) -> AttemptOutcome {
    let (payment_intent, charge) = match error {
        StripeError::Declined {
            payment_intent,
            charge,
            ..
        } => (payment_intent.clone(), charge.clone()),
        _ => (None, None),
    };
    AttemptOutcome::Failed {
        code: error.failure_code(),
        message: error.failure_message(),
        payment_intent,
        charge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_schedule_counts_from_the_first_failure() {
        let policy = DunningPolicy {
            retry_days: vec![1, 3],
            final_after_days: 7,
            cancel_subscription: true,
        };
        let failed = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let day = |days| failed + Duration::days(days);
        assert_eq!(
            policy.step_after(failed, 0),
            Some((DunningAction::Retry, day(1)))
        );
        assert_eq!(
            policy.step_after(failed, 1),
            Some((DunningAction::Retry, day(3)))
        );
        assert_eq!(
            policy.step_after(failed, 2),
            Some((DunningAction::GiveUp, day(7)))
        );
        assert_eq!(policy.step_after(failed, 3), None);
    }
}
