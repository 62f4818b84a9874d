//! `tally rejected`: the operator's view of rejected usage events, and their
//! replay after a fix (an opened backfill, a corrected producer, a changed
//! validation limit). Talks to a running ingest over gRPC. `list` prints a
//! table with each rejection's full reason, as the API gives it.

use clap::{Args, Subcommand};
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{
    EventOutcome, ListRejectedEventsRequest, RejectedEventState, ReplayRejectedEventsRequest,
};

use crate::admin::table::Table;
use crate::admin::{Call as _, format_time};

/// `tally rejected …`.
#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// Lists open rejected events, newest first.
    List(Filter),
    /// Replays rejected events: the given ids, or every open one matching the filter.
    Replay {
        /// Rejection ids (`rej_…`); none means every open rejection matching the filter.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
    },
}

/// Which rejections, and where ingest runs.
#[derive(Debug, Args)]
pub struct Filter {
    /// The ingest gRPC address (`host:port` means plaintext `http://`).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TALLY_ADDRESS")]
    address: String,
    /// API key (`read` to list, `write` to replay).
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Only this customer.
    #[arg(long)]
    customer: Option<String>,
    /// Only rejections that broke this rule, e.g. `before_backfill_window`.
    #[arg(long)]
    rule: Option<String>,
}

/// Runs `tally rejected`.
#[allow(clippy::print_stdout)]
pub async fn run(command: RejectedCommand) -> anyhow::Result<()> {
    let (filter, ids) = match command {
        RejectedCommand::List(filter) => (filter, None),
        RejectedCommand::Replay { ids, filter } => (filter, Some(ids)),
    };
    let mut client = IngestServiceClient::new(
        crate::admin::connect(&filter.address, &filter.api_key, None).await?,
    );
    let mut open = Vec::new();
    if ids.as_ref().is_none_or(Vec::is_empty) {
        let mut page_token = String::new();
        loop {
            let page = client
                .list_rejected_events(ListRejectedEventsRequest {
                    customer_id: filter.customer.clone().unwrap_or_default(),
                    state: RejectedEventState::Open as i32,
                    rule: filter.rule.clone().unwrap_or_default(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .answer("ListRejectedEvents")?;
            open.extend(page.rejected_events.into_iter().filter_map(|r| r.rejection));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    let Some(ids) = ids else {
        let mut table = Table::new(&["rejection", "rejected at", "customer", "event", "reason"]);
        for rejection in &open {
            let event = rejection.event.as_ref();
            table.row(vec![
                rejection.rejection_id.clone(),
                format_time(rejection.rejected_at.as_ref()),
                event.map_or("-", |e| e.customer_id.as_str()).to_owned(),
                event.map_or("-", |e| e.id.as_str()).to_owned(),
                reason(&rejection.violations),
            ]);
        }
        if !table.is_empty() {
            table.print();
        }
        eprintln!("{} open rejected events", open.len());
        return Ok(());
    };
    let ids = if ids.is_empty() {
        open.into_iter().map(|r| r.rejection_id).collect()
    } else {
        ids
    };
    let (mut resolved, mut still_rejected) = (0, 0);
    for chunk in ids.chunks(1000) {
        let response = client
            .replay_rejected_events(ReplayRejectedEventsRequest {
                rejection_ids: chunk.to_vec(),
            })
            .await
            .answer("ReplayRejectedEvents")?;
        for (id, result) in chunk.iter().zip(&response.results) {
            let outcome =
                EventOutcome::try_from(result.outcome).unwrap_or(EventOutcome::Unspecified);
            match outcome {
                EventOutcome::Accepted | EventOutcome::Duplicate => resolved += 1,
                _ => {
                    still_rejected += 1;
                    let rules: Vec<String> = result
                        .violations
                        .iter()
                        .map(|v| format!("{} {}", v.field, v.rule))
                        .collect();
                    println!("{id}  still {outcome:?}: {}", rules.join(", "));
                }
            }
        }
    }
    eprintln!(
        "replayed {}: {resolved} resolved, {still_rejected} still rejected",
        ids.len()
    );
    if still_rejected > 0 {
        anyhow::bail!("{still_rejected} events are still rejected");
    }
    Ok(())
}

/// Every violation as the API words it: `field rule: description`, `; `-separated.
fn reason(violations: &[tally_proto::common::FieldViolation]) -> String {
    violations
        .iter()
        .map(|violation| {
            if violation.description.is_empty() {
                format!("{} {}", violation.field, violation.rule)
            } else {
                format!(
                    "{} {}: {}",
                    violation.field, violation.rule, violation.description
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
