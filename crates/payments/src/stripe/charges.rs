//! Charges and PaymentIntents as Stripe has them now, with the invoice they
//! pay.

use stripe_billing::invoice_payment::{
    ListInvoicePayment, ListInvoicePaymentPayment, ListInvoicePaymentPaymentType,
};
use stripe_core::charge::RetrieveCharge;
use stripe_core::payment_intent::RetrievePaymentIntent;

use super::{RemoteCharge, RemotePaymentIntent, Stripe, StripeError};

impl Stripe {
    /// The charge as Stripe has it now, with its refunds and its invoice.
    pub async fn get_charge(&self, stripe_charge_id: &str) -> Result<RemoteCharge, StripeError> {
        let request = RetrieveCharge::new(stripe_charge_id).expand(vec!["refunds".to_owned()]);
        let charge = self.http.send(&request, None).await?;
        let invoice = match &charge.payment_intent {
            Some(intent) => self.invoice_of_payment_intent(intent.id().as_str()).await?,
            None => None,
        };
        RemoteCharge::from_stripe(&charge, invoice)
    }

    /// The PaymentIntent as Stripe has it now, with its invoice.
    pub async fn get_payment_intent(
        &self,
        stripe_payment_intent_id: &str,
    ) -> Result<RemotePaymentIntent, StripeError> {
        let request = RetrievePaymentIntent::new(stripe_payment_intent_id);
        let intent = self.http.send(&request, None).await?;
        let invoice = self
            .invoice_of_payment_intent(stripe_payment_intent_id)
            .await?;
        Ok(RemotePaymentIntent::from_stripe(&intent, invoice))
    }

    /// The invoice a PaymentIntent pays: async-stripe's API version no longer
    /// puts it on the PaymentIntent or the charge, only on the invoice
    /// payment that links them.
    async fn invoice_of_payment_intent(
        &self,
        stripe_payment_intent_id: &str,
    ) -> Result<Option<String>, StripeError> {
        let mut payment =
            ListInvoicePaymentPayment::new(ListInvoicePaymentPaymentType::PaymentIntent);
        payment.payment_intent = Some(stripe_payment_intent_id.to_owned());
        let request = ListInvoicePayment::new().payment(payment).limit(1);
        let page = self.http.send(&request, None).await?;
        Ok(page.data.first().and_then(|payment| {
            payment
                .invoice
                .id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
        }))
    }
}
