//! `ConnectorService`: the Orb customer mapping and what was forwarded.

use sqlx::PgPool;
use tally_domain::ids::CustomerId;
use tally_proto::connectors::connector_service_server::ConnectorService;
use tally_proto::connectors::{
    ForwardedEvent, GetForwardingStatsRequest, GetForwardingStatsResponse,
    ListForwardedEventsRequest, ListForwardedEventsResponse, MapOrbCustomerRequest,
    MapOrbCustomerResponse, OrbCustomerMapping,
};
use tally_proto::convert::{maybe_timestamp, timestamp};
use tally_runtime::SharedClock;
use tally_runtime::error::FieldViolation;
use tonic::{Request, Response, Status};

use super::ForwardingState;
use super::store::{self, ForwardedEventRow, MappingTimes};
use crate::error::ConnectorsError;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// Orb's external customer ids are free text; this bounds what Tally stores.
const MAX_EXTERNAL_ID_CHARS: usize = 255;

/// The gRPC surface of connectors.
#[derive(Debug, Clone)]
pub struct ConnectorApi {
    pool: PgPool,
    clock: SharedClock,
}

impl ConnectorApi {
    /// The API over `pool`, stamping with `clock`.
    pub fn new(pool: PgPool, clock: SharedClock) -> Self {
        Self { pool, clock }
    }
}

fn customer(value: &str, field: &str) -> Result<CustomerId, ConnectorsError> {
    value.parse::<CustomerId>().map_err(|_| {
        FieldViolation::new(
            field,
            "invalid_id",
            format!("{value:?} is not a customer id (`cus_…`)"),
        )
        .into()
    })
}

/// An optional `customer_id` filter: empty is every customer.
fn customer_filter(value: &str) -> Result<Option<String>, ConnectorsError> {
    if value.is_empty() {
        return Ok(None);
    }
    Ok(Some(customer(value, "customer_id")?.as_str().to_owned()))
}

fn external_id(value: &str) -> Result<String, ConnectorsError> {
    let count = value.chars().count();
    if count == 0 || count > MAX_EXTERNAL_ID_CHARS || value.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            "external_customer_id",
            "invalid_external_id",
            format!(
                "must be 1–{MAX_EXTERNAL_ID_CHARS} characters without control characters \
                 (the id the Orb customer was created with)"
            ),
        )
        .into());
    }
    Ok(value.to_owned())
}

fn state_filter(value: i32) -> Result<Option<ForwardingState>, ConnectorsError> {
    use tally_proto::connectors::ForwardingState as Wire;
    match Wire::try_from(value) {
        Ok(Wire::Unspecified) => Ok(None),
        Ok(Wire::Forwarded) => Ok(Some(ForwardingState::Forwarded)),
        Ok(Wire::Rejected) => Ok(Some(ForwardingState::Rejected)),
        Ok(Wire::NotMapped) => Ok(Some(ForwardingState::NotMapped)),
        Err(_) => Err(FieldViolation::new(
            "state",
            "invalid_enum",
            format!("{value} is not a ForwardingState"),
        )
        .into()),
    }
}

fn wire_state(state: ForwardingState) -> tally_proto::connectors::ForwardingState {
    use tally_proto::connectors::ForwardingState as Wire;
    match state {
        ForwardingState::Forwarded => Wire::Forwarded,
        ForwardingState::Rejected => Wire::Rejected,
        ForwardingState::NotMapped => Wire::NotMapped,
    }
}

fn page_token(token: &str) -> Result<i64, ConnectorsError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<i64>()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| {
            FieldViolation::new(
                "page_token",
                "invalid_page_token",
                format!("{token:?} was not issued for this listing"),
            )
            .into()
        })
}

#[tonic::async_trait]
impl ConnectorService for ConnectorApi {
    #[tracing::instrument(skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn map_orb_customer(
        &self,
        request: Request<MapOrbCustomerRequest>,
    ) -> Result<Response<MapOrbCustomerResponse>, Status> {
        let request = request.into_inner();
        let customer_id = customer(&request.customer_id, "customer_id")?;
        let external = external_id(&request.external_customer_id)?;
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await.map_err(ConnectorsError::from)?;
        let holder = store::customer_mapped_to(&mut transaction, &external)
            .await
            .map_err(ConnectorsError::from)?;
        if let Some(holder) = holder.filter(|holder| holder != customer_id.as_str()) {
            return Err(ConnectorsError::AlreadyMapped(format!(
                "external_customer_id {external:?} is mapped to {holder}; map {holder} to another \
                 id first"
            ))
            .into());
        }
        let upserted =
            store::upsert_mapping(&mut transaction, customer_id.as_str(), &external, now)
                .await
                .map_err(ConnectorsError::from)?;
        let changed = upserted.is_some();
        let MappingTimes {
            created_at,
            updated_at,
        } = match upserted {
            Some(times) => times,
            None => store::mapping_times(&mut transaction, customer_id.as_str())
                .await
                .map_err(ConnectorsError::from)?,
        };
        transaction.commit().await.map_err(ConnectorsError::from)?;
        if changed {
            tracing::info!(external_customer_id = %external, "customer mapped to orb");
        }
        Ok(Response::new(MapOrbCustomerResponse {
            mapping: Some(OrbCustomerMapping {
                customer_id: customer_id.as_str().to_owned(),
                external_customer_id: external,
                created_at: Some(timestamp(created_at)),
                updated_at: Some(timestamp(updated_at)),
            }),
            changed,
        }))
    }

    async fn list_forwarded_events(
        &self,
        request: Request<ListForwardedEventsRequest>,
    ) -> Result<Response<ListForwardedEventsResponse>, Status> {
        let request = request.into_inner();
        let customer_filter = customer_filter(&request.customer_id)?;
        let state = state_filter(request.state)?.map(ForwardingState::as_str);
        let after_seq = page_token(&request.page_token)?;
        let limit = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let rows = store::forwarded_events_page(
            &self.pool,
            after_seq,
            customer_filter.as_deref(),
            state,
            limit + 1,
        )
        .await
        .map_err(ConnectorsError::from)?;
        let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        let mut events = Vec::with_capacity(rows.len());
        let mut last_seq = 0i64;
        for row in rows.into_iter().take(usize::try_from(limit).unwrap_or(0)) {
            last_seq = row.seq;
            events.push(forwarded_event(row)?);
        }
        Ok(Response::new(ListForwardedEventsResponse {
            events,
            next_page_token: if more {
                last_seq.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn get_forwarding_stats(
        &self,
        request: Request<GetForwardingStatsRequest>,
    ) -> Result<Response<GetForwardingStatsResponse>, Status> {
        let request = request.into_inner();
        let customer_filter = customer_filter(&request.customer_id)?;
        let counts = store::forwarding_counts(&self.pool, customer_filter.as_deref())
            .await
            .map_err(ConnectorsError::from)?;
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(Response::new(GetForwardingStatsResponse {
            forwarded: count(counts.forwarded),
            rejected: count(counts.rejected),
            not_mapped: count(counts.not_mapped),
            mapped_customers: count(counts.mapped_customers),
            last_forwarded_at: maybe_timestamp(counts.last_forwarded_at),
        }))
    }
}

fn forwarded_event(row: ForwardedEventRow) -> Result<ForwardedEvent, ConnectorsError> {
    let state = ForwardingState::parse(&row.state).ok_or_else(|| {
        ConnectorsError::Internal(format!(
            "stored forwarding state {:?} is unknown",
            row.state
        ))
    })?;
    Ok(ForwardedEvent {
        customer_id: row.customer_id,
        event_id: row.event_id,
        idempotency_key: row.idempotency_key,
        external_customer_id: row.external_customer_id,
        state: wire_state(state).into(),
        reason: row.reason,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        event_time: Some(timestamp(row.event_time)),
        forwarded_at: maybe_timestamp(row.forwarded_at),
        recorded_at: Some(timestamp(row.recorded_at)),
    })
}
