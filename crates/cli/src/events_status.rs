//! `tally events status --customer C ID…`: where each event is, from end to
//! end — ingest's view (`GetIngestStatus`: accepted, rejected and why, never
//! seen) and, for accepted ones, rating's (`GetEventRatingStatus`: rated, or
//! kept as unrated usage with the reason, or not heard of yet).
//!
//! Two services answer because each owns its half: ingest does not know
//! customers or prices and keeps accepting while rating is down, so it does
//! not ask rating; this command asks both.

use std::path::PathBuf;

use clap::Args;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{GetIngestStatusRequest, GetIngestStatusResponse, IngestState};
use tally_proto::rating::rating_service_client::RatingServiceClient;
use tally_proto::rating::{EventRatingState, EventRatingStatus, GetEventRatingStatusRequest};

use crate::admin::Call as _;
use crate::admin::usage::{hints, reason_name};
use crate::events_customers::CustomerIds;

/// Most event ids per command (rating's per-call limit).
const MAX_IDS: usize = 1000;

/// Options of `tally events status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The customer: `cus_…`, or the external id.
    #[arg(long)]
    customer: String,
    /// The producer-chosen event ids (up to 1,000).
    #[arg(required = true, value_name = "EVENT_ID")]
    event_ids: Vec<String>,
    /// The ingest gRPC address (`host:port` means plaintext `http://`).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TALLY_ADDRESS")]
    address: String,
    /// API key with the `read` scope.
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Rating's gRPC address (default: --address, as `tally dev` serves
    /// everything there).
    #[arg(long)]
    rating_address: Option<String>,
    /// Invoicing's gRPC address, to look up an external customer id
    /// (default: --address).
    #[arg(long)]
    invoicing_address: Option<String>,
    /// A CA certificate (PEM) to trust for `https://` addresses.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Prints one line per event; exits 1 when some event is not billed (not
/// seen, rejected, unrated or not rated yet), so scripts can check.
#[allow(clippy::print_stdout)]
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.event_ids.len() <= MAX_IDS,
        "at most {MAX_IDS} event ids per call, got {}",
        args.event_ids.len()
    );
    let ca_file = args.ca_file.as_deref();
    let ingest_channel = crate::admin::connect(&args.address, &args.api_key, ca_file).await?;
    let invoicing = args.invoicing_address.as_deref().unwrap_or(&args.address);
    let invoicing_channel = crate::admin::connect(invoicing, &args.api_key, ca_file).await?;
    let customer_id = CustomerIds::new(invoicing_channel)
        .resolve(&args.customer)
        .await
        .map_err(|why| anyhow::anyhow!(why))?;

    let mut ingest = IngestServiceClient::new(ingest_channel);
    let mut seen = Vec::with_capacity(args.event_ids.len());
    for event_id in &args.event_ids {
        let status = ingest
            .get_ingest_status(GetIngestStatusRequest {
                customer_id: customer_id.clone(),
                event_id: event_id.clone(),
            })
            .await
            .answer(&format!("GetIngestStatus {event_id}"))?;
        seen.push(status);
    }
    let accepted: Vec<String> = args
        .event_ids
        .iter()
        .zip(&seen)
        .filter(|(_, status)| is_accepted(status))
        .map(|(id, _)| id.clone())
        .collect();
    let rated = if accepted.is_empty() {
        Vec::new()
    } else {
        let rating = args.rating_address.as_deref().unwrap_or(&args.address);
        RatingServiceClient::new(crate::admin::connect(rating, &args.api_key, ca_file).await?)
            .get_event_rating_status(GetEventRatingStatusRequest {
                customer_id: customer_id.clone(),
                event_ids: accepted.clone(),
            })
            .await
            .answer("GetEventRatingStatus")?
            .statuses
    };

    let mut not_billed = 0;
    let mut reasons = Vec::new();
    let mut rating = accepted.iter().zip(rated);
    for (event_id, status) in args.event_ids.iter().zip(&seen) {
        let rating_status = if is_accepted(status) {
            rating.next().map(|(_, rating)| rating)
        } else {
            None
        };
        if let Some(rating) = &rating_status
            && EventRatingState::try_from(rating.state) == Ok(EventRatingState::Unrated)
        {
            reasons.push(rating.reason);
        }
        let (line, billed) = describe(event_id, status, rating_status.as_ref());
        if !billed {
            not_billed += 1;
        }
        println!("{line}");
    }
    for hint in hints(reasons.into_iter()) {
        eprintln!("{hint}");
    }
    anyhow::ensure!(
        not_billed == 0,
        "{not_billed} of {} events are not billed (yet)",
        args.event_ids.len()
    );
    Ok(())
}

fn is_accepted(status: &GetIngestStatusResponse) -> bool {
    matches!(
        IngestState::try_from(status.state),
        Ok(IngestState::Accepted | IngestState::AcceptedWithConflicts)
    )
}

/// One event's line, and whether it is billed.
fn describe(
    event_id: &str,
    ingest: &GetIngestStatusResponse,
    rating: Option<&EventRatingStatus>,
) -> (String, bool) {
    let rejections = || {
        ingest
            .rejections
            .iter()
            .filter_map(|rejected| rejected.rejection.as_ref())
            .flat_map(|rejection| &rejection.violations)
            .map(|violation| {
                format!(
                    "{} {}: {}",
                    violation.field, violation.rule, violation.description
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match IngestState::try_from(ingest.state) {
        Ok(IngestState::NotSeen) => (
            format!("{event_id}: not seen by ingest (never sent, or sent for another customer)"),
            false,
        ),
        Ok(IngestState::Rejected) => (
            format!(
                "{event_id}: rejected by ingest: {} (`tally rejected list`)",
                rejections()
            ),
            false,
        ),
        Ok(IngestState::Accepted | IngestState::AcceptedWithConflicts) => {
            let accepted = ingest
                .accepted
                .as_ref()
                .and_then(|accepted| accepted.ingested_at.as_ref())
                .and_then(|at| {
                    chrono::DateTime::from_timestamp(
                        at.seconds,
                        u32::try_from(at.nanos).unwrap_or(0),
                    )
                })
                .map_or_else(
                    || "accepted".to_owned(),
                    |at| format!("accepted {}", at.to_rfc3339()),
                );
            let conflicts =
                if IngestState::try_from(ingest.state) == Ok(IngestState::AcceptedWithConflicts) {
                    format!(
                        " (later sent again with another payload, not billed: {})",
                        rejections()
                    )
                } else {
                    String::new()
                };
            let (rated, billed) =
                match rating.map(|rating| (EventRatingState::try_from(rating.state), rating)) {
                    Some((Ok(EventRatingState::Rated), _)) => ("rated".to_owned(), true),
                    Some((Ok(EventRatingState::Unrated), rating)) => {
                        let detail = if rating.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", rating.detail)
                        };
                        (
                            format!("not billed: {}{detail}", reason_name(rating.reason)),
                            false,
                        )
                    }
                    _ if !ingest.published => (
                        "not handed to rating yet (ingest's relay)".to_owned(),
                        false,
                    ),
                    _ => (
                        "not rated yet (rating hears of it over the bus)".to_owned(),
                        false,
                    ),
                };
            (
                format!("{event_id}: {accepted}{conflicts}; {rated}"),
                billed,
            )
        }
        _ => (format!("{event_id}: unknown state {}", ingest.state), false),
    }
}
