//! `tally.clock.v1.ClockService`: read the clock, and move it in dev and test.
//! Every move goes through the process's [`ClockMoves`] (the audit log's
//! `clock.advanced` / `clock.set`, given by the composition root: the runtime
//! does not depend on the audit crate).

use chrono::{DateTime, Utc};
use tally_proto::clock::clock_service_server::{ClockService, ClockServiceServer};
use tally_proto::clock::{
    AdvanceTimeRequest, AdvanceTimeResponse, ClockMode, GetTimeRequest, GetTimeResponse,
    SetTimeRequest, SetTimeResponse,
};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::clock::{Clock as _, ManualClock, SharedClock};
use crate::error::ServiceError;
use crate::server::GrpcServer;

/// A move of the clock to record: who asked, what, from when to when.
#[derive(Debug)]
pub struct ClockMove<'a> {
    /// The call's metadata and extensions (its key, `x-request-id`).
    pub caller: &'a Request<()>,
    /// `clock.advanced` or `clock.set`.
    pub action: &'static str,
    /// The clock before the move.
    pub before: DateTime<Utc>,
    /// Where the move takes it.
    pub after: DateTime<Utc>,
}

/// The clock moves: what a move must be recorded with. The move is `apply`
/// (the in-memory clock, which may refuse: then nothing is recorded).
#[tonic::async_trait]
pub trait ClockMoves: Send + Sync + std::fmt::Debug + 'static {
    /// Records `change` and applies it with `apply`, both or neither (as far
    /// as an in-memory clock allows: `apply` runs inside the record's
    /// transaction, before its commit).
    async fn record(
        &self,
        change: ClockMove<'_>,
        apply: &(dyn Fn() -> Result<DateTime<Utc>, Status> + Send + Sync),
    ) -> Result<DateTime<Utc>, Status>;
}

/// Moves the clock without recording anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unrecorded;

#[tonic::async_trait]
impl ClockMoves for Unrecorded {
    async fn record(
        &self,
        _change: ClockMove<'_>,
        apply: &(dyn Fn() -> Result<DateTime<Utc>, Status> + Send + Sync),
    ) -> Result<DateTime<Utc>, Status> {
        apply()
    }
}

/// Serves the process clock.
#[derive(Debug, Clone)]
pub struct ClockApi {
    clock: SharedClock,
    moves: std::sync::Arc<dyn ClockMoves>,
}

impl ClockApi {
    /// A service over `clock` whose moves are not recorded.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            moves: std::sync::Arc::new(Unrecorded),
        }
    }

    /// Records every move with `moves`.
    pub fn with_moves(mut self, moves: std::sync::Arc<dyn ClockMoves>) -> Self {
        self.moves = moves;
        self
    }

    /// This service, ready to merge into a service's [`GrpcServer`].
    pub fn grpc_server(self) -> GrpcServer {
        GrpcServer::new(
            move |routes: Routes| routes.add_service(ClockServiceServer::new(self)),
            vec![<ClockServiceServer<Self> as NamedService>::NAME],
        )
    }

    fn manual(&self) -> Result<&ManualClock, Status> {
        self.clock.as_manual().ok_or_else(|| {
            Status::failed_precondition(
                "this service runs on the wall clock; start it with clock.mode = manual",
            )
        })
    }
}

/// Converts a protobuf timestamp, naming `field` when it is missing
/// (`required`) or out of range (`invalid_timestamp`): INVALID_ARGUMENT with
/// the `Violations` detail (the reader is `tally_proto::convert`'s).
pub fn timestamp_to_chrono(
    timestamp: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, Status> {
    tally_proto::convert::required_instant(timestamp.as_ref(), field)
        .map_err(|violation| ServiceError::invalid(vec![violation.into()]).into())
}

/// Converts an instant to a protobuf timestamp.
pub fn chrono_to_timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    tally_proto::convert::timestamp(instant)
}

#[tonic::async_trait]
impl ClockService for ClockApi {
    async fn get_time(
        &self,
        _request: Request<GetTimeRequest>,
    ) -> Result<Response<GetTimeResponse>, Status> {
        let mode = if self.clock.as_manual().is_some() {
            ClockMode::Manual
        } else {
            ClockMode::Wall
        };
        Ok(Response::new(GetTimeResponse {
            now: Some(chrono_to_timestamp(self.clock.now())),
            mode: mode.into(),
        }))
    }

    async fn advance_time(
        &self,
        request: Request<AdvanceTimeRequest>,
    ) -> Result<Response<AdvanceTimeResponse>, Status> {
        let manual = self.manual()?;
        let (metadata, extensions, message) = request.into_parts();
        let caller = Request::from_parts(metadata, extensions, ());
        let duration = message
            .duration
            .ok_or_else(|| invalid("duration", "required", "is required"))?;
        let duration = chrono::Duration::seconds(duration.seconds)
            + chrono::Duration::nanoseconds(i64::from(duration.nanos));
        if duration <= chrono::Duration::zero() {
            return Err(invalid("duration", "must_be_positive", "must be positive"));
        }
        let before = manual.now();
        let change = ClockMove {
            caller: &caller,
            action: "clock.advanced",
            before,
            after: before + duration,
        };
        let apply = || {
            manual
                .advance(duration)
                .map_err(|error| invalid("duration", "clock_moves_forward", error.to_string()))
        };
        let now = self.moves.record(change, &apply).await?;
        tracing::info!(%now, "clock advanced");
        Ok(Response::new(AdvanceTimeResponse {
            now: Some(chrono_to_timestamp(now)),
        }))
    }

    async fn set_time(
        &self,
        request: Request<SetTimeRequest>,
    ) -> Result<Response<SetTimeResponse>, Status> {
        let manual = self.manual()?;
        let (metadata, extensions, message) = request.into_parts();
        let caller = Request::from_parts(metadata, extensions, ());
        let instant = timestamp_to_chrono(message.time, "time")?;
        let change = ClockMove {
            caller: &caller,
            action: "clock.set",
            before: manual.now(),
            after: instant,
        };
        let apply = || {
            manual
                .set(instant)
                .map_err(|error| invalid("time", "clock_moves_forward", error.to_string()))
        };
        let now = self.moves.record(change, &apply).await?;
        tracing::info!(%now, "clock set");
        Ok(Response::new(SetTimeResponse {
            now: Some(chrono_to_timestamp(now)),
        }))
    }
}

/// INVALID_ARGUMENT for one `rule` broken on `field`, with its `Violations` detail.
fn invalid(field: &str, rule: &str, description: impl Into<String>) -> Status {
    ServiceError::invalid_field(field, rule, description).into()
}
