//! `PaymentService.Refund`: full or partial, idempotent by key, never more
//! than what remains refundable.
//!
//! 1. One transaction checks the key (same request → the stored refund; a
//!    different one → `ALREADY_EXISTS`), locks the payment, checks what
//!    remains refundable (paid − refunds not failed, pending ones included, so
//!    two concurrent refunds cannot both pass) and stores the refund as
//!    `pending` with its id `ref_…`.
//! 2. Stripe is asked with the key `tally:refund:<ref>:create`.
//! 3. A second transaction records Stripe's answer: succeeded → refunded
//!    total, payment status, ledger entries and `PaymentEvent.Refunded`
//!    (invoicing's cue for the credit note); refused → `failed` with Stripe's
//!    reason. If Stripe could not be reached the refund stays pending and the
//!    call answers `UNAVAILABLE`; the same key picks it up again.

use sha2::{Digest, Sha256};
use tally_domain::money::Money;
use tally_proto::payments as proto;

use crate::core::Core;
use crate::error::PaymentsError;
use crate::store::{self, PaymentKey};
use crate::stripe::{RemoteRefundStatus, StripeRefundReason};
use crate::wire::parse_money;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

struct Pending {
    refund_id: String,
    amount: Money,
    reason: proto::RefundReason,
}

/// Runs a refund request.
pub async fn refund(
    core: &Core,
    request: &proto::RefundRequest,
) -> Result<proto::RefundResponse, PaymentsError> {
    validate(request)?;
    let pending = match reserve(core, request).await? {
        Reserved::Done(refund_id) => return respond(core, &refund_id).await,
        Reserved::Pending(pending) => pending,
    };
    let charge = {
        let mut connection = core.pool.acquire().await?;
        store::payment(&mut connection, PaymentKey::Id(&request.payment_id), false)
            .await?
            .and_then(|payment| payment.stripe_charge_id)
    };
    let Some(charge) = charge else {
        return Err(PaymentsError::FailedPrecondition(format!(
            "payment {} has no Stripe charge to refund",
            request.payment_id
        )));
    };
    let stripe_reason = match pending.reason {
        proto::RefundReason::Duplicate => StripeRefundReason::Duplicate,
        proto::RefundReason::Fraudulent => StripeRefundReason::Fraudulent,
        proto::RefundReason::BillingError
        | proto::RefundReason::RequestedByCustomer
        | proto::RefundReason::Unspecified => StripeRefundReason::RequestedByCustomer,
    };
    let answer = core
        .stripe
        .create_refund(&pending.refund_id, &charge, &pending.amount, stripe_reason)
        .await;
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    let Some(mut payment) =
        store::payment(&mut transaction, PaymentKey::Id(&request.payment_id), true).await?
    else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    match answer {
        Ok(remote) => match remote.status {
            RemoteRefundStatus::Succeeded => {
                core.record_refund_succeeded(
                    &mut transaction,
                    &mut payment,
                    &pending.refund_id,
                    &remote.id,
                    now,
                )
                .await?;
            }
            RemoteRefundStatus::Pending => {
                sqlx::query(
                    "UPDATE payments.refunds SET stripe_refund_id = $2, updated_at = $3 WHERE id = $1",
                )
                .bind(&pending.refund_id)
                .bind(&remote.id)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
            }
            RemoteRefundStatus::Failed => {
                mark_failed(
                    &mut transaction,
                    &pending.refund_id,
                    &remote.failure_reason,
                    now,
                )
                .await?;
            }
        },
        Err(error) if error.is_transient() => {
            drop(transaction);
            return Err(error.into());
        }
        Err(error) => {
            mark_failed(
                &mut transaction,
                &pending.refund_id,
                &error.failure_message(),
                now,
            )
            .await?;
            transaction.commit().await?;
            return Err(PaymentsError::FailedPrecondition(format!(
                "Stripe refused refund {}: {}",
                pending.refund_id,
                error.failure_message()
            )));
        }
    }
    transaction.commit().await?;
    respond(core, &pending.refund_id).await
}

async fn mark_failed(
    connection: &mut sqlx::PgConnection,
    refund_id: &str,
    reason: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments.refunds SET status = 'failed', failure_reason = $2, updated_at = $3 WHERE id = $1",
    )
    .bind(refund_id)
    .bind(reason)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

fn validate(request: &proto::RefundRequest) -> Result<(), PaymentsError> {
    if request.idempotency_key.is_empty() {
        return Err(PaymentsError::InvalidArgument {
            field: "idempotency_key",
            reason: "required".into(),
        });
    }
    if request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(PaymentsError::InvalidArgument {
            field: "idempotency_key",
            reason: format!("at most {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        });
    }
    if request.payment_id.is_empty() {
        return Err(PaymentsError::InvalidArgument {
            field: "payment_id",
            reason: "required".into(),
        });
    }
    if proto::RefundReason::try_from(request.reason).is_err() {
        return Err(PaymentsError::InvalidArgument {
            field: "reason",
            reason: format!("unknown value {}", request.reason),
        });
    }
    if let Some(amount) = &request.amount {
        let amount = parse_money(Some(amount)).map_err(|error| PaymentsError::InvalidArgument {
            field: "amount",
            reason: error.to_string(),
        })?;
        if !amount.is_positive() {
            return Err(PaymentsError::InvalidArgument {
                field: "amount",
                reason: format!("must be positive, got {amount}"),
            });
        }
        if !amount.is_rounded() {
            return Err(PaymentsError::InvalidArgument {
                field: "amount",
                reason: format!(
                    "{amount} has more decimal places than {} allows",
                    amount.currency()
                ),
            });
        }
    }
    Ok(())
}

fn request_hash(request: &proto::RefundRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.payment_id.as_bytes());
    hasher.update([0]);
    match &request.amount {
        Some(amount) => {
            // Compare amounts by value: `10.5` and `10.50` are the same request.
            let normalized = parse_money(Some(amount))
                .map(|money| format!("{} {}", money.amount().normalize(), money.currency()))
                .unwrap_or_default();
            hasher.update(normalized.as_bytes());
        }
        None => hasher.update(b"everything"),
    }
    hasher.update([0]);
    hasher.update(request.reason.to_le_bytes());
    hasher.update(request.memo.as_bytes());
    hex::encode(hasher.finalize())
}

enum Reserved {
    Done(String),
    Pending(Pending),
}

async fn reserve(core: &Core, request: &proto::RefundRequest) -> Result<Reserved, PaymentsError> {
    let hash = request_hash(request);
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    // Serializes requests with the same key (the second waits for the first).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payments.refund:' || $1))")
        .bind(&request.idempotency_key)
        .execute(&mut *transaction)
        .await?;
    let existing: Option<(String, String, String, rust_decimal::Decimal, String, String)> =
        sqlx::query_as(
            "SELECT id, request_hash, status, amount, currency, reason FROM payments.refunds WHERE idempotency_key = $1",
        )
        .bind(&request.idempotency_key)
        .fetch_optional(&mut *transaction)
        .await?;
    if let Some((id, stored_hash, status, amount, currency, reason)) = existing {
        if stored_hash != hash {
            return Err(PaymentsError::IdempotencyConflict(
                request.idempotency_key.clone(),
            ));
        }
        if status != "pending" {
            return Ok(Reserved::Done(id));
        }
        let currency = tally_domain::money::Currency::from_code(&currency)?;
        return Ok(Reserved::Pending(Pending {
            refund_id: id,
            amount: Money::new(amount, currency),
            reason: store::refund_reason_from_name(&reason),
        }));
    }
    let Some(payment) =
        store::payment(&mut transaction, PaymentKey::Id(&request.payment_id), true).await?
    else {
        return Err(PaymentsError::NotFound(format!(
            "payment {} does not exist",
            request.payment_id
        )));
    };
    if !payment.status.was_collected() {
        return Err(PaymentsError::FailedPrecondition(format!(
            "payment {} is {}, not succeeded: there is nothing to refund",
            payment.id,
            payment.status.as_str()
        )));
    }
    let reserved = Money::new(
        store::refunds_total(&mut transaction, &payment.id).await?,
        payment.amount.currency(),
    );
    let refundable = payment.amount.checked_sub(&reserved)?;
    let amount = match &request.amount {
        Some(amount) => {
            let amount =
                parse_money(Some(amount)).map_err(|error| PaymentsError::InvalidArgument {
                    field: "amount",
                    reason: error.to_string(),
                })?;
            if amount.currency() != payment.amount.currency() {
                return Err(PaymentsError::InvalidArgument {
                    field: "amount",
                    reason: format!(
                        "currency {} differs from the payment's {}",
                        amount.currency(),
                        payment.amount.currency()
                    ),
                });
            }
            amount
        }
        None => refundable,
    };
    if !refundable.is_positive() {
        return Err(PaymentsError::FailedPrecondition(format!(
            "payment {} is already refunded in full ({} of {})",
            payment.id, reserved, payment.amount
        )));
    }
    if amount.amount() > refundable.amount() {
        return Err(PaymentsError::FailedPrecondition(format!(
            "refund of {amount} exceeds the {refundable} still refundable on payment {} \
             (paid {}, refunded or being refunded {})",
            payment.id, payment.amount, reserved
        )));
    }
    let reason = proto::RefundReason::try_from(request.reason)
        .unwrap_or(proto::RefundReason::RequestedByCustomer);
    let refund_id = core.ids.new_id("ref");
    sqlx::query(
        "INSERT INTO payments.refunds (id, payment_id, invoice_id, idempotency_key, request_hash, amount, currency, \
         reason, memo, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10)",
    )
    .bind(&refund_id)
    .bind(&payment.id)
    .bind(&payment.invoice_id)
    .bind(&request.idempotency_key)
    .bind(&hash)
    .bind(amount.amount())
    .bind(amount.currency().code())
    .bind(store::refund_reason_name(reason))
    .bind(&request.memo)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Reserved::Pending(Pending {
        refund_id,
        amount,
        reason,
    }))
}

async fn respond(core: &Core, refund_id: &str) -> Result<proto::RefundResponse, PaymentsError> {
    let mut connection = core.pool.acquire().await?;
    let Some(refund) = store::refund(&mut connection, refund_id).await? else {
        return Err(PaymentsError::NotFound(refund_id.to_owned()));
    };
    let Some(payment) =
        store::payment(&mut connection, PaymentKey::Id(&refund.payment_id), false).await?
    else {
        return Err(PaymentsError::NotFound(refund.payment_id.clone()));
    };
    let payment = store::payment_to_proto(&mut connection, &payment).await?;
    Ok(proto::RefundResponse {
        refund: Some(refund),
        payment: Some(payment),
    })
}
