//! Disputes: the payment is marked disputed, the amount leaves the Stripe
//! balance and `PaymentEvent.DisputeCreated` is published.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_domain::ledger::Fact;
use tally_proto::events::payment_event::{self, Kind};

use crate::error::PaymentsError;
use crate::events;
use crate::ledger::{self, Book};
use crate::store::webhooks::{self, NewDispute};
use crate::store::{self, PaymentRow, PaymentState};
use crate::stripe::RemoteDispute;
use crate::wire::money;

use super::{WebhookError, WebhookState};

impl WebhookState {
    pub(super) async fn record_dispute(
        &self,
        connection: &mut PgConnection,
        payment: &mut PaymentRow,
        dispute: &RemoteDispute,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&'static str, WebhookError> {
        let new = NewDispute {
            stripe_dispute_id: &dispute.id,
            payment_id: &payment.id,
            stripe_charge_id: &dispute.charge,
            amount: dispute.amount.amount(),
            currency: dispute.amount.currency().code(),
            reason: &dispute.reason,
        };
        if !webhooks::insert_dispute(&mut *connection, new, now).await? {
            return Ok("already recorded");
        }
        payment.status = PaymentState::Disputed;
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        let withdrawn = ledger::transfer(
            &Fact::DisputeCreated(dispute.id.clone()),
            now,
            Book::Disputes,
            Book::StripeBalance,
            dispute.amount,
        )
        .map_err(PaymentsError::from)?;
        ledger::post(connection, &withdrawn, now)
            .await
            .map_err(PaymentsError::from)?;
        events::publish(
            connection,
            event_id.to_owned(),
            payment,
            now,
            Kind::DisputeCreated(payment_event::DisputeCreated {
                stripe_dispute_id: dispute.id.clone(),
                stripe_charge_id: dispute.charge.clone(),
                amount: Some(money(&dispute.amount)),
                reason: dispute.reason.clone(),
            }),
        )
        .await?;
        Ok("dispute recorded")
    }
}
