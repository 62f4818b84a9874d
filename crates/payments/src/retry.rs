//! `PaymentService.RetryPayment`: one more attempt on a failed payment, now,
//! outside the dunning schedule (which keeps its dates). Idempotent by key:
//! the key is stored with the attempt it made, in the transaction that
//! records the outcome; the Stripe call is made with the payment row locked
//! and carries the attempt number in its own key, so a retried request after
//! a crash or an `UNAVAILABLE` charges at most once.

use tally_domain::ids::PaymentId;
use tally_proto::payments as proto;

use crate::core::Core;
use crate::error::PaymentsError;
use crate::store::{self, PaymentKey, PaymentState, retries};

/// Runs a retry request.
pub async fn retry_payment(
    core: &Core,
    request: &proto::RetryPaymentRequest,
) -> Result<proto::RetryPaymentResponse, PaymentsError> {
    if request.idempotency_key.is_empty() {
        return Err(PaymentsError::InvalidArgument {
            field: "idempotency_key",
            reason: "required".into(),
        });
    }
    let payment_id: PaymentId = tally_proto::convert::id(&request.payment_id, "payment_id")?;
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    retries::lock_retry_key(&mut transaction, &request.idempotency_key).await?;
    let replayed = retries::retried_payment(&mut transaction, &request.idempotency_key).await?;
    let Some(mut payment) =
        store::payment(&mut transaction, PaymentKey::Id(payment_id.as_str()), true).await?
    else {
        return Err(match replayed {
            Some(_) => PaymentsError::IdempotencyConflict(request.idempotency_key.clone()),
            None => {
                PaymentsError::NotFound(format!("payment {} does not exist", request.payment_id))
            }
        });
    };
    match replayed {
        Some(payment_id) if payment_id != payment.id => {
            return Err(PaymentsError::IdempotencyConflict(
                request.idempotency_key.clone(),
            ));
        }
        Some(_) => return respond(&mut transaction, &payment).await,
        None => {}
    }
    if payment.status != PaymentState::Failed {
        return Err(PaymentsError::FailedPrecondition(format!(
            "payment {} is {}, not failed",
            payment.id,
            payment.status.as_str()
        )));
    }
    let invoice = retries::invoice_status(&mut transaction, &payment.invoice_id).await?;
    let stripe_invoice_id = match invoice {
        Some((status, Some(stripe_invoice_id))) if status == "open" => stripe_invoice_id,
        Some((status, _)) => {
            return Err(PaymentsError::FailedPrecondition(format!(
                "invoice {} is {status}: there is nothing to collect",
                payment.invoice_id
            )));
        }
        None => return Err(PaymentsError::NotFound(payment.invoice_id.clone())),
    };
    let number = payment.attempt_count + 1;
    let outcome = core
        .attempt_payment(&payment.invoice_id, &stripe_invoice_id, number)
        .await?;
    core.apply_attempt(&mut transaction, &mut payment, number, &outcome, now)
        .await?;
    retries::insert_retry_request(
        &mut transaction,
        &request.idempotency_key,
        &payment.id,
        i32::try_from(number).unwrap_or(i32::MAX),
        now,
    )
    .await?;
    let response = respond(&mut transaction, &payment).await?;
    transaction.commit().await?;
    Ok(response)
}

async fn respond(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    payment: &store::PaymentRow,
) -> Result<proto::RetryPaymentResponse, PaymentsError> {
    let wire = store::payment_to_proto(transaction, payment).await?;
    Ok(proto::RetryPaymentResponse {
        payment: Some(wire),
    })
}
