//! The `QuoteService` gRPC surface: each RPC unwraps its request, runs it on the
//! quotes service and wraps the quote.

use tally_domain::quote::QuoteStatus;
use tally_proto::invoicing as proto;
use tally_proto::invoicing::quote_service_server::QuoteService;
use tonic::{Request, Response, Status};

use prost::Message as _;

use crate::idempotency::request_hash;

#[tonic::async_trait]
impl QuoteService for crate::InvoicingApi {
    async fn create_quote(
        &self,
        request: Request<proto::CreateQuoteRequest>,
    ) -> Result<Response<proto::CreateQuoteResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let quote = self
            .ctx
            .quotes()
            .create_quote(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::CreateQuoteResponse {
            quote: Some(quote),
        }))
    }

    async fn preview_quote(
        &self,
        request: Request<proto::PreviewQuoteRequest>,
    ) -> Result<Response<proto::PreviewQuoteResponse>, Status> {
        Ok(Response::new(
            self.ctx
                .quotes()
                .preview_quote(request.into_inner())
                .await?,
        ))
    }

    async fn get_quote(
        &self,
        request: Request<proto::GetQuoteRequest>,
    ) -> Result<Response<proto::GetQuoteResponse>, Status> {
        let quote = self
            .ctx
            .quotes()
            .get_quote(&request.into_inner().quote_id)
            .await?;
        Ok(Response::new(proto::GetQuoteResponse {
            quote: Some(quote),
        }))
    }

    async fn list_quotes(
        &self,
        request: Request<proto::ListQuotesRequest>,
    ) -> Result<Response<proto::ListQuotesResponse>, Status> {
        Ok(Response::new(
            self.ctx.quotes().list_quotes(request.into_inner()).await?,
        ))
    }

    async fn finalize_quote(
        &self,
        request: Request<proto::FinalizeQuoteRequest>,
    ) -> Result<Response<proto::FinalizeQuoteResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let quote = self
            .ctx
            .quotes()
            .finalize_quote(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::FinalizeQuoteResponse {
            quote: Some(quote),
        }))
    }

    async fn accept_quote(
        &self,
        request: Request<proto::AcceptQuoteRequest>,
    ) -> Result<Response<proto::AcceptQuoteResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let (quote, accepted_now) = self
            .ctx
            .quotes()
            .accept_quote(request.into_inner(), &origin)
            .await?;
        Ok(Response::new(proto::AcceptQuoteResponse {
            quote: Some(quote),
            accepted_now,
        }))
    }

    async fn decline_quote(
        &self,
        request: Request<proto::DeclineQuoteRequest>,
    ) -> Result<Response<proto::DeclineQuoteResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let request = request.into_inner();
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let quote = self
            .ctx
            .quotes()
            .close_quote(
                ("DeclineQuote", &request.idempotency_key, &request.quote_id),
                (QuoteStatus::Declined, &request.reason),
                hash,
                &origin,
            )
            .await?;
        Ok(Response::new(proto::DeclineQuoteResponse {
            quote: Some(quote),
        }))
    }

    async fn cancel_quote(
        &self,
        request: Request<proto::CancelQuoteRequest>,
    ) -> Result<Response<proto::CancelQuoteResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let request = request.into_inner();
        let hash = request_hash(&request.encode_to_vec(), &[]);
        let quote = self
            .ctx
            .quotes()
            .close_quote(
                ("CancelQuote", &request.idempotency_key, &request.quote_id),
                (QuoteStatus::Canceled, &request.reason),
                hash,
                &origin,
            )
            .await?;
        Ok(Response::new(proto::CancelQuoteResponse {
            quote: Some(quote),
        }))
    }
}
