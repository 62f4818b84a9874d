//! Dunning: failed payments are retried on the configured schedule
//! (`payments.dunning_retry_days`, counted from the first failure), then given
//! up on (`payments.dunning_final_after_days`): the Stripe invoice is marked
//! uncollectible and invoicing is told (`PaymentEvent.Uncollectible`, with
//! `cancel_subscription` from `payments.dunning_cancel_subscription`). Every
//! step is a `PaymentEvent.DunningStep`.
//!
//! The scheduler wakes every `payments.scheduler_poll_interval_seconds`, or at
//! once when a manual clock moves, and takes due payments one at a time
//! `FOR UPDATE SKIP LOCKED` (replicas share the work). The Stripe call is made
//! while the row is locked; its idempotency key names the attempt number, so
//! a crash before the commit repeats the same call, not a second charge.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tally_proto::events::payment_event::{self, Kind};
use tally_runtime::Shutdown;
use tally_runtime::clock::Ticker;

use crate::core::{Core, DunningAction};
use crate::error::PaymentsError;
use crate::events;
use crate::store::{self, PaymentKey, PaymentRow, retries};
use crate::stripe::RemoteInvoiceStatus;
use crate::wire::timestamp;

/// The dunning scheduler.
#[derive(Debug, Clone)]
pub struct Dunning {
    core: Core,
    poll_interval: Duration,
}

impl Dunning {
    /// A scheduler over `core`.
    pub fn new(core: Core, poll_interval: Duration) -> Self {
        Self {
            core,
            poll_interval,
        }
    }

    /// Runs due steps until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = Ticker::new(&*self.core.clock, self.poll_interval);
        while !shutdown.is_triggered() {
            if let Err(error) = self.run_due_steps().await {
                tracing::warn!(%error, "dunning round failed; retrying at the next tick");
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = ticker.tick() => {}
            }
        }
    }

    /// Takes every step due now; returns how many were taken.
    pub async fn run_due_steps(&self) -> Result<usize, PaymentsError> {
        let mut taken = 0;
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let now = self.core.clock.now();
            let mut transaction = self.core.pool.begin().await?;
            let due = retries::lock_next_due_retry(&mut transaction, now, &skipped).await?;
            let Some(payment_id) = due else {
                return Ok(taken);
            };
            let Some(mut payment) =
                store::payment(&mut transaction, PaymentKey::Id(&payment_id), true).await?
            else {
                continue;
            };
            let before = crate::audit::payment_state(&payment);
            match self.step(&mut transaction, &mut payment, now).await {
                Ok(taken_step) => {
                    if let Some(action) = taken_step {
                        // Last in the transaction: the chain's lock after every other.
                        crate::audit::record_dunning_step(
                            &mut transaction,
                            &self.core,
                            (action, &payment),
                            before,
                            now,
                        )
                        .await?;
                    }
                    transaction.commit().await?;
                    taken += 1;
                }
                Err(error) => {
                    // Left due: the next tick tries again with the same key.
                    tracing::warn!(payment_id = %payment.id, %error, "dunning step failed");
                    drop(transaction);
                    skipped.push(payment_id);
                }
            }
        }
    }

    /// Takes `payment`'s next dunning step, if any; the action taken.
    async fn step(
        &self,
        connection: &mut sqlx::PgConnection,
        payment: &mut PaymentRow,
        now: DateTime<Utc>,
    ) -> Result<Option<DunningAction>, PaymentsError> {
        let first_failed_at = payment.first_failed_at.unwrap_or(now);
        let Some((action, _)) = self
            .core
            .dunning
            .step_after(first_failed_at, payment.dunning_step)
        else {
            payment.next_retry_at = None;
            store::update_payment(connection, payment).await?;
            return Ok(None);
        };
        let Some(stripe_invoice_id) = payment.stripe_invoice_id.clone() else {
            payment.next_retry_at = None;
            store::update_payment(connection, payment).await?;
            return Ok(None);
        };
        payment.dunning_step += 1;
        let step = payment.dunning_step;
        match action {
            DunningAction::Retry => {
                let number = payment.attempt_count + 1;
                let outcome = self
                    .core
                    .attempt_payment(&payment.invoice_id, &stripe_invoice_id, number)
                    .await?;
                self.core
                    .apply_attempt(connection, payment, number, &outcome, now)
                    .await?;
                self.step_event(connection, payment, step, action, first_failed_at, now)
                    .await?;
            }
            DunningAction::GiveUp => {
                match self
                    .core
                    .stripe
                    .mark_uncollectible(&payment.invoice_id, &stripe_invoice_id)
                    .await
                {
                    Ok(invoice) if invoice.status == RemoteInvoiceStatus::Paid => {
                        // Paid in the meantime (the webhook may still be on its way).
                        self.core
                            .mark_succeeded(
                                connection,
                                payment,
                                invoice.charge,
                                &format!("pevt_{}_paid_before_giving_up", payment.id),
                                now,
                            )
                            .await?;
                        return Ok(Some(action));
                    }
                    Ok(_) => {}
                    Err(error) if error.is_transient() => return Err(error.into()),
                    Err(error) => {
                        // Stripe refused (e.g. already paid or voided): stop dunning,
                        // say so; reconciliation shows the disagreement.
                        tracing::error!(payment_id = %payment.id, %error, "Stripe refused to mark the invoice uncollectible; dunning stopped");
                        payment.next_retry_at = None;
                        store::update_payment(connection, payment).await?;
                        return Ok(Some(action));
                    }
                }
                self.step_event(connection, payment, step, action, first_failed_at, now)
                    .await?;
                self.core
                    .mark_uncollectible(
                        connection,
                        payment,
                        &format!("pevt_{}_uncollectible", payment.id),
                        now,
                    )
                    .await?;
            }
        }
        Ok(Some(action))
    }

    async fn step_event(
        &self,
        connection: &mut sqlx::PgConnection,
        payment: &mut PaymentRow,
        step: u32,
        action: DunningAction,
        first_failed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), PaymentsError> {
        let next_step_at = if payment.status.is_collectible() {
            self.core
                .dunning
                .step_after(first_failed_at, payment.dunning_step)
                .map(|(_, due)| due)
        } else {
            None
        };
        payment.next_retry_at = next_step_at;
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        events::publish(
            connection,
            format!("pevt_{}_dunning{step}", payment.id),
            payment,
            now,
            Kind::DunningStep(payment_event::DunningStep {
                step,
                action: action.name().to_owned(),
                attempt_number: payment.attempt_count,
                next_step_at: next_step_at.map(timestamp),
            }),
        )
        .await?;
        Ok(())
    }
}
