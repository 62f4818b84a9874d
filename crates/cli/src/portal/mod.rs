//! `tally portal link`: a customer portal link, with a token that can read
//! one customer (its usage, live cost, upcoming and past invoices, credit
//! balance) and nothing else, until it expires (`runtime::auth`,
//! `CustomerScope`). Like `tally keys`, it writes to the database directly.

use std::sync::Arc;

use clap::Subcommand;
use tally_audit::{Entry, Origin, Schema};
use tally_runtime::Config;
use tally_runtime::ids::ClockIds;

mod store;

/// The longest a portal link lives.
const MAX_TTL_SECONDS: i64 = 30 * 86_400;

/// Customer portal links.
#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// Issues a token for one customer and prints the portal link (the token
    /// is shown once; only its hash is stored).
    Link {
        /// The customer: `cus_…` or its external id.
        #[arg(long)]
        customer: String,
        /// How long the link works: `90m`, `24h`, `7d` (at most 30d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Where the console is served (`tally dev` serves it on the gRPC port + 2).
        #[arg(
            long,
            default_value = "http://127.0.0.1:50053",
            env = "TALLY_CONSOLE_URL"
        )]
        console_url: String,
    },
}

/// Runs a `tally portal` command.
#[allow(clippy::print_stdout)]
pub async fn run(config: Config, command: PortalCommand) -> anyhow::Result<()> {
    let PortalCommand::Link {
        customer,
        ttl,
        console_url,
    } = command;
    let ttl_seconds = crate::admin::clock::parse_duration(&ttl)?.seconds;
    anyhow::ensure!(
        ttl_seconds <= MAX_TTL_SECONDS,
        "--ttl {ttl} is longer than 30d: issue a new link when it expires"
    );
    let pool = tally_runtime::db::connect(&config.database).await?;
    let clock = crate::app::build_clock(&config);
    let ids = ClockIds::new(Arc::clone(&clock));
    let customer_id = store::customer_id(&pool, &customer).await?;
    let Some(customer_id) = customer_id else {
        anyhow::bail!("no customer `{customer}` (see `tally customers list`)");
    };
    // Expiry is wall time: a portal link's life does not follow a manual clock.
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(ttl_seconds);
    let mut transaction = pool.begin().await?;
    let (id, token) = tally_runtime::portal::create_token(
        &mut *transaction,
        &ids,
        &clock,
        &customer_id,
        expires_at,
    )
    .await?;
    let expires = expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let entry = Entry::minted(
        &ids,
        clock.now(),
        "api_key.created",
        ("api_key", &id),
        &Origin::system("tally_portal"),
    )
    .comment(format!("portal link for {customer_id}"))
    .after(serde_json::json!({
        "id": id, "name": format!("portal {customer_id}"), "scopes": ["read"],
        "customer_id": customer_id, "expires_at": expires,
    }));
    tally_audit::record(&mut transaction, Schema::Auth, entry).await?;
    transaction.commit().await?;
    println!(
        "{}/portal/#token={token}",
        console_url.trim_end_matches('/')
    );
    eprintln!(
        "portal token {id} for {customer_id}, expires {expires}; the link above is shown only once \
         (revoke: tally keys revoke {id})"
    );
    Ok(())
}
