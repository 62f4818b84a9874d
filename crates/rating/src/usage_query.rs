//! `GetUsage`: a customer's usage of one meter over any time range, split by
//! group-by properties and into time buckets.
//!
//! Rating's aggregates are kept per subscription and billing period, which
//! cannot answer an arbitrary range or bucket. So this reads the customer's
//! accepted events of the meter back from ingest's log (`ReadEvents`, one
//! consistent sequence-number snapshot) and aggregates them with the meter
//! of the catalog, exactly as rating does. It therefore counts every accepted
//! event, rated or not yet (e.g. usage without a subscription), and its
//! `as_of_sequence_number` is the log's snapshot. The cost grows with the
//! number of events in the range; dashboards over long ranges of very busy
//! customers are better served by `GetCurrentCost` / `GetUsageCharges`.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use tally_domain::ids::CustomerId;
use tally_domain::meter::{AggregateState, GroupKey};
use tally_domain::period::Period;
use tally_proto::ingest::ReadEventsRequest;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::rating::{GetUsageRequest, GetUsageResponse, UsageValue};
use tally_runtime::peer::Peer;

use crate::cache::CatalogCache;
use crate::catalog::mapping::aggregation_to_proto;
use crate::error::RatingError;
use crate::usage::accepted_event;
use crate::wire::{decimal, instant, time_range};

/// Most buckets one request may ask for.
const MAX_BUCKETS: i64 = 1000;
/// Shortest bucket, in seconds.
const MIN_BUCKET_SECONDS: i64 = 60;

fn invalid<T>(message: impl Into<String>) -> Result<T, RatingError> {
    Err(RatingError::InvalidArgument(message.into()))
}

/// One row being aggregated.
struct Cell {
    state: AggregateState,
    event_count: u64,
}

/// Answers `GetUsage` (see the module documentation).
pub async fn get_usage(
    cache: &CatalogCache,
    ingest: &Peer,
    request: GetUsageRequest,
) -> Result<GetUsageResponse, RatingError> {
    tally_proto::convert::id::<CustomerId>(&request.customer_id, "customer_id")?;
    if request.meter_code.is_empty() {
        return invalid("meter_code: is required");
    }
    let range = request.time_range.as_ref();
    let (Some(start), Some(end)) = (
        instant(range.and_then(|range| range.start_time.as_ref())),
        instant(range.and_then(|range| range.end_time.as_ref())),
    ) else {
        return invalid("time_range: start_time and end_time are required");
    };
    if end <= start {
        return invalid("time_range: end_time must be after start_time");
    }
    let Some(meter) = cache.meter(&request.meter_code).await? else {
        return Err(RatingError::NotFound(format!(
            "meter_code: no meter has the code {}",
            request.meter_code
        )));
    };
    for (index, property) in request.group_by.iter().enumerate() {
        if !meter.spec().group_by.contains(property) {
            return invalid(format!(
                "group_by[{index}]: {property:?} is not a group-by property of meter {} ({})",
                request.meter_code,
                meter.spec().group_by.join(", ")
            ));
        }
    }
    let buckets = Buckets::new(start, end, request.bucket_size.as_ref())?;

    let mut client = IngestServiceClient::with_interceptor(ingest.channel(), ingest.interceptor())
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client
        .read_events(ReadEventsRequest {
            customer_id: request.customer_id.clone(),
            time_range: Some(time_range(start, end)),
            event_type: request.meter_code.clone(),
            resume_token: String::new(),
            max_sequence_number: 0,
        })
        .await
        .map_err(unavailable)?
        .into_inner();
    let mut cells: BTreeMap<(i64, GroupKey), Cell> = BTreeMap::new();
    let mut as_of_sequence_number = 0;
    while let Some(chunk) = stream.message().await.map_err(unavailable)? {
        as_of_sequence_number = as_of_sequence_number.max(chunk.max_sequence_number);
        for accepted in chunk.events {
            let Ok(decoded) = accepted_event(accepted, Vec::new()) else {
                continue;
            };
            let Ok(event) = decoded.event else {
                continue;
            };
            let Ok(Some(reading)) = meter.reading(&event) else {
                continue;
            };
            let Some(bucket) = buckets.index(event.timestamp()) else {
                continue;
            };
            let full = meter.group_key(&event);
            let mut group = GroupKey::empty();
            for property in &request.group_by {
                if let Some(value) = full.get(property) {
                    group.insert(property.clone(), value);
                }
            }
            let cell = cells.entry((bucket, group)).or_insert_with(|| Cell {
                state: AggregateState::new(meter.aggregation()),
                event_count: 0,
            });
            cell.state
                .absorb(&reading)
                .map_err(|error| RatingError::Corrupt(error.to_string()))?;
            cell.event_count += 1;
        }
    }
    let mut values = Vec::with_capacity(cells.len());
    for ((bucket, group), cell) in cells {
        let window = buckets.window(bucket)?;
        let quantity = cell
            .state
            .value(&window)
            .map_err(|error| RatingError::Corrupt(error.to_string()))?;
        values.push(UsageValue {
            group: group
                .dimensions()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            time_range: Some(time_range(window.start(), window.end())),
            quantity: Some(decimal(quantity)),
            event_count: cell.event_count,
        });
    }
    let (aggregation, _) = aggregation_to_proto(meter.aggregation());
    Ok(GetUsageResponse {
        aggregation: aggregation as i32,
        values,
        as_of_sequence_number,
    })
}

fn unavailable(status: tonic::Status) -> RatingError {
    // A refused key never heals by retrying: say it is configuration.
    if let Some(message) =
        tally_runtime::peer::refused_key("ingest", "reading the event log", &status)
    {
        return RatingError::FailedPrecondition(message);
    }
    RatingError::Unavailable(format!("reading ingest's event log: {}", status.message()))
}

/// The requested range cut into buckets (one bucket when not bucketed).
struct Buckets {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    size: Option<TimeDelta>,
}

impl Buckets {
    fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        size: Option<&prost_types::Duration>,
    ) -> Result<Self, RatingError> {
        let Some(size) = size else {
            return Ok(Self {
                start,
                end,
                size: None,
            });
        };
        if size.nanos != 0 || size.seconds < MIN_BUCKET_SECONDS {
            return invalid("bucket_size: must be a whole number of seconds, at least 60");
        }
        let span = (end - start).num_seconds();
        let count = span / size.seconds + i64::from(span % size.seconds != 0);
        if count > MAX_BUCKETS {
            return invalid(format!(
                "bucket_size: the range would have {count} buckets; at most {MAX_BUCKETS} are allowed"
            ));
        }
        Ok(Self {
            start,
            end,
            size: Some(TimeDelta::seconds(size.seconds)),
        })
    }

    /// The bucket of `instant`, if inside the range.
    fn index(&self, instant: DateTime<Utc>) -> Option<i64> {
        if instant < self.start || instant >= self.end {
            return None;
        }
        Some(match self.size {
            None => 0,
            Some(size) => (instant - self.start).num_seconds() / size.num_seconds(),
        })
    }

    /// Bucket `index` (the last one ends with the range).
    fn window(&self, index: i64) -> Result<Period, RatingError> {
        let (start, end) = match self.size {
            None => (self.start, self.end),
            Some(size) => {
                let start = self.start + size * i32::try_from(index).unwrap_or(i32::MAX);
                (start, (start + size).min(self.end))
            }
        };
        Period::new(start, end).map_err(|error| RatingError::Corrupt(error.to_string()))
    }
}
