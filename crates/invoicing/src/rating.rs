//! Calls to rating through the rating peer: plan versions from
//! `CatalogService` and priced usage from `RatingService.GetUsageCharges`.

use tally_domain::period::Period;
use tally_proto::rating::catalog_service_client::CatalogServiceClient;
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::{
    BatchGetUsageChargesRequest, GetPlanVersionRequest, GetUsageChargesRequest,
    GetUsageChargesResponse, PlanVersion, usage_charges_result,
};
use tally_runtime::peer::{self, Peer};
use tonic::Code;

use crate::error::{InvoicingError, Result};
use crate::wire::period_range;

/// The rating peer.
#[derive(Debug, Clone)]
pub struct RatingClient {
    peer: Peer,
}

fn peer_error(what: &str, status: &tonic::Status) -> InvoicingError {
    match status.code() {
        Code::NotFound => InvoicingError::NotFound(format!("{what}: {}", status.message())),
        Code::FailedPrecondition | Code::InvalidArgument => {
            InvoicingError::FailedPrecondition(format!("{what}: {}", status.message()))
        }
        // A refused key never heals by retrying: say it is configuration.
        Code::Unauthenticated | Code::PermissionDenied => InvoicingError::FailedPrecondition(
            peer::refused_key("rating", what, status)
                .unwrap_or_else(|| status.message().to_owned()),
        ),
        _ => InvoicingError::Unavailable(format!(
            "rating answered {what} with {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

impl RatingClient {
    /// A client of the rating peer.
    pub fn new(peer: Peer) -> Self {
        Self { peer }
    }

    /// A plan version by id.
    pub async fn plan_version(&self, id: &str) -> Result<PlanVersion> {
        let mut client =
            CatalogServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        let response = client
            .get_plan_version(GetPlanVersionRequest {
                plan_version_id: id.to_owned(),
            })
            .await
            .map_err(|status| peer_error(&format!("plan version {id}"), &status))?;
        response.into_inner().plan_version.ok_or_else(|| {
            InvoicingError::Unavailable(format!("rating returned no plan version {id}"))
        })
    }

    /// The priced usage of one billing period of a subscription.
    pub async fn usage_charges(
        &self,
        subscription_id: &str,
        period: &Period,
    ) -> Result<GetUsageChargesResponse> {
        let mut client =
            RatingServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        let response = client
            .get_usage_charges(GetUsageChargesRequest {
                subscription_id: subscription_id.to_owned(),
                period: Some(period_range(period)),
            })
            .await
            .map_err(|status| {
                // Rating learns subscriptions from the bus: NOT_FOUND right
                // after a change only means the snapshot is still on its way.
                let mut error =
                    peer_error(&format!("usage of {subscription_id} {period}"), &status);
                if status.code() == Code::NotFound {
                    error = InvoicingError::Unavailable(error.to_string());
                }
                error
            })?;
        Ok(response.into_inner())
    }

    /// The priced usage of many (subscription, period) pairs, in request
    /// order, through `BatchGetUsageCharges` (1,000 pairs per call). A pair
    /// rating could not answer (e.g. a snapshot still on its way) is `None`:
    /// the composer asks for it again and reports its error then.
    pub async fn usage_charges_many(
        &self,
        pairs: &[(&str, Period)],
    ) -> Result<Vec<Option<GetUsageChargesResponse>>> {
        const PAIRS_PER_CALL: usize = 1000;
        let mut client =
            RatingServiceClient::with_interceptor(self.peer.channel(), self.peer.interceptor());
        let mut answers = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(PAIRS_PER_CALL) {
            let requests = chunk
                .iter()
                .map(|(subscription_id, period)| GetUsageChargesRequest {
                    subscription_id: (*subscription_id).to_owned(),
                    period: Some(period_range(period)),
                })
                .collect();
            let response = client
                .batch_get_usage_charges(BatchGetUsageChargesRequest { requests })
                .await
                .map_err(|status| peer_error("usage of a bill-run batch", &status))?;
            answers.extend(response.into_inner().results.into_iter().map(|result| {
                match result.result {
                    Some(usage_charges_result::Result::Charges(charges)) => Some(charges),
                    _ => None,
                }
            }));
        }
        Ok(answers)
    }
}
