//! Stripe credit notes: what payments asks Stripe to create.

use stripe_billing::CreditNoteReason;
use stripe_billing::credit_note::{CreateCreditNote, CreateCreditNoteRefunds};
use tally_domain::money::Money;

use super::{RemoteCreditNote, Stripe, StripeError, metadata, to_minor_units};

/// Stripe's credit note reasons (Tally's billing error has none: no reason
/// is sent and Tally's own reason travels in metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeCreditNoteReason {
    /// `duplicate`
    Duplicate,
    /// `fraudulent`
    Fraudulent,
    /// `order_change`
    OrderChange,
    /// `product_unsatisfactory`
    ProductUnsatisfactory,
}

/// A credit note payments asks Stripe to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditNoteRequest {
    /// The Tally credit note, `cn_…` (metadata `tally_credit_note_id`).
    pub tally_credit_note_id: String,
    /// The Stripe invoice credited, `in_…`.
    pub stripe_invoice_id: String,
    /// Total credited (rounded).
    pub amount: Money,
    /// Stripe's reason, when Tally's has one.
    pub reason: Option<StripeCreditNoteReason>,
    /// Tally's reason name (metadata `tally_reason`).
    pub tally_reason: String,
    /// Printed memo (may be empty).
    pub memo: String,
    /// The part credited outside Stripe (`out_of_band_amount`; zero for
    /// none). Stripe first lowers what the invoice still asks for and needs
    /// the rest settled: payments never refunds through a credit note nor
    /// credits the Stripe customer balance (invoicing keeps such credit in
    /// its own wallet).
    pub out_of_band: Money,
    /// A refund payments already made for this note, linked to it
    /// (`refunds[0][refund]`, `refunds[0][amount_refunded]`): the Stripe
    /// credit note becomes that refund, as a note created with
    /// `refund_amount` would, without Stripe making a second one.
    pub linked_refund: Option<(String, Money)>,
}

impl Stripe {
    /// Creates a Stripe credit note (key `tally:credit_note:<cn>:create`).
    pub async fn create_credit_note(
        &self,
        request: &CreditNoteRequest,
    ) -> Result<RemoteCreditNote, StripeError> {
        let amount = to_minor_units(&request.amount)?;
        let mut metadata = metadata("tally_credit_note_id", &request.tally_credit_note_id);
        metadata.insert("tally_reason".into(), request.tally_reason.clone());
        let mut create = CreateCreditNote::new(request.stripe_invoice_id.as_str())
            .amount(amount)
            .metadata(metadata);
        if let Some(reason) = request.reason {
            create = create.reason(match reason {
                StripeCreditNoteReason::Duplicate => CreditNoteReason::Duplicate,
                StripeCreditNoteReason::Fraudulent => CreditNoteReason::Fraudulent,
                StripeCreditNoteReason::OrderChange => CreditNoteReason::OrderChange,
                StripeCreditNoteReason::ProductUnsatisfactory => {
                    CreditNoteReason::ProductUnsatisfactory
                }
            });
        }
        if !request.memo.is_empty() {
            create = create.memo(request.memo.as_str());
        }
        if request.out_of_band.is_positive() {
            create = create.out_of_band_amount(to_minor_units(&request.out_of_band)?);
        }
        if let Some((stripe_refund_id, amount)) = &request.linked_refund {
            let mut link = CreateCreditNoteRefunds::new();
            link.refund = Some(stripe_refund_id.clone());
            link.amount_refunded = Some(to_minor_units(amount)?);
            create = create.refunds(vec![link]);
        }
        let key = format!("tally:credit_note:{}:create", request.tally_credit_note_id);
        let note = self.http.send(&create, Some(&key)).await?;
        RemoteCreditNote::from_stripe(&note)
    }
}
