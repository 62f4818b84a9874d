//! `tally events send`: usage events as JSON lines (a file or stdin) to a
//! running ingest, in batches, with every event's outcome reported.
//!
//! Each line is one event in the JSON form producers publish on `usage-events`
//! (see `UsageEvent` in `proto/tally/events/v1/events.proto`), decoded by the
//! same code as the Pub/Sub intake, so a file that sends cleanly here
//! publishes cleanly there.

use std::io::BufRead as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tally_ingest::Incoming;
use tally_ingest::decode::{CONTENT_TYPE_JSON, decode};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};

use crate::load::client;

/// `tally events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Sends JSON-lines usage events to ingest.
    Send(SendArgs),
}

/// Options of `tally events send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// A JSON-lines file; `-` or nothing reads stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// The ingest gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    address: String,
    /// API key with the `ingest` scope.
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Events per `IngestBatch` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

/// Runs `tally events`.
#[allow(clippy::print_stdout)]
pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Send(args) = command;
    let reader: Box<dyn std::io::BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?,
        )),
    };
    let mut client = client(&args.address, &args.api_key).await?;
    let mut counts = [0u64; 5]; // accepted, duplicate, conflict, rejected, unreadable
    let mut pending: Vec<(usize, UsageEvent)> = Vec::with_capacity(args.batch);
    let mut lines = reader.lines().enumerate();
    loop {
        let next = lines.next();
        if let Some((index, line)) = &next {
            let number = index + 1;
            let line = line
                .as_ref()
                .map_err(|error| anyhow::anyhow!("line {number}: {error}"))?;
            if line.trim().is_empty() {
                continue;
            }
            match decode(line.as_bytes(), Some(CONTENT_TYPE_JSON)) {
                Incoming::Event(event) => pending.push((number, event)),
                Incoming::Flawed { violations, .. } => {
                    counts[4] += 1;
                    println!("line {number}: not sent: {}", describe(&violations));
                }
                Incoming::Undecodable { reason, .. } => {
                    counts[4] += 1;
                    println!("line {number}: not sent: {reason}");
                }
            }
        }
        let done = next.is_none();
        if pending.len() >= args.batch.max(1) || (done && !pending.is_empty()) {
            let (numbers, events): (Vec<usize>, Vec<UsageEvent>) = pending.drain(..).unzip();
            let response = client
                .ingest_batch(IngestBatchRequest { events })
                .await?
                .into_inner();
            for (number, result) in numbers.iter().zip(&response.results) {
                let outcome =
                    EventOutcome::try_from(result.outcome).unwrap_or(EventOutcome::Unspecified);
                let slot = match outcome {
                    EventOutcome::Accepted => 0,
                    EventOutcome::Duplicate => 1,
                    EventOutcome::Conflict => 2,
                    _ => 3,
                };
                counts[slot] += 1;
                if slot >= 2 {
                    println!(
                        "line {number}: {} {outcome:?} ({}): {}",
                        result.event_id,
                        result.rejection_id,
                        describe(&result.violations)
                    );
                }
            }
        }
        if done {
            break;
        }
    }
    let [accepted, duplicate, conflict, rejected, unreadable] = counts;
    eprintln!(
        "accepted {accepted}, duplicate {duplicate}, conflict {conflict}, rejected {rejected}, unreadable {unreadable}"
    );
    if conflict + rejected + unreadable > 0 {
        anyhow::bail!(
            "{} events were not accepted (rejected and conflicting events are kept: `tally rejected list`)",
            conflict + rejected + unreadable
        );
    }
    Ok(())
}

fn describe(violations: &[tally_proto::common::FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {} ({})", v.field, v.rule, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}
