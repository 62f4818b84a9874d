//! `PaymentService.Refund`: full or partial, idempotent by key, never more
//! than what remains refundable.
//!
//! 1. One transaction checks the key (same request → the stored refund; a
//!    different one → `ALREADY_EXISTS`), locks the payment, checks what
//!    remains refundable (paid − refunds not failed, pending ones included, so
//!    two concurrent refunds cannot both pass) and stores the refund as
//!    `pending` with its id `ref_…`.
//! 2. Invoicing reserves the amount on the invoice's one creditable balance
//!    (`InvoiceService.ReserveRefund`, idempotent by the refund id): credit
//!    notes and refunds together never exceed what the invoice billed. A
//!    refusal marks the refund `failed` (`exceeds_invoice_balance`) and is
//!    answered `FAILED_PRECONDITION` with invoicing's figures — again on a
//!    replay. Invoicing unreachable: the refund stays pending, `UNAVAILABLE`.
//! 3. Stripe is asked with the key `tally:refund:<ref>:create`.
//! 4. A second transaction records Stripe's answer: succeeded → refunded
//!    total, payment status, ledger entries and `PaymentEvent.Refunded`
//!    (invoicing's cue to turn the reservation into the credit note);
//!    refused → `failed` with Stripe's reason and `PaymentEvent.RefundFailed`
//!    (invoicing releases the reservation). If Stripe could not be reached the
//!    refund stays pending and the call answers `UNAVAILABLE`; the same key
//!    picks it up again.

use serde_json::json;
use sha2::{Digest, Sha256};
use tally_audit::{Entry, Origin};
use tally_domain::ids::{PaymentId, RefundId};
use tally_domain::money::Money;
use tally_proto::payments as proto;
use tally_runtime::idempotency::{Fingerprint, fingerprint};

use crate::core::{Core, EXCEEDS_INVOICE_BALANCE, RefundFailure};
use crate::error::PaymentsError;
use crate::invoicing::Reservation;
use crate::store::refunds::{self, NewRefund, StoredRefund};
use crate::store::{self, PaymentKey};
use crate::stripe::{RemoteRefundStatus, StripeRefundReason};
use tally_proto::convert::money as parse_money;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

struct Pending {
    refund_id: String,
    amount: Money,
    reason: proto::RefundReason,
}

/// Runs a refund request made by `origin`: `refund.requested` is audited
/// with the pending refund, `payment.refunded` when Stripe succeeds at once.
pub async fn refund(
    core: &Core,
    request: &proto::RefundRequest,
    origin: &Origin,
) -> Result<proto::RefundResponse, PaymentsError> {
    validate(request)?;
    let pending = match reserve(core, request, origin).await? {
        Reserved::Done(refund_id) => return respond(core, &refund_id).await,
        Reserved::Pending(pending) => pending,
    };
    let payment = {
        let mut connection = core.pool.acquire().await?;
        store::payment(&mut connection, PaymentKey::Id(&request.payment_id), false)
            .await?
            .ok_or_else(|| PaymentsError::NotFound(request.payment_id.clone()))?
    };
    let Some(charge) = payment.stripe_charge_id.clone() else {
        let reason = format!(
            "payment {} has no Stripe charge to refund",
            request.payment_id
        );
        fail(core, &request.payment_id, &pending.refund_id, &reason, "").await?;
        return Err(PaymentsError::FailedPrecondition(reason));
    };
    // The invoice's one balance, shared with credit notes, is invoicing's:
    // nothing goes to Stripe before invoicing holds the amount.
    match core
        .invoicing
        .reserve_refund(
            &pending.refund_id,
            &payment.invoice_id,
            &payment.id,
            &pending.amount,
        )
        .await?
    {
        Reservation::Held => {}
        Reservation::Refused(reason) => {
            fail(
                core,
                &request.payment_id,
                &pending.refund_id,
                &reason,
                EXCEEDS_INVOICE_BALANCE,
            )
            .await?;
            return Err(PaymentsError::FailedPrecondition(reason));
        }
    }
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
                let before = crate::audit::payment_state(&payment);
                let changed = core
                    .record_refund_succeeded(
                        &mut transaction,
                        &mut payment,
                        &pending.refund_id,
                        &remote.id,
                        now,
                    )
                    .await?;
                if changed {
                    let entry = Entry::minted(
                        &*core.ids,
                        now,
                        "payment.refunded",
                        ("payment", &payment.id),
                        origin,
                    )
                    .reason(store::refund_reason_name(pending.reason))
                    .comment(format!("refund {}", pending.refund_id))
                    .before(before)
                    .after(crate::audit::payment_state(&payment));
                    crate::audit::record(&mut transaction, entry).await?;
                }
            }
            RemoteRefundStatus::Pending => {
                refunds::set_stripe_refund_id(
                    &mut transaction,
                    &pending.refund_id,
                    &remote.id,
                    now,
                )
                .await?;
            }
            RemoteRefundStatus::Failed => {
                let failure = RefundFailure {
                    reason: &remote.failure_reason,
                    code: "",
                    stripe_refund_id: Some(&remote.id),
                };
                core.record_refund_failed(
                    &mut transaction,
                    &payment,
                    &pending.refund_id,
                    failure,
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
            let failure = RefundFailure {
                reason: &error.failure_message(),
                code: "",
                stripe_refund_id: None,
            };
            core.record_refund_failed(&mut transaction, &payment, &pending.refund_id, failure, now)
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

/// Records a refund as failed before or without Stripe (and tells invoicing,
/// which releases whatever it held for it).
async fn fail(
    core: &Core,
    payment_id: &str,
    refund_id: &str,
    reason: &str,
    code: &str,
) -> Result<(), PaymentsError> {
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    let Some(payment) = store::payment(&mut transaction, PaymentKey::Id(payment_id), true).await?
    else {
        return Err(PaymentsError::NotFound(payment_id.to_owned()));
    };
    let failure = RefundFailure {
        reason,
        code,
        stripe_refund_id: None,
    };
    core.record_refund_failed(&mut transaction, &payment, refund_id, failure, now)
        .await?;
    transaction.commit().await?;
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
    tally_proto::convert::id::<PaymentId>(&request.payment_id, "payment_id")?;
    if proto::RefundReason::try_from(request.reason).is_err() {
        return Err(PaymentsError::InvalidArgument {
            field: "reason",
            reason: format!("unknown value {}", request.reason),
        });
    }
    if let Some(amount) = &request.amount {
        let amount = parse_money(Some(amount), "amount")?;
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

/// The parts of a refund request that make it the same request: the payment, the
/// amount compared by value (`10.5` and `10.50` are the same request; none is
/// everything) and the reason and memo.
fn request_parts(request: &proto::RefundRequest) -> [Vec<u8>; 4] {
    let amount = match &request.amount {
        Some(amount) => parse_money(Some(amount), "amount")
            .map(|money| format!("{} {}", money.amount().normalize(), money.currency()))
            .unwrap_or_default(),
        None => "everything".to_owned(),
    };
    [
        request.payment_id.clone().into_bytes(),
        amount.into_bytes(),
        request.reason.to_le_bytes().to_vec(),
        request.memo.clone().into_bytes(),
    ]
}

/// The request's fingerprint (the runtime's one framing).
fn request_fingerprint(request: &proto::RefundRequest) -> Fingerprint {
    fingerprint(request_parts(request).iter().map(Vec::as_slice))
}

/// The hash `payments.refunds.request_hash` held before the runtime's fingerprint (64
/// hex digits, no prefix): the same parts run together with zero bytes. Only compared
/// with rows written then, never written.
fn legacy_request_hash(request: &proto::RefundRequest) -> String {
    let [payment, amount, reason, memo] = request_parts(request);
    let mut hasher = Sha256::new();
    hasher.update(payment);
    hasher.update([0]);
    hasher.update(amount);
    hasher.update([0]);
    hasher.update(reason);
    hasher.update(memo);
    hex::encode(hasher.finalize())
}

enum Reserved {
    Done(String),
    Pending(Pending),
}

async fn reserve(
    core: &Core,
    request: &proto::RefundRequest,
    origin: &Origin,
) -> Result<Reserved, PaymentsError> {
    let hash = request_fingerprint(request);
    let now = core.clock.now();
    let mut transaction = core.pool.begin().await?;
    // Serializes requests with the same key (the second waits for the first).
    refunds::lock_refund_key(&mut transaction, &request.idempotency_key).await?;
    let existing = refunds::refund_by_key(&mut transaction, &request.idempotency_key).await?;
    if let Some(StoredRefund {
        id,
        request_hash: stored_hash,
        status,
        amount,
        currency,
        reason,
        failure_code,
        failure_reason,
    }) = existing
    {
        let replay = stored_hash
            .as_deref()
            .is_some_and(|stored| hash.matches_stored(stored, || legacy_request_hash(request)));
        if !replay {
            return Err(PaymentsError::IdempotencyConflict(
                request.idempotency_key.clone(),
            ));
        }
        if status == "failed" && failure_code == EXCEEDS_INVOICE_BALANCE {
            // The first answer was invoicing's refusal: a replay gets it again.
            return Err(PaymentsError::FailedPrecondition(failure_reason));
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
            let amount = parse_money(Some(amount), "amount")?;
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
    let refund_id = String::from(core.ids.mint::<RefundId>());
    let new = NewRefund {
        id: &refund_id,
        payment_id: &payment.id,
        invoice_id: &payment.invoice_id,
        idempotency_key: &request.idempotency_key,
        request_hash: &hash.to_stored(),
        amount: amount.amount(),
        currency: amount.currency().code(),
        reason: store::refund_reason_name(reason),
        memo: &request.memo,
    };
    refunds::insert_refund(&mut transaction, new, now).await?;
    let entry = Entry::minted(
        &*core.ids,
        now,
        "refund.requested",
        ("refund", &refund_id),
        origin,
    )
    .reason(store::refund_reason_name(reason))
    .comment(request.memo.clone())
    .after(json!({
        "id": refund_id,
        "payment_id": payment.id,
        "invoice_id": payment.invoice_id,
        "amount": amount.amount().to_string(),
        "currency": amount.currency().code(),
        "status": "pending",
    }));
    crate::audit::record(&mut transaction, entry).await?;
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

#[cfg(test)]
mod tests {
    use tally_proto::common;

    use super::*;

    fn refund(
        amount: Option<&str>,
        reason: proto::RefundReason,
        memo: &str,
    ) -> proto::RefundRequest {
        proto::RefundRequest {
            idempotency_key: "k".into(),
            payment_id: "pay_1".into(),
            amount: amount.map(|amount| common::Money {
                currency: "USD".into(),
                amount: amount.into(),
            }),
            reason: reason as i32,
            memo: memo.into(),
        }
    }

    /// `payments.refunds.request_hash` of rows written before the runtime's fingerprint
    /// holds these exact hashes; a retry of such a request must still match them.
    #[test]
    fn refunds_requested_before_the_upgrade_still_match() {
        let table = [
            (
                refund(Some("10.50"), proto::RefundReason::Duplicate, "damaged"),
                "6cb1454db8f536c207930008ab89a418f076b0d86279d712a4c7990c34a03689",
                "v2:0288ddf812860db65802bbb2dd60e9a2f96d7d6dc0d7b5842fe4db4223f8f596",
            ),
            (
                refund(None, proto::RefundReason::Unspecified, ""),
                "3fb8b600626f16d1acab2f840c1d3e68bc76e514277083234004157f1af1a2cc",
                "v2:70f7cb9ba8225c2e00a8f17046da441986f038e6e707c6ca0e9a593717d2d1f1",
            ),
        ];
        for (request, stored_before, stored_now) in table {
            assert_eq!(legacy_request_hash(&request), stored_before);
            let hash = request_fingerprint(&request);
            assert_eq!(hash.to_stored(), stored_now);
            assert!(hash.matches_stored(stored_before, || legacy_request_hash(&request)));
        }
        let same = refund(Some("10.5"), proto::RefundReason::Duplicate, "damaged");
        assert_eq!(
            request_fingerprint(&same).to_stored(),
            "v2:0288ddf812860db65802bbb2dd60e9a2f96d7d6dc0d7b5842fe4db4223f8f596",
            "amounts compare by value"
        );
    }
}
