//! `tally load`: load generators for the benchmarks in `docs/benchmarks.md`.
//!
//! * `tally load ingest` drives a running ingest over gRPC with batches of
//!   synthetic usage (optionally with a share of re-sent duplicates) and
//!   reports the sustained rate and batch latency percentiles;
//! * `tally load copy-baseline` writes the same rows with PostgreSQL `COPY`
//!   into the same tables of a scratch database, the baseline ingest is
//!   compared with;
//! * `tally load pubsub` publishes usage on the `usage-events` topic and waits
//!   until ingest reports it accepted.
//!
//! Every event is a pure function of (run, number), so a duplicate is the same
//! payload re-sent and the baseline writes exactly the rows ingest would.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tally_bus::{Message, topics};
use tally_proto::events::UsageEvent;
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{GetIngestStatsRequest, IngestBatchRequest};
use tally_runtime::Config;
use tally_runtime::clock_service::chrono_to_timestamp;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::progress::{Progress, Snapshot, Ticker, percentile};

/// `tally load …`.
#[derive(Debug, Subcommand)]
pub enum LoadCommand {
    /// Sustained gRPC ingest against a running ingest service.
    Ingest(IngestLoad),
    /// PostgreSQL COPY of the same rows into the same tables (the baseline).
    CopyBaseline(CopyBaseline),
    /// Publish usage on Pub/Sub and wait until ingest has it.
    Pubsub(PubsubLoad),
    /// Rating: queued accepted events consumed into aggregates (events/s).
    RatingConsume(crate::load_rating::RatingConsume),
    /// Rating: accepted by ingest → reflected in GetCurrentCost, under load.
    RatingLatency(crate::load_rating::RatingLatency),
    /// Rating: GetCurrentCost latency for a customer with many events.
    RatingCost(crate::load_rating::RatingCost),
}

/// The synthetic workload, shared by all three.
#[derive(Debug, Clone, Args)]
pub struct Workload {
    /// Events to send (not counting re-sent duplicates).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Distinct customers.
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    /// Properties per event.
    #[arg(long, default_value_t = 10)]
    properties: usize,
    /// Run label: part of every event id, so runs never collide.
    #[arg(long, default_value = "bench")]
    run: String,
}

/// Options of `tally load ingest`.
#[derive(Debug, Args)]
pub struct IngestLoad {
    /// The ingest gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    address: String,
    /// API key with the `ingest` scope.
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Concurrent batch calls in flight (8 = the `IngestStream` window).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Share of each batch that re-sends earlier events (0.0–0.9).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    #[command(flatten)]
    workload: Workload,
}

/// Options of `tally load copy-baseline`.
#[derive(Debug, Args)]
pub struct CopyBaseline {
    /// A scratch database (its `ingest` tables receive the rows); migrations are applied.
    #[arg(long, env = "BASELINE_DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    workload: Workload,
}

/// Options of `tally load pubsub`.
#[derive(Debug, Args)]
pub struct PubsubLoad {
    /// The ingest gRPC address (to read its counters).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    address: String,
    /// API key with the `read` scope.
    #[arg(long, env = "TALLY_API_KEY")]
    api_key: String,
    /// Only publish (no ingest needs to run; its subscription must exist).
    #[arg(long, conflicts_with = "drain_only")]
    publish_only: bool,
    /// Only wait until ingest has accepted `--events` events since it started
    /// (after `--publish-only`): measures the intake alone.
    #[arg(long)]
    drain_only: bool,
    #[command(flatten)]
    workload: Workload,
}

/// Runs a load command.
#[allow(clippy::print_stdout)]
pub async fn run(config: Config, command: LoadCommand) -> anyhow::Result<()> {
    let report = match command {
        LoadCommand::Ingest(load) => ingest(load).await?,
        LoadCommand::CopyBaseline(load) => copy_baseline(load).await?,
        LoadCommand::Pubsub(load) => pubsub(config, load).await?,
        LoadCommand::RatingConsume(load) => crate::load_rating::consume(&config, load).await?,
        LoadCommand::RatingLatency(load) => crate::load_rating::latency(&config, load).await?,
        LoadCommand::RatingCost(load) => crate::load_rating::cost(&config, load).await?,
    };
    println!("{report}");
    Ok(())
}

/// Event `number` of the run: deterministic, so it can be re-sent identically.
fn make_event(workload: &Workload, number: u64, now: DateTime<Utc>) -> UsageEvent {
    const MODELS: [&str; 4] = ["small", "medium", "large", "xl"];
    const TYPES: [&str; 3] = ["llm_tokens", "gpu_seconds", "images"];
    let customer = number % workload.customers;
    let mut properties = HashMap::with_capacity(workload.properties);
    for slot in 0..workload.properties {
        let value = match slot {
            0 => format!("{}", 100 + (number * 7919) % 5000),
            1 => MODELS[(number % 4) as usize].to_owned(),
            2 => format!("eu-west-{}", number % 3),
            3 => format!("{}.{:03}", number % 97, number % 1000),
            _ => format!("v{}-{}", slot, number % 1013),
        };
        let key = match slot {
            0 => "tokens".to_owned(),
            1 => "model".to_owned(),
            2 => "region".to_owned(),
            3 => "seconds".to_owned(),
            _ => format!("attr_{slot}"),
        };
        properties.insert(key, value);
    }
    UsageEvent {
        id: format!("{}-{number:010}", workload.run),
        customer_id: format!("cus_load{customer:05}"),
        event_type: TYPES[(number % 3) as usize].to_owned(),
        timestamp: Some(chrono_to_timestamp(
            now - chrono::Duration::milliseconds(((number * 104_729) % 3_600_000) as i64),
        )),
        properties,
        source: "tally-load".to_owned(),
    }
}

/// Adds the API key to every call.
type Authenticate =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub(crate) type IngestClient = IngestServiceClient<InterceptedService<Channel, Authenticate>>;

/// An ingest client that sends `api_key` on every call.
pub(crate) async fn client(address: &str, api_key: &str) -> anyhow::Result<IngestClient> {
    let channel = Channel::from_shared(address.to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let bearer: MetadataValue<_> = format!("Bearer {api_key}").parse()?;
    let interceptor: Authenticate = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        Ok(request)
    });
    Ok(IngestServiceClient::with_interceptor(channel, interceptor)
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024))
}

async fn ingest(load: IngestLoad) -> anyhow::Result<String> {
    let workload = &load.workload;
    anyhow::ensure!(
        (0.0..=0.9).contains(&load.duplicates),
        "--duplicates must be between 0.0 and 0.9"
    );
    let now = Utc::now();
    // Build every batch before the clock starts: the generator must not compete
    // with the server for the two cores while measuring.
    let duplicates_per_batch = (workload.batch as f64 * load.duplicates).round() as u64;
    let fresh_per_batch = workload.batch as u64 - duplicates_per_batch;
    let mut batches = VecDeque::new();
    let mut next = 0u64;
    while next < workload.events {
        let fresh = fresh_per_batch.min(workload.events - next);
        let mut events: Vec<UsageEvent> = (next..next + fresh)
            .map(|n| make_event(workload, n, now))
            .collect();
        if next > 0 {
            for k in 0..duplicates_per_batch {
                let earlier = (next * 31 + k * 7) % next;
                events.push(make_event(workload, earlier, now));
            }
        }
        next += fresh;
        batches.push_back(events);
    }
    let batch_count = batches.len();
    let total: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
    let queue = Arc::new(Mutex::new(batches));
    // accepted, duplicate, conflict, rejected so far, for the progress line.
    let so_far: Arc<[AtomicU64; 4]> = Arc::default();
    let ticker = Ticker::spawn({
        let so_far = Arc::clone(&so_far);
        move || {
            let [accepted, duplicates, conflicts, rejected] =
                so_far.each_ref().map(|count| count.load(Ordering::Relaxed));
            let done = accepted + duplicates + conflicts + rejected;
            Snapshot {
                verb: "sent",
                done,
                parts: vec![
                    ("accepted", accepted),
                    ("duplicates", duplicates),
                    ("conflicts", conflicts),
                    ("rejected", rejected),
                ],
                fraction: Some((done, total)),
            }
        }
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.concurrency.max(1) {
        let queue = Arc::clone(&queue);
        let so_far = Arc::clone(&so_far);
        let mut client = client(&load.address, &load.api_key).await?;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut counts = [0u64; 4];
            loop {
                let batch = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(events) = batch else { break };
                let sent = Instant::now();
                let response = client
                    .ingest_batch(IngestBatchRequest { events })
                    .await?
                    .into_inner();
                latencies.push(sent.elapsed());
                let c = response.counts.unwrap_or_default();
                for ((slot, shared), value) in counts.iter_mut().zip(so_far.iter()).zip([
                    c.accepted,
                    c.duplicate,
                    c.conflict,
                    c.rejected,
                ]) {
                    *slot += u64::from(value);
                    shared.fetch_add(u64::from(value), Ordering::Relaxed);
                }
            }
            Ok::<_, tonic::Status>((latencies, counts))
        }));
    }
    let mut latencies = Vec::new();
    let mut counts = [0u64; 4];
    for worker in workers {
        let (mut worker_latencies, worker_counts) = worker.await??;
        latencies.append(&mut worker_latencies);
        for (total, value) in counts.iter_mut().zip(worker_counts) {
            *total += value;
        }
    }
    let elapsed = started.elapsed();
    ticker.finish().await;
    let processed: u64 = counts.iter().sum();
    Ok(format!(
        "ingest over gRPC: {processed} events in {batch_count} batches of {} ({} customers, {} properties, {:.0}% duplicates, concurrency {})\n\
         rate: {:.0} events/s (accepted {}, duplicate {}, conflict {}, rejected {}) in {:.2} s\n\
         batch latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        workload.batch,
        workload.customers,
        workload.properties,
        load.duplicates * 100.0,
        load.concurrency,
        processed as f64 / elapsed.as_secs_f64(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        elapsed.as_secs_f64(),
        percentile(&mut latencies, 0.50),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    ))
}

async fn copy_baseline(load: CopyBaseline) -> anyhow::Result<String> {
    let workload = &load.workload;
    let pool = tally_runtime::db::connect_url(&load.database_url, 2).await?;
    tally_runtime::db::migrate(&pool).await?;
    let now = Utc::now();
    for month in [now - chrono::Duration::hours(1), now] {
        sqlx::query("SELECT ingest.ensure_event_partition($1)")
            .bind(month)
            .execute(&pool)
            .await?;
    }
    let mut events_csv = Vec::new();
    let mut keys_csv = Vec::new();
    for number in 0..workload.events {
        let event = make_event(workload, number, now);
        let at = tally_runtime::clock_service::timestamp_to_chrono(event.timestamp, "timestamp")
            .map_err(|status| anyhow::anyhow!("{status}"))?;
        let mut properties: Vec<(&str, &str)> = event
            .properties
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        properties.sort_unstable();
        let hash = tally_ingest::validation::payload_hash(
            &event.customer_id,
            &event.id,
            &event.event_type,
            at,
            properties,
        );
        let seq = number + 1;
        let at = at.to_rfc3339();
        events_csv.push(format!(
            "{seq},{},{},{},{at},\\x{},1,{}\n",
            event.customer_id,
            event.id,
            event.event_type,
            hex(&prost::Message::encode_to_vec(&event)),
            now.to_rfc3339()
        ));
        keys_csv.push(format!(
            "{},{},{seq},{at},\\x{}\n",
            event.customer_id,
            event.id,
            hex(&hash)
        ));
    }
    let events_copy = "COPY ingest.events (seq, customer_id, event_id, event_type, event_time, payload, intake, ingested_at) FROM STDIN WITH (FORMAT csv)";
    let keys_copy = "COPY ingest.event_keys (customer_id, event_id, seq, event_time, payload_hash) FROM STDIN WITH (FORMAT csv)";

    let events_only = copy_rows(&pool, events_copy, &events_csv, workload.batch).await?;
    sqlx::query("TRUNCATE ingest.events, ingest.event_keys")
        .execute(&pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let started = Instant::now();
    let mut connection = pool.acquire().await?;
    for (events, keys) in events_csv
        .chunks(workload.batch)
        .zip(keys_csv.chunks(workload.batch))
    {
        let mut transaction = sqlx::Connection::begin(&mut *connection).await?;
        copy_chunk(&mut transaction, keys_copy, keys).await?;
        copy_chunk(&mut transaction, events_copy, events).await?;
        transaction.commit().await?;
    }
    let both = workload.events as f64 / started.elapsed().as_secs_f64();
    drop(connection);

    // PostgreSQL's best case: every row in one COPY, one transaction, one fsync.
    sqlx::query("TRUNCATE ingest.events, ingest.event_keys")
        .execute(&pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let bulk = copy_rows(&pool, events_copy, &events_csv, events_csv.len()).await?;
    Ok(format!(
        "COPY baseline: {} rows\n\
         COPY into ingest.events, {} rows per transaction: {events_only:.0} rows/s\n\
         COPY into ingest.event_keys + ingest.events (the rows ingest writes), {} rows per transaction: {both:.0} rows/s\n\
         COPY into ingest.events, all rows in one transaction: {bulk:.0} rows/s",
        workload.events, workload.batch, workload.batch
    ))
}

/// COPYs `rows` in transactions of `per_transaction` rows; returns rows/s.
async fn copy_rows(
    pool: &sqlx::PgPool,
    statement: &str,
    rows: &[String],
    per_transaction: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut connection = pool.acquire().await?;
    for chunk in rows.chunks(per_transaction) {
        let mut transaction = sqlx::Connection::begin(&mut *connection).await?;
        copy_chunk(&mut transaction, statement, chunk).await?;
        transaction.commit().await?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

async fn copy_chunk(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    rows: &[String],
) -> anyhow::Result<()> {
    let mut copy = connection.copy_in_raw(statement).await?;
    copy.send(rows.concat().into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn pubsub(config: Config, load: PubsubLoad) -> anyhow::Result<String> {
    let workload = &load.workload;
    let started = Instant::now();
    let mut report = Vec::new();
    if !load.drain_only {
        let bus = crate::app::connect_bus(&config).await?;
        let now = Utc::now();
        let numbers: Vec<u64> = (0..workload.events).collect();
        let mut progress = Progress::on_stderr();
        let mut published = 0u64;
        for chunk in numbers.chunks(workload.batch) {
            let publishes = chunk.iter().map(|number| {
                let event = make_event(workload, *number, now);
                let message = Message::new(
                    tally_ingest::intake::USAGE_EVENT_TYPE,
                    1,
                    prost::Message::encode_to_vec(&event),
                )
                .with_ordering_key(event.customer_id.clone());
                let bus = Arc::clone(&bus);
                async move { bus.publish(topics::USAGE_EVENTS, message).await }
            });
            for result in futures::future::join_all(publishes).await {
                result?;
            }
            published += chunk.len() as u64;
            progress.tick(|| Snapshot {
                verb: "published",
                done: published,
                parts: Vec::new(),
                fraction: Some((published, workload.events)),
            });
        }
        progress.clear();
        let published = started.elapsed();
        report.push(format!(
            "published {} events on usage-events in {:.2} s: {:.0} msg/s",
            workload.events,
            published.as_secs_f64(),
            workload.events as f64 / published.as_secs_f64()
        ));
        if load.publish_only {
            return Ok(report.join("\n"));
        }
    }
    let mut client = client(&load.address, &load.api_key).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut progress = Progress::on_stderr();
    loop {
        let stats = client
            .get_ingest_stats(GetIngestStatsRequest {})
            .await?
            .into_inner();
        if stats.accepted >= workload.events {
            break;
        }
        progress.tick(|| Snapshot {
            verb: "ingest accepted",
            done: stats.accepted,
            parts: Vec::new(),
            fraction: Some((stats.accepted, workload.events)),
        });
        anyhow::ensure!(
            Instant::now() < deadline,
            "ingest accepted {} of {} events within 10 minutes",
            stats.accepted,
            workload.events
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    report.push(format!(
        "ingest over Pub/Sub: {} events accepted after {:.2} s: {:.0} events/s{}",
        workload.events,
        elapsed.as_secs_f64(),
        workload.events as f64 / elapsed.as_secs_f64(),
        if load.drain_only {
            " (intake alone: the messages were waiting in the subscription)"
        } else {
            " end to end (publishing included)"
        }
    ));
    Ok(report.join("\n"))
}
