//! `tally events send`: usage events as JSON lines (a file or stdin) to a
//! running ingest, in batches, with every event's outcome reported.
//!
//! Each line is one event in the JSON form producers publish on `usage-events`
//! (see `UsageEvent` in `proto/tally/events/v1/events.proto`), decoded by the
//! same code as the Pub/Sub intake, so a file that sends cleanly here
//! publishes cleanly there.
//!
//! A `customer_id` that is not Tally's (`cus_…`) is looked up as the external
//! id of a customer first (`events_customers`).
//!
//! After sending, it says which accepted events rating did not bill and why
//! (`events_rating`): mistakes such as an unknown customer or a misspelled
//! event type are accepted (the customer may be created later) but never
//! quietly unbilled. `tally events status` tells where given events are
//! (`events_status`).

use std::io::{BufRead as _, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Subcommand};
use tally_ingest::Incoming;
use tally_ingest::decode::{CONTENT_TYPE_JSON, decode};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{EventOutcome, IngestBatchRequest};

use crate::admin::Call as _;
use crate::events_customers::CustomerIds;
use crate::events_rating::Sent;
use crate::progress::{Progress, Snapshot};

/// `tally events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Sends JSON-lines usage events to ingest.
    Send(SendArgs),
    /// Where events are: accepted, rejected or never seen by ingest, and
    /// billed or not (and why) by rating.
    Status(crate::events_status::StatusArgs),
}

/// Options of `tally events send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// A JSON-lines file; `-` or nothing reads stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// The ingest gRPC address (`host:port` means plaintext `http://`).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TALLY_ADDRESS")]
    address: String,
    /// API key with the `ingest` scope (and `read` to see what rating made
    /// of the events).
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Rating's gRPC address, asked what it made of the accepted events
    /// (default: --address, as `tally dev` serves everything there).
    #[arg(long)]
    rating_address: Option<String>,
    /// Invoicing's gRPC address, asked for the customer of a `customer_id`
    /// that is an external id rather than `cus_…` (default: --address).
    #[arg(long)]
    invoicing_address: Option<String>,
    /// Events per `IngestBatch` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Wait until rating has rated, or set aside as unrated, every accepted
    /// event, at most SECONDS (default 60); exit 1 if some are still pending.
    /// Without it, rating is looked at for a moment only.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
    wait_rated: Option<u64>,
}

/// Runs `tally events`.
#[allow(clippy::print_stdout)]
pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    let args = match command {
        EventsCommand::Send(args) => args,
        EventsCommand::Status(args) => return crate::events_status::run(args).await,
    };
    let (reader, file_size) = open(args.file.as_deref())?;
    let bytes_read = reader.count();
    let mut progress = Progress::on_stderr();
    let channel = crate::admin::connect(&args.address, &args.api_key, None).await?;
    let mut client = IngestServiceClient::new(channel.clone())
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut customer_ids = CustomerIds::new(match &args.invoicing_address {
        Some(address) => crate::admin::connect(address, &args.api_key, None).await?,
        None => channel.clone(),
    });
    let mut sent: Vec<Sent> = Vec::new();
    let mut counts = [0u64; 5]; // accepted, duplicate, conflict, rejected, not sent
    let mut pending: Vec<(usize, UsageEvent)> = Vec::with_capacity(args.batch);
    let mut lines = std::io::BufReader::new(reader).lines().enumerate();
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
                Incoming::Event(mut event) => {
                    match customer_ids.resolve(&event.customer_id).await {
                        Ok(customer_id) => {
                            event.customer_id = customer_id;
                            pending.push((number, event));
                        }
                        Err(why) => {
                            counts[4] += 1;
                            progress.clear();
                            println!("line {number}: not sent: {why}");
                        }
                    }
                }
                Incoming::Flawed { violations, .. } => {
                    counts[4] += 1;
                    progress.clear();
                    println!("line {number}: not sent: {}", describe(&violations));
                }
                Incoming::Undecodable { reason, .. } => {
                    counts[4] += 1;
                    progress.clear();
                    println!("line {number}: not sent: {reason}");
                }
            }
        }
        let done = next.is_none();
        if pending.len() >= args.batch.max(1) || (done && !pending.is_empty()) {
            let (numbers, events): (Vec<usize>, Vec<UsageEvent>) = pending.drain(..).unzip();
            let customers: Vec<String> = events
                .iter()
                .map(|event| event.customer_id.clone())
                .collect();
            let response = client
                .ingest_batch(IngestBatchRequest { events })
                .await
                .answer("IngestBatch")?;
            for ((number, result), customer_id) in
                numbers.iter().zip(&response.results).zip(customers)
            {
                let outcome =
                    EventOutcome::try_from(result.outcome).unwrap_or(EventOutcome::Unspecified);
                let slot = match outcome {
                    EventOutcome::Accepted => 0,
                    EventOutcome::Duplicate => 1,
                    EventOutcome::Conflict => 2,
                    _ => 3,
                };
                counts[slot] += 1;
                if slot <= 1 && sent.len() < crate::events_rating::MAX_FOLLOWED {
                    sent.push(Sent {
                        line: *number,
                        customer_id,
                        event_id: result.event_id.clone(),
                    });
                }
                if slot >= 2 {
                    progress.clear();
                    println!(
                        "line {number}: {} {outcome:?} ({}): {}",
                        result.event_id,
                        result.rejection_id,
                        describe(&result.violations)
                    );
                }
            }
        }
        progress.tick(|| snapshot(&counts, bytes_read.load(Ordering::Relaxed), file_size));
        if done {
            break;
        }
    }
    progress.clear();
    // Not sent: an unreadable line, or a customer that could not be resolved.
    let [accepted, duplicate, conflict, rejected, not_sent] = counts;
    eprintln!(
        "accepted {accepted}, duplicate {duplicate}, conflict {conflict}, rejected {rejected}, not sent {not_sent}"
    );
    let rating = match &args.rating_address {
        Some(address) => crate::admin::connect(address, &args.api_key, None).await?,
        None => channel,
    };
    crate::events_rating::report(
        rating,
        sent,
        args.wait_rated.map(std::time::Duration::from_secs),
    )
    .await?;
    if conflict + rejected + not_sent > 0 {
        anyhow::bail!(
            "{} events were not accepted (rejected and conflicting events are kept: `tally rejected list`)",
            conflict + rejected + not_sent
        );
    }
    Ok(())
}

/// The progress line: events sent so far and, for a file, how much of it was read.
fn snapshot(counts: &[u64; 5], bytes_read: u64, file_size: Option<u64>) -> Snapshot {
    let [accepted, duplicates, conflicts, rejected, not_sent] = *counts;
    Snapshot {
        verb: "sent",
        done: accepted + duplicates + conflicts + rejected,
        parts: vec![
            ("accepted", accepted),
            ("duplicates", duplicates),
            ("conflicts", conflicts),
            ("rejected", rejected),
            ("not sent", not_sent),
        ],
        fraction: file_size.map(|size| (bytes_read, size)),
    }
}

/// The input (a file, or stdin for none or `-`) and, for a regular file, its
/// size: the progress shows bytes read against it, as counting lines up front
/// would read a large file twice.
fn open(path: Option<&Path>) -> anyhow::Result<(CountingReader, Option<u64>)> {
    let Some(path) = path.filter(|path| path.as_os_str() != "-") else {
        return Ok((CountingReader::new(Box::new(std::io::stdin().lock())), None));
    };
    let file = std::fs::File::open(path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    let size = file
        .metadata()
        .ok()
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len());
    Ok((CountingReader::new(Box::new(file)), size))
}

/// A reader that counts the bytes read through it.
struct CountingReader {
    inner: Box<dyn Read>,
    count: Arc<AtomicU64>,
}

impl CountingReader {
    fn new(inner: Box<dyn Read>) -> Self {
        Self {
            inner,
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The running count, readable while the reader is in use.
    fn count(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.count)
    }
}

impl Read for CountingReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

fn describe(violations: &[tally_proto::common::FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {} ({})", v.field, v.rule, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}
