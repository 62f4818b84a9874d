//! `tally`: run the system on a laptop (`tally dev`), run one service in a
//! cluster (`tally serve`), apply migrations, manage API keys, and operate a
//! running Tally over gRPC (the admin commands in `admin`).
//!
//! `main` only parses arguments and dispatches; each command lives in its own
//! module and wires the pieces from `tally-runtime` and the service crates.

mod admin;
mod app;
mod console;
mod demo;
mod dev;
mod events;
mod events_customers;
mod events_rating;
mod events_status;
mod keys;
mod load;
mod load_rating;
mod migrate;
mod migrate_import;
mod migrate_system;
mod portal;
mod progress;
mod rejected;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::ServiceKind;

// mimalloc instead of the system allocator: a gRPC server decoding and
// validating 100,000 events a second allocates millions of small strings, and
// glibc's malloc/free was a fifth of ingest's CPU (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tally: usage-based and subscription billing.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about)]
struct Cli {
    /// A TOML config file (layered over defaults, under `TALLY_…` variables).
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every service in one process with a private PostgreSQL and the in-process bus.
    Dev(dev::DevArgs),
    /// One service, as a cluster deployment runs it.
    Serve {
        /// Which service.
        #[arg(value_enum)]
        service: ServiceKind,
    },
    /// Applies pending database migrations (DATABASE_URL) and exits; with a
    /// subcommand, moves customers from another billing system (`import`).
    Migrate {
        #[command(subcommand)]
        command: Option<migrate::MigrateCommand>,
    },
    /// Creates, lists and revokes API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Customer portal links: `link --customer cus_… [--ttl 24h]`.
    Portal {
        #[command(subcommand)]
        command: portal::PortalCommand,
    },
    /// Sends usage events (JSON lines) to a running ingest.
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Lists rejected usage events and replays them after a fix.
    Rejected {
        #[command(subcommand)]
        command: rejected::RejectedCommand,
    },
    /// Declarative meters and plans: `apply -f catalog.yaml`, `show`.
    Catalog {
        #[command(subcommand)]
        command: admin::catalog::CatalogCommand,
    },
    /// Reads and moves the manual clock of running services (dev and test).
    Clock {
        #[command(subcommand)]
        command: admin::clock::ClockCommand,
    },
    /// Reconciles payments with Stripe for a window; exits 1 on mismatches.
    Reconcile(admin::reconcile::ReconcileArgs),
    /// Creates, lists, shows and archives customers.
    Customers {
        #[command(subcommand)]
        command: admin::customers::CustomersCommand,
    },
    /// Creates subscriptions, changes their plan, pauses, resumes, cancels and shows them.
    Subscriptions {
        #[command(subcommand)]
        command: admin::subscriptions::SubscriptionsCommand,
    },
    /// Quotes as code: creates (from a quote file), previews, finalizes, accepts,
    /// declines, cancels, lists and shows quotes.
    Quotes {
        #[command(subcommand)]
        command: admin::quotes::QuotesCommand,
    },
    /// Lists and shows invoices; finalizes, voids and credits them.
    Invoices {
        #[command(subcommand)]
        command: admin::invoices::InvoicesCommand,
    },
    /// A customer's usage and live cost this period, and usage that is not billed and why.
    Usage {
        #[command(subcommand)]
        command: admin::usage::UsageCommand,
    },
    /// Grants credits and shows a customer's balance and credit ledger.
    Credits {
        #[command(subcommand)]
        command: admin::credits::CreditsCommand,
    },
    /// The books: trial balance, journal (CSV for an ERP), revenue schedules, period close.
    Finance {
        #[command(subcommand)]
        command: admin::finance::FinanceCommand,
    },
    /// Connectors to external billing systems: Orb customer mapping and forwarded usage.
    Connectors {
        #[command(subcommand)]
        command: admin::connectors::ConnectorsCommand,
    },
    /// The BigQuery export: rows exported and waiting per table, offsets, lag, last error; and `backfill`, rebuilding daily partitions.
    Export {
        #[command(subcommand)]
        command: admin::export::ExportCommand,
    },
    /// The audit log: list and show entries, verify the chains, print their heads.
    Audit {
        #[command(subcommand)]
        command: admin::audit::AuditCommand,
    },
    /// What waits between the services (outboxes, usage not yet rated, events
    /// not yet applied), read from the database; exits 1 when something is stuck.
    Status(status::StatusArgs),
    /// Load generators for the benchmarks (docs/benchmarks.md).
    Load {
        #[command(subcommand)]
        command: load::LoadCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<admin::UsageError>().is_some() {
                ExitCode::from(2) // like clap's own usage errors
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Only the commands that run services or reach the database read the
    // config, and only the sections they use: the admin commands are gRPC
    // clients whose options come from flags and `TALLY_ADDRESS` /
    // `TALLY_API_KEY`, so no `TALLY_…` variable can stop them.
    let file = cli.config.as_deref();
    match cli.command {
        Command::Dev(args) => dev::run(load_config(file, None)?, args).await,
        Command::Serve { service } => app::serve(service, load_config(file, None)?).await,
        Command::Migrate { command: None } => {
            app::migrate(load_config(file, Some(&["database"]))?).await
        }
        Command::Migrate {
            command: Some(command),
        } => migrate::run(command).await,
        Command::Status(args) => status::run(load_config(file, Some(&["database"]))?, args).await,
        Command::Keys { command } => {
            keys::run(load_config(file, Some(&["database", "clock"]))?, command).await
        }
        Command::Portal { command } => {
            portal::run(load_config(file, Some(&["database", "clock"]))?, command).await
        }
        Command::Load { command } => load::run(load_config(file, None)?, command).await,
        Command::Rejected { command } => rejected::run(command).await,
        Command::Events { command } => events::run(command).await,
        Command::Catalog { command } => admin::catalog::run(command).await,
        Command::Clock { command } => admin::clock::run(command).await,
        Command::Reconcile(args) => admin::reconcile::run(args).await,
        Command::Customers { command } => admin::customers::run(command).await,
        Command::Subscriptions { command } => admin::subscriptions::run(command).await,
        Command::Quotes { command } => admin::quotes::run(command).await,
        Command::Invoices { command } => admin::invoices::run(command).await,
        Command::Credits { command } => admin::credits::run(command).await,
        Command::Audit { command } => admin::audit::run(command).await,
        Command::Finance { command } => admin::finance::run(command).await,
        Command::Connectors { command } => admin::connectors::run(command).await,
        Command::Export { command } => admin::export::run(command).await,
        Command::Usage { command } => admin::usage::run(command).await,
    }
}

/// The config (every section, or only `sections`), warning once about
/// `TALLY_<X>__…` variables of no section (ignored: a typo, or not ours).
fn load_config(
    file: Option<&std::path::Path>,
    sections: Option<&[&str]>,
) -> anyhow::Result<tally_runtime::Config> {
    for variable in tally_runtime::config::ignored_variables() {
        eprintln!(
            "warning: {variable} is ignored: no configuration section `{}`",
            variable
                .trim_start_matches("TALLY_")
                .split("__")
                .next()
                .unwrap_or_default()
                .to_lowercase()
        );
    }
    Ok(match sections {
        Some(sections) => tally_runtime::Config::load_sections(file, sections)?,
        None => tally_runtime::Config::load(file)?,
    })
}
