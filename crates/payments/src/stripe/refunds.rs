//! Stripe refunds: created (keyed by the Tally refund) and read.

use stripe_core::refund::{CreateRefund, CreateRefundReason, RetrieveRefund};
use tally_domain::money::Money;

use super::{RemoteRefund, Stripe, StripeError, metadata, to_minor_units};

/// Stripe's refund reasons (ours map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeRefundReason {
    /// `duplicate`
    Duplicate,
    /// `fraudulent`
    Fraudulent,
    /// `requested_by_customer`
    RequestedByCustomer,
}

impl Stripe {
    /// The refund as Stripe has it now.
    pub async fn get_refund(&self, stripe_refund_id: &str) -> Result<RemoteRefund, StripeError> {
        let refund = self
            .http
            .send(&RetrieveRefund::new(stripe_refund_id), None)
            .await?;
        RemoteRefund::from_stripe(&refund)
    }

    /// Refunds `amount` of a charge (key `tally:refund:<ref>:create`).
    pub async fn create_refund(
        &self,
        tally_refund_id: &str,
        stripe_charge_id: &str,
        amount: &Money,
        reason: StripeRefundReason,
    ) -> Result<RemoteRefund, StripeError> {
        let reason = match reason {
            StripeRefundReason::Duplicate => CreateRefundReason::Duplicate,
            StripeRefundReason::Fraudulent => CreateRefundReason::Fraudulent,
            StripeRefundReason::RequestedByCustomer => CreateRefundReason::RequestedByCustomer,
        };
        let request = CreateRefund::new()
            .charge(stripe_charge_id)
            .amount(to_minor_units(amount)?)
            .reason(reason)
            .metadata(metadata("tally_refund_id", tally_refund_id));
        let key = format!("tally:refund:{tally_refund_id}:create");
        let refund = self.http.send(&request, Some(&key)).await?;
        RemoteRefund::from_stripe(&refund)
    }
}
