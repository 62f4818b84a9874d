//! Invoicing, as payments asks it over gRPC (`peers.invoicing_url`, with the
//! process's `TALLY_API_KEY`, which needs the `write` scope there).
//!
//! Invoicing owns each invoice's one creditable / refundable balance, shared
//! by credit notes and refunds (docs/architecture.md, "One balance per invoice"). Before a refund requested
//! through `PaymentService.Refund` reaches Stripe, payments reserves its
//! amount there (`InvoiceService.ReserveRefund`, idempotent by the refund
//! id); invoicing refuses it when credit notes and other refunds already took
//! what the invoice billed. The reservation turns into a credit note, or is
//! released, when invoicing reads the refund's `PaymentEvent`.

use tally_domain::money::Money;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::{RefundReservationStatus, ReserveRefundRequest};
use tally_runtime::peer::Peer;
use tonic::Code;

use crate::error::PaymentsError;
use crate::wire::money;

/// The invoicing peer.
#[derive(Debug, Clone)]
pub struct InvoicingPeer {
    peer: Peer,
}

/// Invoicing's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The amount is held for the refund (or already carried by its credit
    /// note): Stripe may be asked.
    Held,
    /// Invoicing refused, with its reason (the figures).
    Refused(String),
}

impl InvoicingPeer {
    /// A client of the invoicing peer.
    pub fn new(peer: Peer) -> Self {
        Self { peer }
    }

    /// Reserves `amount` of `invoice_id`'s balance for `refund_id`.
    ///
    /// `Ok(Refused)` is invoicing's final word on this request (the balance
    /// does not allow it); `Err` means it could not decide now (unreachable,
    /// or payments' key is refused): the refund stays pending and the same
    /// idempotency key asks again.
    pub async fn reserve_refund(
        &self,
        refund_id: &str,
        invoice_id: &str,
        payment_id: &str,
        amount: &Money,
    ) -> Result<Reservation, PaymentsError> {
        let mut client =
            InvoiceServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        let answer = client
            .reserve_refund(ReserveRefundRequest {
                refund_id: refund_id.to_owned(),
                invoice_id: invoice_id.to_owned(),
                payment_id: payment_id.to_owned(),
                amount: Some(money(amount)),
            })
            .await;
        match answer {
            Ok(response) => {
                let status = response
                    .into_inner()
                    .reservation
                    .map(|reservation| reservation.status())
                    .unwrap_or(RefundReservationStatus::Unspecified);
                match status {
                    RefundReservationStatus::Held | RefundReservationStatus::Refunded => {
                        Ok(Reservation::Held)
                    }
                    RefundReservationStatus::Released | RefundReservationStatus::Unspecified => {
                        Ok(Reservation::Refused(format!(
                            "invoicing released the reservation of refund {refund_id} (it failed before)"
                        )))
                    }
                }
            }
            Err(status) => match status.code() {
                Code::FailedPrecondition
                | Code::NotFound
                | Code::InvalidArgument
                | Code::AlreadyExists => Ok(Reservation::Refused(status.message().to_owned())),
                Code::Unauthenticated | Code::PermissionDenied => {
                    Err(PaymentsError::FailedPrecondition(format!(
                        "invoicing refused payments' API key when reserving refund {refund_id} ({}: {}): \
                         this is configuration, not a transient failure — TALLY_API_KEY of the payments \
                         process needs the `write` scope; the refund stays pending, retry with the same key \
                         once the key is fixed",
                        status.code(),
                        status.message()
                    )))
                }
                code => Err(PaymentsError::PeerUnavailable(format!(
                    "invoicing could not reserve refund {refund_id} ({code:?}: {}); nothing was sent \
                     to Stripe, retry with the same idempotency key",
                    status.message()
                ))),
            },
        }
    }
}
