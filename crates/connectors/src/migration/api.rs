//! `tally.connectors.v1.MigrationService`: thin — requests are read here,
//! the rules live in [`super::Migrations`].

use rust_decimal::Decimal;
use tally_audit::Origin;
use tally_domain::ids::CustomerId;
use tally_proto::connectors::migration_service_server::MigrationService;
use tally_proto::connectors::{
    self as proto, BillingSystemChange, BillingSystemChanged, ComparePeriodRequest,
    ComparePeriodResponse, GetMigrationStatusRequest, GetMigrationStatusResponse,
    MapOrbPriceRequest, MapOrbPriceResponse,
};
use tally_proto::convert;
use tonic::{Request, Response, Status};

use super::model::{BillingSystem, BillingSystemState, ParityReport};
use super::{Change, Changed, Migrations};
use crate::error::ConnectorsError;

/// The gRPC face of [`Migrations`].
#[derive(Debug, Clone)]
pub struct MigrationApi {
    migrations: Option<Migrations>,
}

impl MigrationApi {
    /// Serves `migrations`; without them (no `ORB_API_KEY` or no
    /// `peers.invoicing_url`) every call is FAILED_PRECONDITION saying so.
    pub fn new(migrations: Option<Migrations>) -> Self {
        Self { migrations }
    }

    fn migrations(&self) -> Result<&Migrations, ConnectorsError> {
        self.migrations.as_ref().ok_or_else(|| {
            ConnectorsError::Refused(
                "migrations need ORB_API_KEY and peers.invoicing_url on the connectors service"
                    .to_owned(),
            )
        })
    }
}

fn customer(text: &str) -> Result<String, ConnectorsError> {
    convert::id::<CustomerId>(text, "customer_id")?;
    Ok(text.to_owned())
}

fn state(state: BillingSystemState) -> proto::BillingSystemState {
    match state {
        BillingSystemState::External => proto::BillingSystemState::External,
        BillingSystemState::Shadow => proto::BillingSystemState::Shadow,
        BillingSystemState::Cutover => proto::BillingSystemState::Cutover,
        BillingSystemState::RolledBack => proto::BillingSystemState::RolledBack,
    }
}

fn system(system: &BillingSystem) -> proto::BillingSystem {
    proto::BillingSystem {
        customer_id: system.customer_id.clone(),
        biller: system.biller.clone(),
        state: state(system.state) as i32,
        cutover_at: convert::maybe_timestamp(system.cutover_at),
        version: system.version,
        updated_at: Some(convert::timestamp(system.updated_at)),
    }
}

fn text(amount: Option<Decimal>) -> String {
    amount.map(|amount| amount.to_string()).unwrap_or_default()
}

/// A report on the wire.
pub fn report(report: &ParityReport) -> proto::ParityReport {
    proto::ParityReport {
        customer_id: report.customer_id.clone(),
        period: Some(convert::time_range(report.period.start, report.period.end)),
        biller: report.biller.clone(),
        tally_invoice_id: report.tally_invoice_id.clone(),
        external_invoice_id: report.external_invoice_id.clone(),
        currency: report.currency.clone(),
        matched: report.matched,
        lines_not_compared: report.lines_not_compared,
        findings: report
            .findings
            .iter()
            .map(|finding| proto::ParityFinding {
                subject: finding.subject.clone(),
                tally_amount: text(finding.tally_amount),
                external_amount: text(finding.external_amount),
                difference: text(finding.difference),
                matches: finding.matches,
                note: finding.note.clone(),
            })
            .collect(),
        compared_at: Some(convert::timestamp(report.compared_at)),
    }
}

fn changed(changed: Changed) -> Option<BillingSystemChanged> {
    let (evidence_json, evidence_csv) = changed
        .evidence
        .map(|evidence| (evidence.json, evidence.csv))
        .unwrap_or_default();
    Some(BillingSystemChanged {
        before: changed.before.as_ref().map(system),
        after: Some(system(&changed.after)),
        dry_run: changed.dry_run,
        evidence_json,
        evidence_csv,
    })
}

/// The change each of `StartShadow`, `Cutover` and `Rollback` carries (an absent one
/// reads as empty, so its customer id is refused as missing).
fn change(origin: Origin, request: Option<BillingSystemChange>) -> Result<Change, ConnectorsError> {
    let request = request.unwrap_or_default();
    Ok(Change {
        customer_id: customer(&request.customer_id)?,
        reason: request.reason,
        origin,
        dry_run: request.dry_run,
    })
}

#[tonic::async_trait]
impl MigrationService for MigrationApi {
    async fn get_migration_status(
        &self,
        request: Request<GetMigrationStatusRequest>,
    ) -> Result<Response<GetMigrationStatusResponse>, Status> {
        let customer_id = customer(&request.get_ref().customer_id)?;
        let status = self.migrations()?.status(&customer_id).await?;
        Ok(Response::new(GetMigrationStatusResponse {
            billing_system: status.system.as_ref().map(system),
            reports: status.reports.iter().map(report).collect(),
            current_period: status
                .period
                .map(|period| convert::time_range(period.start, period.end)),
        }))
    }

    async fn start_shadow(
        &self,
        request: Request<proto::StartShadowRequest>,
    ) -> Result<Response<proto::StartShadowResponse>, Status> {
        let change = change(Origin::from_request(&request), request.into_inner().change)?;
        Ok(Response::new(proto::StartShadowResponse {
            result: changed(self.migrations()?.start_shadow(&change).await?),
        }))
    }

    async fn compare_period(
        &self,
        request: Request<ComparePeriodRequest>,
    ) -> Result<Response<ComparePeriodResponse>, Status> {
        let request = request.into_inner();
        let customer_id = customer(&request.customer_id)?;
        let period_end = convert::instant(request.period_end.as_ref());
        let compared = self
            .migrations()?
            .compare(&customer_id, period_end, request.dry_run)
            .await?;
        Ok(Response::new(ComparePeriodResponse {
            report: Some(report(&compared)),
        }))
    }

    async fn cutover(
        &self,
        request: Request<proto::CutoverRequest>,
    ) -> Result<Response<proto::CutoverResponse>, Status> {
        let change = change(Origin::from_request(&request), request.into_inner().change)?;
        Ok(Response::new(proto::CutoverResponse {
            result: changed(self.migrations()?.cutover(&change).await?),
        }))
    }

    async fn rollback(
        &self,
        request: Request<proto::RollbackRequest>,
    ) -> Result<Response<proto::RollbackResponse>, Status> {
        let change = change(Origin::from_request(&request), request.into_inner().change)?;
        Ok(Response::new(proto::RollbackResponse {
            result: changed(self.migrations()?.rollback(&change).await?),
        }))
    }

    async fn map_orb_price(
        &self,
        request: Request<MapOrbPriceRequest>,
    ) -> Result<Response<MapOrbPriceResponse>, Status> {
        let request = request.into_inner();
        self.migrations()?
            .map_orb_price(&request.orb_price_id, &request.charge_key)
            .await?;
        Ok(Response::new(MapOrbPriceResponse {}))
    }
}
