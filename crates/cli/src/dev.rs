//! `tally dev`: the whole system in one process on a laptop.
//!
//! A private PostgreSQL is started from the installed server binaries with its
//! data under `--data-dir` (kept between runs; `DATABASE_URL` skips it), the
//! migrations are applied, the in-process bus gets every topic, and all four
//! services plus the clock service are served on one address. A fresh admin
//! API key is printed on every start.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tally_bus::{Bus, InProcessBus};
use tally_runtime::auth::{self, Scope};
use tally_runtime::config::{BusBackend, ClockMode};
use tally_runtime::ids::ClockIds;
use tally_runtime::local_postgres::{Durability, LocalPostgres, free_port};
use tally_runtime::server;
use tally_runtime::{Config, Shutdown};

use crate::app::{Handles, ServiceKind, build_clock, run_server};

/// Options of `tally dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the private PostgreSQL keeps its data between runs.
    #[arg(long, default_value = ".tally/dev", env = "TALLY_DEV_DIR")]
    data_dir: PathBuf,
    /// Address for all gRPC services (default: grpc.listen_addr, 127.0.0.1:50051).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Run on a manual clock that only `ClockService.AdvanceTime` moves.
    #[arg(long)]
    manual_clock: bool,
    /// After start, load an AI-inference price book and four customers,
    /// stream a month of usage and move the (manual) clock so that month's
    /// invoices are finalized; then keep serving.
    #[arg(long)]
    demo: bool,
}

/// Runs everything until ctrl-c or SIGTERM.
pub async fn run(mut config: Config, args: DevArgs) -> anyhow::Result<()> {
    if args.manual_clock || args.demo {
        config.clock.mode = ClockMode::Manual;
    }
    if args.demo && config.clock.start.is_none() {
        // The demo bills one month, from its first day: start the clock there.
        config.clock.start = Some(crate::demo::start_of_month(chrono::Utc::now()));
    }
    let filter_chosen = ["RUST_LOG", "TALLY_TELEMETRY__LOG_FILTER"]
        .iter()
        .any(|variable| std::env::var_os(variable).is_some());
    if args.demo && !filter_chosen && config.telemetry.log_filter == "info" {
        // Every call of the demo would log a line; its own output is the point.
        // A filter from the environment (or a config file's other than the
        // default) still wins.
        config.telemetry.log_filter = "warn".to_owned();
    }
    if let Some(listen) = args.listen {
        config.grpc.listen_addr = listen;
    }
    let _telemetry = tally_runtime::telemetry::init("tally-dev", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();

    // Bind first: a taken port should fail before anything is started.
    let listener = server::bind(config.grpc.listen_addr).await?;

    let private_postgres = match &config.database.url {
        Some(_) => None,
        None => {
            let root = std::path::absolute(&args.data_dir)?.join("postgres");
            let cluster = LocalPostgres::new(&root, free_port()?)?;
            cluster.start(Durability::Durable).with_context(|| {
                format!("starting the private PostgreSQL in {}", root.display())
            })?;
            config.database.url = Some(cluster.url("postgres"));
            Some(cluster)
        }
    };
    let result = serve_everything(&config, listener, shutdown, args.demo).await;
    if let Some(cluster) = private_postgres
        && let Err(error) = cluster.stop(false)
    {
        tracing::warn!(%error, "the private PostgreSQL did not stop cleanly");
    }
    result
}

async fn serve_everything(
    config: &Config,
    listener: server::BoundListener,
    shutdown: Shutdown,
    demo: bool,
) -> anyhow::Result<()> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    tally_runtime::db::migrate(&pool).await?;
    let clock = build_clock(config);

    let bus = InProcessBus::new();
    for topic in tally_bus::topics::ALL {
        bus.ensure_topic(topic).await?;
    }

    let ids = ClockIds::new(Arc::clone(&clock));
    let scopes = BTreeSet::from([Scope::Admin]);
    let (key_id, key) = auth::create_key(&pool, &ids, &clock, "tally-dev", &scopes).await?;

    let mut config = config.clone();
    config.bus.backend = BusBackend::InProcess;
    // Every service is served on this one address: each is its own peer.
    let own_url = format!("http://{}", listener.local_addr);
    for url in [
        &mut config.peers.ingest_url,
        &mut config.peers.rating_url,
        &mut config.peers.invoicing_url,
    ] {
        url.get_or_insert_with(|| own_url.clone());
    }
    let handles = Handles {
        config,
        pool,
        bus: Arc::new(bus),
        ids: Arc::new(ids),
        clock,
        peer_api_key: Some(key.clone()),
    };
    let mut services = ServiceKind::Ingest.start(&handles, &shutdown).await?;
    for kind in &ServiceKind::ALL[1..] {
        services = services.merge(kind.start(&handles, &shutdown).await?);
    }
    print_banner(&handles.config, listener.local_addr, &key_id, &key);
    if demo {
        spawn_demo(&handles.config, &own_url, &key, &shutdown);
    }
    run_server(services, listener, &handles, shutdown).await
}

/// Runs the demo beside the server; a failure is reported and `tally dev`
/// keeps serving what the demo created.
fn spawn_demo(config: &Config, address: &str, key: &str, shutdown: &Shutdown) {
    let target = crate::demo::DemoTarget {
        address: address.to_owned(),
        api_key: key.to_owned(),
        start: config.clock.start.unwrap_or_else(chrono::Utc::now),
        grace_period_hours: config.invoicing.grace_period_hours,
    };
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.wait() => {}
            result = crate::demo::run(target) => {
                if let Err(error) = result {
                    eprintln!("error: the demo stopped: {error:#}");
                }
            }
        }
    });
}

#[allow(clippy::print_stdout)]
fn print_banner(config: &Config, address: SocketAddr, key_id: &str, key: &str) {
    let database = if config.database.url.is_some() {
        "ready"
    } else {
        "none"
    };
    println!();
    println!("  Tally dev is running: ingest, rating, invoicing and payments in one process");
    println!();
    println!("  gRPC (all services)   http://{address}");
    println!("  API key (admin)       {key}   ({key_id}; send as `authorization: Bearer <key>`)");
    println!(
        "  PostgreSQL            {database}; clock: {:?}",
        config.clock.mode
    );
    println!("  health                grpc.health.v1.Health/Check (no key needed)");
    println!();
    println!("  ctrl-c stops everything; data is kept for the next run");
    println!();
}
