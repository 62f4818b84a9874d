//! `tally dev`: the whole system in one process on a laptop.
//!
//! A private PostgreSQL is started from the installed server binaries with its
//! data under `--data-dir` (kept between runs; `DATABASE_URL` skips it), the
//! migrations are applied, the in-process bus gets every topic, and every
//! service plus the clock service are served on one address. The banner
//! prints the database URL (for `tally keys create`) and an admin API key:
//! one key per data directory, kept in `<data-dir>/admin-key` and reused at
//! every start while it is a live admin key of the database in use (a new
//! one only when it is not, e.g. after `tally keys revoke`).
//!
//! Every port is bound before anything starts (the gRPC address, the Stripe
//! webhook endpoint on the next port by default, both on loopback unless
//! told otherwise), so a second `tally dev` fails at once naming the port and
//! the flag, not after PostgreSQL started and migrations ran.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tally_bus::{Bus, InProcessBus};
use tally_runtime::auth::{self, Scope};
use tally_runtime::config::{BusBackend, ClockMode, PaymentsConfig};
use tally_runtime::ids::ClockIds;
use tally_runtime::local_postgres::{Durability, LocalPostgres, free_port};
use tally_runtime::server;
use tally_runtime::{Config, Shutdown};

use crate::app::{Handles, ReservedListener, ServiceKind, bind_webhooks, build_clock, run_server};

/// Options of `tally dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the private PostgreSQL keeps its data between runs.
    #[arg(long, default_value = ".tally/dev", env = "TALLY_DEV_DIR")]
    data_dir: PathBuf,
    /// Address for all gRPC services (default: grpc.listen_addr, 127.0.0.1:50051).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the Stripe webhook endpoint (default: the --listen address
    /// with the next port, 127.0.0.1:50052; or payments.webhook_listen_addr
    /// when configured to something other than its cluster default).
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// Address of the console (default: the --listen address with the port
    /// two above, 127.0.0.1:50053). Its origin may call the services (CORS).
    #[arg(long)]
    console_listen: Option<SocketAddr>,
    /// The console's static build (`make console`: npm ci && npm run build in console/).
    #[arg(long, default_value = "console/out", env = "TALLY_CONSOLE_DIR")]
    console_dir: PathBuf,
    /// Run on a manual clock that only `ClockService.AdvanceTime` moves.
    #[arg(long)]
    manual_clock: bool,
    /// After start, load an AI-inference price book and four customers,
    /// stream a month of usage and move the (manual) clock so that month's
    /// invoices are finalized; then keep serving.
    #[arg(long)]
    demo: bool,
    /// Start afresh: delete the private PostgreSQL's data and the admin key
    /// in --data-dir first (every customer, invoice and the catalog go).
    /// Refused with DATABASE_URL: drop that database yourself.
    #[arg(long)]
    reset: bool,
}

/// Runs everything until ctrl-c or SIGTERM.
pub async fn run(mut config: Config, args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !(args.reset && config.database.url.is_some()),
        "--reset deletes only the private PostgreSQL in --data-dir, and DATABASE_URL names \
         another database: drop and create that one yourself, or unset DATABASE_URL"
    );
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
    let stripe_unconfigured = std::env::var_os("STRIPE_API_KEY").is_none_or(|key| key.is_empty());
    if stripe_unconfigured {
        // Said once, as a notice in the banner, instead of an ERROR at every
        // start (a laptop rarely has Stripe keys).
        config.telemetry.log_filter = format!(
            "{},{}=off",
            config.telemetry.log_filter,
            tally_payments::SETUP_LOG_TARGET
        );
    }
    if orb_unconfigured() {
        // Said once in the banner too: forwarding to Orb is opt-in.
        config.telemetry.log_filter = format!(
            "{},{}=off",
            config.telemetry.log_filter,
            tally_connectors::SETUP_LOG_TARGET
        );
    }
    if let Some(listen) = args.listen {
        config.grpc.listen_addr = listen;
    }
    let _telemetry = tally_runtime::telemetry::init("tally-dev", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();

    config.payments.webhook_listen_addr = webhook_address(
        args.webhook_listen,
        config.payments.webhook_listen_addr,
        config.grpc.listen_addr,
    )?;
    // Bind every port first: a taken one stops `tally dev` before PostgreSQL
    // starts or migrations run, naming the port and the flag that moves it.
    let listener = server::bind(config.grpc.listen_addr)
        .await
        .map_err(|error| match error {
            server::ServerError::Bind { address, source } => anyhow::anyhow!(
                "cannot listen on {address} for gRPC: {source} (is another process, another \
                 `tally dev` perhaps, using the port? pick another with --listen)"
            ),
            other => other.into(),
        })?;
    let webhook_listener = bind_webhooks(
        config.payments.webhook_listen_addr,
        "pick another with --webhook-listen (by default the --listen port + 1)",
    )
    .await?;
    // What port 0 became, for the banner.
    config.payments.webhook_listen_addr = webhook_listener.local_addr()?;
    let webhook_listener = ReservedListener::new(webhook_listener);
    let console_line = start_console(&args, &mut config, listener.local_addr, &shutdown).await?;

    if args.reset {
        reset(&args.data_dir)?;
    }
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
    let result = serve_everything(
        &config,
        listener,
        webhook_listener,
        shutdown,
        args.demo,
        &args.data_dir,
        &console_line,
    )
    .await;
    if let Some(cluster) = private_postgres
        && let Err(error) = cluster.stop(false)
    {
        tracing::warn!(%error, "the private PostgreSQL did not stop cleanly");
    }
    result
}

/// `--reset`: deletes what `tally dev` keeps in `data_dir` (the private
/// PostgreSQL's directory and the admin key), nothing else in it.
#[allow(clippy::print_stderr)]
fn reset(data_dir: &Path) -> anyhow::Result<()> {
    let postgres = data_dir.join("postgres");
    if postgres.exists() {
        std::fs::remove_dir_all(&postgres)
            .with_context(|| format!("--reset: deleting {}", postgres.display()))?;
    }
    let key = data_dir.join(ADMIN_KEY_FILE);
    if key.exists() {
        std::fs::remove_file(&key)
            .with_context(|| format!("--reset: deleting {}", key.display()))?;
    }
    eprintln!(
        "--reset: {} starts empty (its PostgreSQL data and admin key were deleted)",
        data_dir.display()
    );
    Ok(())
}

/// Where `tally dev` serves Stripe webhooks: `--webhook-listen`; else
/// `payments.webhook_listen_addr` when configured away from its cluster
/// default (`0.0.0.0:8080`, which would reach the network and clash with a
/// second `tally dev`); else the gRPC address with the next port (port 0
/// stays 0: the OS picks).
fn webhook_address(
    flag: Option<SocketAddr>,
    configured: SocketAddr,
    grpc: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    if let Some(address) = flag {
        return Ok(address);
    }
    if configured != PaymentsConfig::default().webhook_listen_addr {
        return Ok(configured);
    }
    let port = match grpc.port() {
        0 => 0,
        port => port.checked_add(1).with_context(|| {
            format!("no port after {grpc} for Stripe webhooks: pass --webhook-listen")
        })?,
    };
    Ok(SocketAddr::new(grpc.ip(), port))
}

async fn serve_everything(
    config: &Config,
    listener: server::BoundListener,
    webhook_listener: ReservedListener,
    shutdown: Shutdown,
    demo: bool,
    data_dir: &Path,
    console_line: &str,
) -> anyhow::Result<()> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    tally_runtime::db::migrate(&pool).await?;
    tally_invoicing::upgrade::convert_stored_protobuf(&pool).await?;
    let clock = build_clock(config);

    let bus = InProcessBus::new();
    for topic in tally_bus::topics::ALL {
        bus.ensure_topic(topic).await?;
    }

    let ids = ClockIds::new(Arc::clone(&clock));
    let (key_id, key) = dev_admin_key(&pool, &ids, &clock, data_dir).await?;

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
        webhook_listener,
    };
    let mut services = ServiceKind::Ingest.start(&handles, &shutdown).await?;
    for kind in &ServiceKind::ALL[1..] {
        services = services.merge(kind.start(&handles, &shutdown).await?);
    }
    services = services.merge(crate::app::audit_server(
        &handles,
        &ServiceKind::ALL,
        &shutdown,
    ));
    print_banner(
        &handles.config,
        listener.local_addr,
        handles.config.payments.webhook_listen_addr,
        &key_id,
        &key,
        console_line,
    );
    if demo {
        spawn_demo(&handles.config, &own_url, &key, &shutdown);
    }
    // One process for every service: its clock's moves go to `auth`, the
    // chain every process answers for.
    let clock_chain = (tally_audit::Schema::Auth, "dev");
    run_server(services, listener, &handles, clock_chain, shutdown).await
}

/// The file in the data directory that keeps the dev admin key.
const ADMIN_KEY_FILE: &str = "admin-key";

/// The admin key of `tally dev`: the one kept in `<data_dir>/admin-key` when
/// it is still a live admin key of this database, else a new one, kept there
/// for the next start (readable by its owner only). Returns `(id, key)`.
async fn dev_admin_key(
    pool: &sqlx::PgPool,
    ids: &ClockIds,
    clock: &tally_runtime::SharedClock,
    data_dir: &Path,
) -> anyhow::Result<(String, String)> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some((id, key)) = text.trim().split_once(' ')
    {
        let live: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM tally_auth.api_keys WHERE id = $1 AND key_hash = $2 \
             AND revoked_at IS NULL AND 'admin' = ANY(scopes)",
        )
        .bind(id)
        .bind(auth::hash_key(key))
        .fetch_optional(pool)
        .await?;
        if live.is_some() {
            return Ok((id.to_owned(), key.to_owned()));
        }
    }
    let scopes = BTreeSet::from([Scope::Admin]);
    let (id, key) =
        crate::keys::create_audited(pool, ids, clock, "tally-dev", &scopes, "tally_dev").await?;
    keep_key(&path, &format!("{id} {key}\n"))
        .with_context(|| format!("keeping the dev admin key in {}", path.display()))?;
    Ok((id, key))
}

/// Writes `text` to `path` (owner-only), through a renamed temporary file so
/// that a reader never sees half of it.
fn keep_key(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory)?;
    }
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// A database URL fit to print: any password replaced by `***`.
fn printable_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Serves the console's build when there is one (binding its port first, so
/// a taken port stops `tally dev` at once) and lets its origin call the
/// services; returns the banner's line: its URL, or how to build it.
async fn start_console(
    args: &DevArgs,
    config: &mut Config,
    grpc: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    if !crate::console::is_built(&args.console_dir) {
        return Ok(format!(
            "not built ({} has no index.html): `make console` (Node.js 20+: npm ci && npm run build in console/)",
            args.console_dir.display()
        ));
    }
    let address = match args.console_listen {
        Some(address) => address,
        None => crate::console::default_address(grpc)?,
    };
    let listener = crate::console::bind(address).await?;
    let local = listener.local_addr()?;
    let origin = format!("http://{local}");
    config.grpc.cors_allowed_origins.push(origin.clone());
    if local.ip().is_loopback() {
        config
            .grpc
            .cors_allowed_origins
            .push(format!("http://localhost:{}", local.port()));
    }
    crate::console::spawn(
        listener,
        &args.console_dir,
        &format!("http://{grpc}"),
        shutdown.clone(),
    )?;
    Ok(format!("{origin}/   (sign in with the API key below)"))
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
fn print_banner(
    config: &Config,
    address: SocketAddr,
    webhook_address: SocketAddr,
    key_id: &str,
    key: &str,
    console_line: &str,
) {
    let database = config
        .database
        .url
        .as_deref()
        .map_or_else(|| "none".to_owned(), printable_url);
    println!();
    println!(
        "  Tally dev is running: ingest, rating, invoicing, payments, finance and connectors in one process"
    );
    println!();
    println!("  gRPC (all services)   http://{address}   (gRPC-web too)");
    println!("  console               {console_line}");
    println!("  API key (admin)       {key}   ({key_id}; send as `authorization: Bearer <key>`)");
    println!("                        the same at every start of this data directory");
    println!("  PostgreSQL            {database}");
    println!(
        "  more keys             DATABASE_URL={database} tally keys create --name … --scope read"
    );
    println!("  clock                 {:?}", config.clock.mode);
    println!("  health                grpc.health.v1.Health/Check (no key needed)");
    println!("  Stripe webhooks       http://{webhook_address}/webhooks/stripe");
    if std::env::var_os("STRIPE_API_KEY").is_none_or(|key| key.is_empty()) {
        println!(
            "  Stripe                not configured: invoices are billed, not collected \
             (set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET to collect)"
        );
    }
    if orb_unconfigured() {
        println!(
            "  Orb                   not configured: usage is not forwarded \
             (set ORB_API_KEY, then `tally connectors orb map`)"
        );
    }
    println!();
    println!("  ctrl-c stops everything; data is kept for the next run");
    println!();
}

/// Whether `ORB_API_KEY` is unset (connectors then forwards nothing).
fn orb_unconfigured() -> bool {
    std::env::var_os(tally_connectors::orb::API_KEY_VARIABLE).is_none_or(|key| key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn printed_database_urls_hide_passwords() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            (
                "postgres://tally:s3cret@db:5432/tally",
                "postgres://tally:***@db:5432/tally",
            ),
            ("postgresql://db/tally", "postgresql://db/tally"),
        ];
        for (url, printed) in cases {
            assert_eq!(printable_url(url), printed);
        }
    }

    #[test]
    fn the_webhook_endpoint_follows_the_grpc_address_unless_told_otherwise() {
        let default = PaymentsConfig::default().webhook_listen_addr;
        let cases = [
            (None, default, "127.0.0.1:50051", "127.0.0.1:50052"),
            (None, default, "127.0.0.1:0", "127.0.0.1:0"),
            (None, default, "[::1]:7000", "[::1]:7001"),
            (
                Some("127.0.0.1:9000"),
                default,
                "127.0.0.1:50051",
                "127.0.0.1:9000",
            ),
            (
                None,
                address("127.0.0.1:8181"),
                "127.0.0.1:50051",
                "127.0.0.1:8181",
            ),
        ];
        for (flag, configured, grpc, expected) in cases {
            let derived = webhook_address(flag.map(address), configured, address(grpc)).unwrap();
            assert_eq!(derived, address(expected), "{flag:?} {configured} {grpc}");
        }
        let error = webhook_address(None, default, address("127.0.0.1:65535")).unwrap_err();
        assert!(error.to_string().contains("--webhook-listen"), "{error}");
    }
}
