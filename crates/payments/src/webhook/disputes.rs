//! Disputes: the payment is marked disputed, the amount leaves the Stripe
//! balance and `PaymentEvent.DisputeCreated` is published.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tally_proto::events::payment_event::{self, Kind};

use crate::error::PaymentsError;
use crate::events;
use crate::ledger::{self, Book};
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
        let inserted = sqlx::query(
            "INSERT INTO payments.disputes (stripe_dispute_id, payment_id, stripe_charge_id, amount, currency, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&dispute.id)
        .bind(&payment.id)
        .bind(&dispute.charge)
        .bind(dispute.amount.amount())
        .bind(dispute.amount.currency().code())
        .bind(&dispute.reason)
        .bind(now)
        .execute(&mut *connection)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok("already recorded");
        }
        payment.status = PaymentState::Disputed;
        payment.updated_at = now;
        store::update_payment(connection, payment).await?;
        let withdrawn = ledger::transfer(
            &format!("dispute:{}:created", dispute.id),
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
