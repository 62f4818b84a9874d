//! Cancellations: at a time, at period end or now, with the unused in-advance
//! fees credited when a boundary already billed them.

use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::PgConnection;
use tally_domain::subscription::SubscriptionStatus as Status;
use tally_proto::events::subscription_event::{self, Kind};
use tally_proto::invoicing as proto;

use crate::error::{InvoicingError, Result};
use crate::idempotency::{self, request_hash};

use super::changes::Finished;
use super::store as subscription_store;
use super::store::{self, BoundaryInvoice};
use super::{Policy, Subscriptions, Timing, allow, timing};

impl Subscriptions<'_> {
    pub(super) async fn cancel_subscription(
        &self,
        request: proto::CancelSubscriptionRequest,
        origin: &tally_audit::Origin,
    ) -> Result<proto::Subscription> {
        const METHOD: &str = "CancelSubscription";
        let timing = timing(request.timing, request.effective_at.as_ref())?;
        let policy = Policy::from_wire(request.proration_policy, "proration_policy")?;
        if request.reason.chars().count() > 500 {
            return Err(InvoicingError::invalid(
                "reason",
                "must be at most 500 characters",
            ));
        }
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let idem = idempotency::Key {
            method: METHOD,
            key: &request.idempotency_key,
            hash,
        };
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut subscription = match self
            .begin_change(&mut transaction, &idem, &request.subscription_id, now)
            .await?
        {
            Ok(subscription) => subscription,
            Err(replay) => return Ok(replay),
        };
        let before = subscription.to_proto(now)?;
        allow(&subscription, Status::Canceled, now)?;
        let at = self.effective_instant(&subscription, timing, now)?;
        subscription.cancel_at = Some(at);
        subscription.canceled_at = Some(now);
        subscription.cancel_reason.clone_from(&request.reason);
        subscription.cancel_proration = policy;
        let kind = Kind::Canceled(subscription_event::Canceled {
            at_period_end: timing == Timing::AtPeriodEnd,
            reason: request.reason.clone(),
        });
        let snapshot = self
            .commit_change(&mut transaction, &mut subscription, at, now, kind)
            .await?;
        if subscription.billed_through == Some(at) && policy != Policy::None {
            self.credit_unused_advance(&mut transaction, &subscription.id, at, now)
                .await?;
        }
        let finished = Finished {
            action: "canceled",
            reason: request.reason.clone(),
            before: Some(before),
            snapshot,
        };
        self.finish_change(transaction, &idem, finished, (origin, now))
            .await
    }

    /// A subscription ending exactly at an invoiced boundary has no later
    /// invoice to carry the credit for the in-advance fees that boundary
    /// billed: a draft is simply composed again by the next bill run (which
    /// drops them); a finalized invoice gets a credit note for them.
    pub(super) async fn credit_unused_advance(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        boundary: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let invoice =
            store::lock_boundary_invoice(&mut *connection, subscription_id, boundary).await?;
        let Some(BoundaryInvoice {
            id: invoice_id,
            status,
        }) = invoice
        else {
            return Ok(());
        };
        if status == "draft" || status == "void" {
            return Ok(());
        }
        let advance = store::in_advance_lines_from(&mut *connection, &invoice_id, boundary).await?;
        if advance.is_empty() {
            return Ok(());
        }
        let row = crate::billing::store::load(&mut *connection, &invoice_id, true).await?;
        let currency = row.currency()?;
        // A credit note for what remains creditable in money; the rest was
        // paid by credits, which go back to the grants they came from.
        let unused: rust_decimal::Decimal = advance.iter().map(|(_, amount)| *amount).sum();
        let mut creditable = row.total - row.amount_credited;
        let mut lines = Vec::new();
        for (line_id, amount) in advance {
            let amount = amount.min(creditable);
            if amount <= rust_decimal::Decimal::ZERO {
                break;
            }
            creditable -= amount;
            lines.push(proto::CreditNoteLine {
                invoice_line_id: line_id,
                description: "Unused in-advance fee".into(),
                amount: Some(crate::wire::money(amount, currency)),
            });
        }
        let noted: rust_decimal::Decimal = lines
            .iter()
            .filter_map(|line| {
                line.amount
                    .as_ref()?
                    .amount
                    .parse::<rust_decimal::Decimal>()
                    .ok()
            })
            .sum();
        if !lines.is_empty() {
            let note = crate::invoices::NoteRequest {
                reason: proto::CreditNoteReason::OrderChange,
                memo: format!("subscription {subscription_id} canceled at {boundary}"),
                lines: Some(lines),
                credit_to_balance: true,
                refund_id: None,
            };
            self.invoices()
                .issue_credit_note(&mut *connection, &row, note, now)
                .await?;
        }
        if unused > noted {
            crate::credits::return_burns(
                connection,
                &*self.ids,
                &invoice_id,
                Some(unused - noted),
                "unused in-advance fee after cancellation, credits returned",
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Ends a subscription now (dunning gave up and the policy cancels).
    pub(crate) async fn cancel_now(
        &self,
        connection: &mut PgConnection,
        subscription_id: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut subscription =
            subscription_store::load(&mut *connection, subscription_id, true).await?;
        if subscription.ended_by(now) {
            return Ok(());
        }
        let at = now.max(subscription.start_at);
        subscription.cancel_at = Some(at);
        subscription.canceled_at = Some(now);
        subscription.cancel_reason.clone_from(&reason);
        subscription.cancel_proration = Policy::None;
        let kind = Kind::Canceled(subscription_event::Canceled {
            at_period_end: false,
            reason,
        });
        self.commit_change(connection, &mut subscription, at, now, kind)
            .await?;
        Ok(())
    }
}
