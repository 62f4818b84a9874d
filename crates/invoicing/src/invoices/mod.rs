//! `InvoiceService`: reading invoices, finalizing now, voiding, credit notes
//! and on-demand bill runs — `api` (the tonic service), `lifecycle`,
//! `credit_notes`, `preview`; the status rule shared by all of them is here.

mod api;
mod credit_notes;
mod lifecycle;
pub(crate) mod mapping;
pub(crate) mod model;
mod preview;
pub(crate) mod store;

pub use credit_notes::NoteRequest;

crate::feature_service!(
    /// `InvoiceService`'s logic: reading, finalizing and voiding invoices,
    /// previews, on-demand bill runs and credit notes.
    Invoices,
    invoices
);

use tally_domain::invoice::InvoiceStatus as DomainStatus;
use tally_proto::invoicing::InvoiceStatus;

use crate::billing::store::InvoiceRow;
use crate::error::{InvoicingError, Result};

fn domain_status(status: InvoiceStatus) -> DomainStatus {
    match status {
        InvoiceStatus::Draft | InvoiceStatus::Unspecified => DomainStatus::Draft,
        InvoiceStatus::Finalized => DomainStatus::Finalized,
        InvoiceStatus::Paid => DomainStatus::Paid,
        InvoiceStatus::Void => DomainStatus::Void,
        InvoiceStatus::Uncollectible => DomainStatus::Uncollectible,
    }
}

/// Checks the domain status machine allows `row → to`.
pub fn allow(row: &InvoiceRow, to: DomainStatus) -> Result<()> {
    let from = domain_status(row.wire_status());
    if from.can_transition_to(to) {
        Ok(())
    } else {
        Err(InvoicingError::FailedPrecondition(format!(
            "invoice {} is {from:?}; it cannot become {to:?}",
            row.id
        )))
    }
}
