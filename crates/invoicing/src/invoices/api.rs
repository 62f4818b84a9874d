//! The tonic `InvoiceService`: thin, each call delegates to its feature module.

use tally_audit::Origin;
use tally_proto::invoicing::invoice_service_server::InvoiceService;
use tally_proto::invoicing::{self as proto};
use tonic::{Request, Response, Status};

use crate::error::Result;

#[tonic::async_trait]
impl InvoiceService for crate::InvoicingApi {
    async fn get_invoice(
        &self,
        request: Request<proto::GetInvoiceRequest>,
    ) -> Result<Response<proto::GetInvoiceResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let invoice = self.ctx.invoices().get_invoice(&request.invoice_id).await?;
        tally_runtime::portal::ensure_customer(&extensions, &invoice.customer_id)?;
        Ok(Response::new(proto::GetInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn list_invoices(
        &self,
        request: Request<proto::ListInvoicesRequest>,
    ) -> Result<Response<proto::ListInvoicesResponse>, Status> {
        tally_runtime::portal::ensure_customer(
            request.extensions(),
            &request.get_ref().customer_id,
        )?;
        Ok(Response::new(
            self.ctx
                .invoices()
                .list_invoices(request.into_inner())
                .await?,
        ))
    }

    async fn preview_upcoming_invoice(
        &self,
        request: Request<proto::PreviewUpcomingInvoiceRequest>,
    ) -> Result<Response<proto::PreviewUpcomingInvoiceResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let invoice = self
            .ctx
            .invoices()
            .preview_upcoming_invoice(&request.subscription_id)
            .await?;
        tally_runtime::portal::ensure_customer(&extensions, &invoice.customer_id)?;
        Ok(Response::new(proto::PreviewUpcomingInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn finalize_invoice(
        &self,
        request: Request<proto::FinalizeInvoiceRequest>,
    ) -> Result<Response<proto::FinalizeInvoiceResponse>, Status> {
        let origin = Origin::from_request(&request);
        let invoice = self
            .ctx
            .invoices()
            .finalize_invoice(&request.into_inner().invoice_id, &origin)
            .await?;
        Ok(Response::new(proto::FinalizeInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn void_invoice(
        &self,
        request: Request<proto::VoidInvoiceRequest>,
    ) -> Result<Response<proto::VoidInvoiceResponse>, Status> {
        let origin = Origin::from_request(&request);
        let invoice = self
            .ctx
            .invoices()
            .void_invoice(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::VoidInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn create_credit_note(
        &self,
        request: Request<proto::CreateCreditNoteRequest>,
    ) -> Result<Response<proto::CreateCreditNoteResponse>, Status> {
        let origin = Origin::from_request(&request);
        Ok(Response::new(
            self.ctx
                .invoices()
                .create_credit_note(request.into_inner(), &origin)
                .await?,
        ))
    }

    async fn reserve_refund(
        &self,
        request: Request<proto::ReserveRefundRequest>,
    ) -> Result<Response<proto::ReserveRefundResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .refunds()
                .reserve_refund(request.into_inner())
                .await?,
        ))
    }

    async fn list_credit_notes(
        &self,
        request: Request<proto::ListCreditNotesRequest>,
    ) -> Result<Response<proto::ListCreditNotesResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .invoices()
                .list_credit_notes(request.into_inner())
                .await?,
        ))
    }

    async fn run_billing(
        &self,
        request: Request<proto::RunBillingRequest>,
    ) -> Result<Response<proto::RunBillingResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .invoices()
                .run_billing(request.into_inner())
                .await?,
        ))
    }
}
