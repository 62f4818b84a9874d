//! `tally keys`: create, list and revoke API keys.

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Subcommand;
use tally_audit::{Entry, Origin, Schema};
use tally_runtime::Config;
use tally_runtime::auth::{self, Scope};
use tally_runtime::ids::ClockIds;

/// Key management.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates a key and prints it once (only its hash is stored).
    Create {
        /// A label, e.g. the calling service's name.
        #[arg(long)]
        name: String,
        /// Scopes: ingest, read, write, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// Registers a key you hold (read from an environment variable, never
    /// from the command line), unless it is registered already: the peer key
    /// the Helm chart and docker-compose.yml generate is registered this way
    /// after the migrations, at every install and upgrade.
    Register {
        /// A label, e.g. `tally-peers`.
        #[arg(long)]
        name: String,
        /// Scopes: ingest, read, write, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// The environment variable holding the key.
        #[arg(long, default_value = "TALLY_API_KEY")]
        from_env: String,
    },
    /// Lists keys (never their secrets).
    List,
    /// Revokes a key by id; running services stop accepting it within `auth.refresh_interval_seconds`.
    Revoke {
        /// The key id (`key_…`).
        id: String,
    },
}

/// One row of `tally keys list`.
#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Runs a `tally keys` command.
#[allow(clippy::print_stdout)]
pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let pool = tally_runtime::db::connect(&config.database).await?;
    let clock = crate::app::build_clock(&config);
    match command {
        KeysCommand::Create { name, scopes } => {
            let scopes = parse_scopes(&scopes)?;
            let ids = ClockIds::new(Arc::clone(&clock));
            let (id, plaintext) =
                create_audited(&pool, &ids, &clock, &name, &scopes, KEYS_JOB).await?;
            println!("{plaintext}");
            eprintln!("created {id} ({name}); the key above is shown only once");
        }
        KeysCommand::Register {
            name,
            scopes,
            from_env,
        } => {
            let scopes = parse_scopes(&scopes)?;
            let plaintext = std::env::var(&from_env).unwrap_or_default();
            if plaintext.len() < MIN_REGISTERED_KEY_CHARS {
                anyhow::bail!(
                    "{from_env} must hold the key to register (at least {MIN_REGISTERED_KEY_CHARS} characters; it is {} long)",
                    plaintext.len()
                );
            }
            let ids = ClockIds::new(Arc::clone(&clock));
            match register_audited(&pool, &ids, &clock, (&name, &plaintext, &from_env), &scopes)
                .await?
            {
                auth::Registered::Created(id) => {
                    eprintln!("registered {id} ({name}) from {from_env}");
                }
                auth::Registered::Existing { id, scopes: stored } if stored == scopes => {
                    eprintln!("{from_env} is already registered as {id}");
                }
                auth::Registered::Existing { id, scopes: stored } => anyhow::bail!(
                    "{from_env} is registered as {id} with scopes {}, not {}: revoke it (`tally keys revoke {id}`) \
                     and register a new key",
                    scope_list(&stored),
                    scope_list(&scopes)
                ),
                auth::Registered::Revoked(id) => anyhow::bail!(
                    "the key in {from_env} was registered as {id} and revoked: put a new key in {from_env} \
                     (with the Helm chart, delete the peer-key Secret and upgrade)"
                ),
            }
        }
        KeysCommand::List => {
            let rows: Vec<KeyRow> =
                sqlx::query_as("SELECT id, name, scopes, created_at, revoked_at FROM tally_auth.api_keys ORDER BY created_at")
                    .fetch_all(&pool)
                    .await?;
            // RFC 3339 in UTC to the second, like every other command's times.
            let time = |at: chrono::DateTime<chrono::Utc>| {
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            println!(
                "{:<40} {:<24} {:<24} {:<21} STATUS",
                "ID", "NAME", "SCOPES", "CREATED"
            );
            for row in rows {
                let status = row
                    .revoked_at
                    .map_or("active".to_owned(), |at| format!("revoked {}", time(at)));
                println!(
                    "{:<40} {:<24} {:<24} {:<21} {status}",
                    row.id,
                    row.name,
                    row.scopes.join(","),
                    time(row.created_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let ids = ClockIds::new(Arc::clone(&clock));
            if !revoke_audited(&pool, &ids, &clock, &id).await? {
                anyhow::bail!("no active key with id {id} (see `tally keys list`)");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// The actor of key changes made with `tally keys` (an operator with
/// database access: there is no API key to name).
const KEYS_JOB: &str = "tally_keys";

/// What the audit log keeps of a key: never its plaintext or hash.
fn key_state(
    id: &str,
    name: &str,
    scopes: &[String],
    revoked_at: Option<String>,
) -> serde_json::Value {
    serde_json::json!({ "id": id, "name": name, "scopes": scopes, "revoked_at": revoked_at })
}

/// Creates a key and its `api_key.created` entry (chain `auth`) in one
/// transaction, by the system job `job`. Returns `(id, plaintext)`.
pub async fn create_audited(
    pool: &sqlx::PgPool,
    ids: &ClockIds,
    clock: &tally_runtime::SharedClock,
    name: &str,
    scopes: &BTreeSet<Scope>,
    job: &str,
) -> anyhow::Result<(String, String)> {
    let mut transaction = pool.begin().await?;
    let (id, plaintext) = auth::create_key(&mut *transaction, ids, clock, name, scopes).await?;
    let scope_names: Vec<String> = scopes
        .iter()
        .map(|scope| scope.as_str().to_owned())
        .collect();
    let entry = Entry::minted(
        ids,
        clock.now(),
        "api_key.created",
        ("api_key", &id),
        &Origin::system(job),
    )
    .after(key_state(&id, name, &scope_names, None));
    tally_audit::record(&mut transaction, Schema::Auth, entry).await?;
    transaction.commit().await?;
    Ok((id, plaintext))
}

/// Registers a key held in `from_env` (`tally keys register`); a new
/// registration writes its `api_key.created` entry (by `tally_keys`, "registered
/// from <variable>") in the same transaction. An existing or revoked key
/// changes nothing and writes nothing.
async fn register_audited(
    pool: &sqlx::PgPool,
    ids: &ClockIds,
    clock: &tally_runtime::SharedClock,
    (name, plaintext, from_env): (&str, &str, &str),
    scopes: &BTreeSet<Scope>,
) -> anyhow::Result<auth::Registered> {
    let mut transaction = pool.begin().await?;
    let registered =
        auth::register_key(&mut transaction, ids, clock, name, plaintext, scopes).await?;
    if let auth::Registered::Created(id) = &registered {
        let scope_names: Vec<String> = scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect();
        let entry = Entry::minted(
            ids,
            clock.now(),
            "api_key.created",
            ("api_key", id),
            &Origin::system(KEYS_JOB),
        )
        .comment(format!("registered from {from_env}"))
        .after(key_state(id, name, &scope_names, None));
        tally_audit::record(&mut transaction, Schema::Auth, entry).await?;
    }
    transaction.commit().await?;
    Ok(registered)
}

/// Revokes a live key and writes its `api_key.revoked` entry in one
/// transaction; false when no live key has that id (nothing is written).
async fn revoke_audited(
    pool: &sqlx::PgPool,
    ids: &ClockIds,
    clock: &tally_runtime::SharedClock,
    id: &str,
) -> anyhow::Result<bool> {
    let mut transaction = pool.begin().await?;
    let key: Option<(String, Vec<String>)> = sqlx::query_as(
        "SELECT name, scopes FROM tally_auth.api_keys WHERE id = $1 AND revoked_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((name, scopes)) = key else {
        return Ok(false);
    };
    if !auth::revoke_key(&mut *transaction, clock, id).await? {
        return Ok(false);
    }
    let now = clock.now();
    let revoked_at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let entry = Entry::minted(
        ids,
        now,
        "api_key.revoked",
        ("api_key", id),
        &Origin::system(KEYS_JOB),
    )
    .before(key_state(id, &name, &scopes, None))
    .after(key_state(id, &name, &scopes, Some(revoked_at)));
    tally_audit::record(&mut transaction, Schema::Auth, entry).await?;
    transaction.commit().await?;
    Ok(true)
}

/// The shortest key `tally keys register` accepts (generated keys are longer).
const MIN_REGISTERED_KEY_CHARS: usize = 32;

fn scope_list(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses scope names, naming the bad one.
pub fn parse_scopes(names: &[String]) -> anyhow::Result<BTreeSet<Scope>> {
    names
        .iter()
        .map(|name| {
            Scope::parse(name.trim()).ok_or_else(|| {
                anyhow::anyhow!("unknown scope `{name}`: use ingest, read, write or admin")
            })
        })
        .collect()
}
