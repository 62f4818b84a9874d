//! `tally.ingest.v1.IngestService`: the gRPC surface over the pipeline and the
//! log. Request checks that fail the whole call happen here; everything about
//! individual events is a per-event result from the pipeline.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tally_domain::ids::{BackfillId, CustomerId, IdError, PrefixedId, RejectionId};
use tally_proto::events::Intake;
use tally_proto::ingest::ingest_service_server::IngestService;
use tally_proto::ingest::*;
use tally_runtime::SharedClock;
use tally_runtime::clock_service::{chrono_to_timestamp, timestamp_to_chrono};
use tally_runtime::decode_errors;
use tally_runtime::error::{ErrorKind, FieldViolation, ServiceError};
use tally_runtime::ids::SharedIdGenerator;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::backfill::{self, BackfillError, NewBackfill};
use crate::decode::decode;
use crate::pipeline::{BatchOutcome, Incoming, IngestError, Ingestor, RejectionStorage};
use crate::reads::{self, ReadPosition, RejectionFilter};
use crate::relay::AcceptedRelay;

/// Events per `ReadEvents` chunk.
const READ_CHUNK: i64 = 1000;
/// Most rejection ids per `ReplayRejectedEvents`.
const MAX_REPLAY_IDS: usize = 1000;
/// Longest a backfill may stay open.
const MAX_BACKFILL_DAYS: i64 = 30;

type ResponseStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `IngestService` implementation.
#[derive(Debug, Clone)]
pub struct IngestApi {
    pool: PgPool,
    clock: SharedClock,
    ids: SharedIdGenerator,
    ingestor: Arc<Ingestor>,
    relay: AcceptedRelay,
    max_batch_events: usize,
    stream_window: u32,
}

impl IngestApi {
    /// The service over `ingestor`.
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        ids: SharedIdGenerator,
        ingestor: Arc<Ingestor>,
        relay: AcceptedRelay,
        max_batch_events: usize,
        stream_window: u32,
    ) -> Self {
        Self {
            pool,
            clock,
            ids,
            ingestor,
            relay,
            max_batch_events,
            stream_window,
        }
    }

    fn check_batch_size(&self, count: usize) -> Result<(), Status> {
        if count == 0 {
            return Err(invalid_rule(
                "events",
                "required",
                "at least one event is required",
            ));
        }
        if count > self.max_batch_events {
            return Err(invalid_rule(
                "events",
                "max_entries",
                format!(
                    "{count} events in one batch, at most {} allowed; split the batch",
                    self.max_batch_events
                ),
            ));
        }
        Ok(())
    }
}

fn unavailable(error: IngestError) -> Status {
    tracing::error!(%error, "ingest batch failed");
    ServiceError::new(
        ErrorKind::Unavailable,
        "the event log cannot be written right now; retry the batch (it is safe)",
    )
    .into()
}

/// INVALID_ARGUMENT for a `field: description` message, with the violation
/// it states (`FieldViolation::from_message`) through the runtime's table.
fn invalid_argument(message: impl Into<String>) -> Status {
    ServiceError::invalid(vec![FieldViolation::from_message(&message.into())]).into()
}

/// INVALID_ARGUMENT for `rule` broken on `field`, through the runtime's table.
fn invalid_rule(field: &str, rule: &str, description: impl Into<String>) -> Status {
    ServiceError::invalid_field(field, rule, description).into()
}

/// A `T` id read at the edge: INVALID_ARGUMENT naming `field` and the expected prefix otherwise.
fn parse_id<T: PrefixedId + std::str::FromStr<Err = IdError>>(
    text: &str,
    field: &str,
) -> Result<T, Status> {
    tally_proto::convert::id(text, field)
        .map_err(|violation| ServiceError::invalid(vec![violation.into()]).into())
}

fn internal(error: sqlx::Error) -> Status {
    // PostgreSQL text cannot hold NUL (22021) and jsonb cannot hold \u0000
    // (22P05): a lookup id, filter or page token with one is the caller's bad
    // input (no stored id contains one), not a failure of ours.
    if let sqlx::Error::Database(database) = &error
        && matches!(database.code().as_deref(), Some("22021" | "22P05"))
    {
        tracing::debug!(%error, "request text refused by PostgreSQL");
        return invalid_rule(
            "",
            "invalid_characters",
            "a text field of the request contains a NUL character, which no id, filter or token may contain",
        );
    }
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::error!(%error, "ingest query failed");
            ServiceError::new(
                ErrorKind::Unavailable,
                "the event log is unavailable; retry",
            )
            .into()
        }
        // The runtime logs it once and answers a bare INTERNAL.
        _ => ServiceError::new(ErrorKind::Internal, format!("ingest query failed: {error}")).into(),
    }
}

fn page_size(requested: i32) -> i64 {
    match requested {
        size if size <= 0 => 50,
        size => i64::from(size.min(1000)),
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(invalid_rule(field, "required", "is required"))
    } else {
        Ok(value)
    }
}

fn time_range(
    range: Option<&tally_proto::common::TimeRange>,
    field: &str,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let period = tally_proto::convert::required_period(range, field)
        .map_err(|violation| Status::from(ServiceError::invalid(vec![violation.into()])))?;
    Ok((period.start(), period.end()))
}

/// Processes one stream batch; the answer carries its sequence number.
async fn stream_batch(
    ingestor: Arc<Ingestor>,
    batch_sequence: u64,
    events: Vec<tally_proto::events::UsageEvent>,
    window: u32,
) -> Result<IngestStreamResponse, Status> {
    let items = events.into_iter().map(Incoming::Event).collect();
    let outcome = ingestor
        .ingest(items, Intake::Grpc, RejectionStorage::Store)
        .await
        .map_err(unavailable)?;
    Ok(IngestStreamResponse {
        batch_sequence,
        results: outcome.results,
        counts: Some(outcome.counts),
        window,
    })
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn ingest_batch(
        &self,
        request: Request<IngestBatchRequest>,
    ) -> Result<Response<IngestBatchResponse>, Status> {
        let events = request.into_inner().events;
        self.check_batch_size(events.len())?;
        let items = events.into_iter().map(Incoming::Event).collect();
        let BatchOutcome { results, counts } = self
            .ingestor
            .ingest(items, Intake::Grpc, RejectionStorage::Store)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(IngestBatchResponse {
            results,
            counts: Some(counts),
        }))
    }

    async fn ingest_stream(
        &self,
        request: Request<Streaming<IngestStreamRequest>>,
    ) -> Result<Response<ResponseStream<IngestStreamResponse>>, Status> {
        let mut inbound = request.into_inner();
        let window = self.stream_window;
        let max_events = self.max_batch_events;
        let ingestor = Arc::clone(&self.ingestor);
        let (sender, receiver) = mpsc::channel(window as usize);
        tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut last_sequence: Option<u64> = None;
            let mut reading = true;
            let mut ending_error: Option<Status> = None;
            loop {
                tokio::select! {
                    // Flow control: read the next batch only while under the window.
                    next = inbound.message(), if reading && in_flight.len() < window as usize => {
                        match next {
                            Ok(Some(batch)) => {
                                let problem = if batch.events.is_empty() {
                                    Some("events: at least one event is required".to_owned())
                                } else if batch.events.len() > max_events {
                                    Some(format!("events: {} events in batch {}, at most {max_events} allowed", batch.events.len(), batch.batch_sequence))
                                } else if last_sequence.is_some_and(|last| batch.batch_sequence <= last) {
                                    Some(format!("batch_sequence: {} does not increase (last was {})", batch.batch_sequence, last_sequence.unwrap_or_default()))
                                } else {
                                    None
                                };
                                match problem {
                                    Some(problem) => {
                                        ending_error = Some(invalid_argument(problem));
                                        reading = false;
                                    }
                                    None => {
                                        last_sequence = Some(batch.batch_sequence);
                                        in_flight.push_back(stream_batch(Arc::clone(&ingestor), batch.batch_sequence, batch.events, window));
                                    }
                                }
                            }
                            Ok(None) => reading = false,
                            // A request that cannot be decoded ends the stream with
                            // INVALID_ARGUMENT (after the batches before it are answered).
                            Err(status) if decode_errors::is_malformed_request(&status) => {
                                ending_error = Some(decode_errors::caller_status(status));
                                reading = false;
                            }
                            Err(status) => {
                                tracing::debug!(%status, "ingest stream broken by the client");
                                reading = false;
                            }
                        }
                    }
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        let failed = done.is_err();
                        if sender.send(done).await.is_err() || failed {
                            return; // client gone, or the log failed: the stream ends
                        }
                    }
                    else => break,
                }
            }
            if let Some(error) = ending_error {
                let _ = sender.send(Err(error)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn read_events(
        &self,
        request: Request<ReadEventsRequest>,
    ) -> Result<Response<ResponseStream<ReadEventsResponse>>, Status> {
        let request = request.into_inner();
        let customer_id = required(&request.customer_id, "customer_id")?.to_owned();
        let (start, end) = time_range(request.time_range.as_ref(), "time_range")?;
        let mut after = match request.resume_token.as_str() {
            "" => None,
            token => Some(ReadPosition::parse(token).ok_or_else(|| {
                invalid_argument("resume_token: not a token this service issued")
            })?),
        };
        let max_seq = match request.max_sequence_number {
            0 => reads::snapshot_bound(&self.pool).await.map_err(internal)?,
            limit => i64::try_from(limit).unwrap_or(i64::MAX),
        };
        let event_type = (!request.event_type.is_empty()).then_some(request.event_type);
        let pool = self.pool.clone();
        let (sender, receiver) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let page = reads::events_page(
                    &pool,
                    &customer_id,
                    start,
                    end,
                    event_type.as_deref(),
                    max_seq,
                    after,
                    READ_CHUNK,
                )
                .await;
                let page = match page {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(internal(error))).await;
                        return;
                    }
                };
                let full = page.len() as i64 == READ_CHUNK;
                let Some((last, _)) = page.last() else {
                    return;
                };
                after = Some(*last);
                let chunk = ReadEventsResponse {
                    resume_token: last.token(),
                    events: page.into_iter().map(|(_, event)| event).collect(),
                    max_sequence_number: u64::try_from(max_seq).unwrap_or(0),
                };
                if sender.send(Ok(chunk)).await.is_err() || !full {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_ingest_status(
        &self,
        request: Request<GetIngestStatusRequest>,
    ) -> Result<Response<GetIngestStatusResponse>, Status> {
        let request = request.into_inner();
        let customer_id = required(&request.customer_id, "customer_id")?;
        let event_id = required(&request.event_id, "event_id")?;
        // An accepted event's ids never hold NUL (validation refuses control
        // characters) and PostgreSQL text cannot carry one; its rejections are
        // stored with NUL replaced, so they are still found below.
        let key = if customer_id.contains('\0') || event_id.contains('\0') {
            None
        } else {
            reads::accepted_key(&self.pool, customer_id, event_id)
                .await
                .map_err(internal)?
        };
        let rejections: Vec<RejectedEvent> =
            reads::rejections_of(&self.pool, customer_id, event_id)
                .await
                .map_err(internal)?
                .into_iter()
                .map(reads::RejectionRow::into_proto)
                .collect();
        let mut response = GetIngestStatusResponse {
            rejections,
            ..GetIngestStatusResponse::default()
        };
        match key {
            Some((stored, duplicates)) => {
                let has_conflicts = response.rejections.iter().any(|rejected| {
                    rejected.rejection.as_ref().is_some_and(|r| {
                        r.kind == tally_proto::events::RejectionKind::Conflict as i32
                    })
                });
                response.state = if has_conflicts {
                    IngestState::AcceptedWithConflicts
                } else {
                    IngestState::Accepted
                } as i32;
                response.accepted =
                    reads::accepted_event(&self.pool, customer_id, event_id, stored.event_time)
                        .await
                        .map_err(internal)?;
                response.published = !reads::is_pending(&self.pool, stored.seq)
                    .await
                    .map_err(internal)?;
                response.duplicate_count = u64::try_from(duplicates).unwrap_or(0);
            }
            None if response.rejections.is_empty() => {
                response.state = IngestState::NotSeen as i32;
            }
            None => response.state = IngestState::Rejected as i32,
        }
        Ok(Response::new(response))
    }

    async fn list_rejected_events(
        &self,
        request: Request<ListRejectedEventsRequest>,
    ) -> Result<Response<ListRejectedEventsResponse>, Status> {
        let request = request.into_inner();
        let (from, to) = match request.rejected_range.as_ref() {
            None => (None, None),
            Some(range) => (
                range
                    .start_time
                    .map(|t| timestamp_to_chrono(Some(t), "rejected_range.start_time"))
                    .transpose()?,
                range
                    .end_time
                    .map(|t| timestamp_to_chrono(Some(t), "rejected_range.end_time"))
                    .transpose()?,
            ),
        };
        let filter = RejectionFilter {
            customer_id: (!request.customer_id.is_empty()).then_some(request.customer_id),
            kind: (request.kind != 0).then(|| i16::try_from(request.kind).unwrap_or(-1)),
            state: (request.state != 0).then(|| i16::try_from(request.state).unwrap_or(-1)),
            from,
            to,
            rule: (!request.rule.is_empty()).then_some(request.rule),
        };
        let after =
            match request.page_token.as_str() {
                "" => None,
                token => Some(parse_rejection_token(token).ok_or_else(|| {
                    invalid_argument("page_token: not a token this service issued")
                })?),
            };
        let limit = page_size(request.page_size);
        let rows = reads::list_rejections(&self.pool, &filter, after, limit + 1)
            .await
            .map_err(internal)?;
        let more = rows.len() as i64 > limit;
        let rejected_events: Vec<RejectedEvent> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(50))
            .map(reads::RejectionRow::into_proto)
            .collect();
        let next_page_token = match rejected_events
            .last()
            .and_then(|last| last.rejection.as_ref())
        {
            Some(last) if more => format!(
                "{}|{}",
                last.rejected_at
                    .and_then(|t| timestamp_to_chrono(Some(t), "").ok())
                    .map(|t| t.timestamp_micros())
                    .unwrap_or_default(),
                last.rejection_id
            ),
            _ => String::new(),
        };
        Ok(Response::new(ListRejectedEventsResponse {
            rejected_events,
            next_page_token,
        }))
    }

    async fn replay_rejected_events(
        &self,
        request: Request<ReplayRejectedEventsRequest>,
    ) -> Result<Response<ReplayRejectedEventsResponse>, Status> {
        let given = request.into_inner().rejection_ids;
        if given.is_empty() || given.len() > MAX_REPLAY_IDS {
            return Err(invalid_argument(format!(
                "rejection_ids: between 1 and {MAX_REPLAY_IDS} ids required, got {}",
                given.len()
            )));
        }
        let ids: Vec<RejectionId> = given
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(id, &format!("rejection_ids[{index}]")))
            .collect::<Result<_, _>>()?;
        let rows = reads::rejections_by_id(&self.pool, &ids)
            .await
            .map_err(internal)?;
        let by_id: HashMap<&str, &reads::RejectionRow> =
            rows.iter().map(|row| (row.id(), row)).collect();
        if let Some(missing) = ids.iter().find(|id| !by_id.contains_key(id.as_str())) {
            return Err(not_found(format!(
                "rejection_ids: rejection {:?} does not exist",
                missing.as_str()
            )));
        }
        let items: Vec<Incoming> = ids
            .iter()
            .map(|id| {
                let row = by_id[id.as_str()];
                match (row.event(), row.raw()) {
                    // A summary is not the event: never accept it in its place.
                    (Some(summary), _) if row.is_summarized() => Incoming::Flawed {
                        event: summary,
                        violations: vec![crate::validation::violation(
                            "event",
                            "not_replayable",
                            "the event was too large to keep; only a summary was stored: resend the event"
                                .to_owned(),
                        )],
                    },
                    (Some(event), _) => Incoming::Event(event),
                    (None, Some((payload, content_type))) => {
                        decode(payload, Some(content_type).filter(|c| !c.is_empty()))
                    }
                    (None, None) => Incoming::Undecodable {
                        payload: Vec::new(),
                        content_type: String::new(),
                        reason: "the rejected event was not kept".to_owned(),
                    },
                }
            })
            .collect();
        let mut outcome = self
            .ingestor
            .ingest(items, Intake::Replay, RejectionStorage::ReportOnly)
            .await
            .map_err(unavailable)?;
        let mut resolved = Vec::new();
        for (id, result) in ids.iter().zip(outcome.results.iter_mut()) {
            if result.outcome == EventOutcome::Accepted as i32
                || result.outcome == EventOutcome::Duplicate as i32
            {
                resolved.push(id.clone());
            } else {
                result.rejection_id = id.to_string();
            }
        }
        reads::record_replays(&self.pool, &ids, &resolved, self.clock.now())
            .await
            .map_err(internal)?;
        Ok(Response::new(ReplayRejectedEventsResponse {
            results: outcome.results,
            counts: Some(outcome.counts),
        }))
    }

    async fn open_backfill(
        &self,
        request: Request<OpenBackfillRequest>,
    ) -> Result<Response<OpenBackfillResponse>, Status> {
        let origin = tally_audit::Origin::from_request(&request);
        let request = request.into_inner();
        let now = self.clock.now();
        let idempotency_key = required(&request.idempotency_key, "idempotency_key")?.to_owned();
        let customer_id = parse_id::<CustomerId>(&request.customer_id, "customer_id")?;
        let (start, end) = time_range(request.event_time_range.as_ref(), "event_time_range")?;
        if end > now {
            return Err(invalid_argument(
                "event_time_range.end_time: must not be in the future (recent events need no backfill)",
            ));
        }
        let duration = match request.duration {
            None => Duration::hours(24),
            Some(duration) if duration.seconds > 0 || duration.nanos > 0 => {
                Duration::seconds(duration.seconds)
            }
            Some(_) => {
                return Err(invalid_argument("duration: must be positive"));
            }
        };
        if duration > Duration::days(MAX_BACKFILL_DAYS) {
            return Err(invalid_argument(format!(
                "duration: at most {MAX_BACKFILL_DAYS} days"
            )));
        }
        let backfill = backfill::open(
            &self.pool,
            self.ids.mint::<BackfillId>(),
            &NewBackfill {
                idempotency_key,
                customer_id,
                start,
                end,
                duration,
                reason: request.reason,
            },
            now,
            &backfill::Audit {
                origin,
                ids: &*self.ids,
            },
        )
        .await
        .map_err(backfill_status)?;
        Ok(Response::new(OpenBackfillResponse {
            backfill: Some(backfill),
        }))
    }

    async fn close_backfill(
        &self,
        request: Request<CloseBackfillRequest>,
    ) -> Result<Response<CloseBackfillResponse>, Status> {
        let audit = backfill::Audit {
            origin: tally_audit::Origin::from_request(&request),
            ids: &*self.ids,
        };
        let request = request.into_inner();
        let id = parse_id::<BackfillId>(&request.backfill_id, "backfill_id")?;
        let backfill = backfill::close(&self.pool, &id, self.clock.now(), &audit)
            .await
            .map_err(backfill_status)?;
        Ok(Response::new(CloseBackfillResponse {
            backfill: Some(backfill),
        }))
    }

    async fn list_backfills(
        &self,
        request: Request<ListBackfillsRequest>,
    ) -> Result<Response<ListBackfillsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size);
        let after = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
        let mut backfills = backfill::list(
            &self.pool,
            (!request.customer_id.is_empty()).then_some(request.customer_id.as_str()),
            request.open_only,
            self.clock.now(),
            after,
            limit + 1,
        )
        .await
        .map_err(internal)?;
        let more = backfills.len() as i64 > limit;
        backfills.truncate(usize::try_from(limit).unwrap_or(50));
        let next_page_token = match backfills.last() {
            Some(last) if more => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListBackfillsResponse {
            backfills,
            next_page_token,
        }))
    }

    async fn get_ingest_stats(
        &self,
        _request: Request<GetIngestStatsRequest>,
    ) -> Result<Response<GetIngestStatsResponse>, Status> {
        let counters = self.ingestor.metrics().snapshot();
        let high_water = reads::committed_high_water(&self.pool)
            .await
            .map_err(internal)?;
        let published = reads::published_high_water(&self.pool)
            .await
            .map_err(internal)?;
        let lag = self.relay.lag_seconds().await.map_err(internal)?;
        Ok(Response::new(GetIngestStatsResponse {
            accepted: counters.accepted,
            duplicate: counters.duplicate,
            conflict: counters.conflict,
            rejected_by_rule: counters.rejected_by_rule.into_iter().collect(),
            log_high_water_sequence_number: u64::try_from(high_water).unwrap_or(0),
            published_sequence_number: u64::try_from(published).unwrap_or(0),
            relay_lag: Some(prost_types::Duration {
                seconds: lag.trunc() as i64,
                nanos: (lag.fract() * 1e9) as i32,
            }),
            dead_lettered: counters.dead_lettered,
            started_at: Some(chrono_to_timestamp(counters.started_at)),
        }))
    }
}

fn parse_rejection_token(token: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, id) = token.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.to_owned(),
    ))
}

fn backfill_status(error: BackfillError) -> Status {
    match error {
        BackfillError::IdempotencyConflict(_) => {
            ServiceError::new(ErrorKind::IdempotencyConflict, error.to_string()).into()
        }
        BackfillError::NotFound(_) => {
            ServiceError::new(ErrorKind::NotFound, error.to_string()).into()
        }
        BackfillError::Database(error) => internal(error),
        BackfillError::Audit(error) => error.into(),
    }
}

/// NOT_FOUND through the runtime's table.
fn not_found(message: impl Into<String>) -> Status {
    ServiceError::new(ErrorKind::NotFound, message).into()
}
