//! A fresh, migrated database per test on a shared throwaway cluster.
//!
//! The first test in a binary starts a cluster from the installed PostgreSQL
//! server binaries (free port, fsync off, as the `postgres` user when we run as
//! root) — or uses the server in `DATABASE_URL` — and builds a template
//! database with every migration applied. Each test then gets `CREATE DATABASE
//! … TEMPLATE …`, which takes milliseconds.

use std::hash::{Hash, Hasher};

// Database names below are built from our own prefixes and hex digests, never from input.
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tally_runtime::db::MIGRATOR;
use tally_runtime::local_postgres::{Durability, LocalPostgres, free_port};
use tokio::sync::OnceCell;

/// A database of one's own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// A pool on the database.
    pub pool: PgPool,
    /// Its URL (for a service under test that opens its own pool).
    pub url: String,
    /// Its name.
    pub name: String,
}

#[derive(Debug)]
struct Server {
    /// URL of the server without the database name, e.g. `postgres://postgres@127.0.0.1:5432`.
    base_url: String,
    /// Database to connect to for CREATE DATABASE.
    admin_database: String,
    template: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

/// A fresh database with every migration applied. Panics with a message that
/// says what to install when PostgreSQL is not available.
#[expect(
    clippy::panic,
    reason = "test harness: the panic is the failing test's report, saying what to install"
)]
pub async fn database() -> TestDatabase {
    match try_database().await {
        Ok(database) => database,
        Err(error) => panic!("cannot provide a PostgreSQL database for this test: {error:#}"),
    }
}

/// Like [`database`], but returns the error.
pub async fn try_database() -> anyhow::Result<TestDatabase> {
    let server = SERVER.get_or_try_init(start_server).await?;
    let name = format!("tally_test_{}", crate::unique_suffix());
    let mut admin =
        PgConnection::connect(&format!("{}/{}", server.base_url, server.admin_database)).await?;
    let sql = format!("CREATE DATABASE {name} TEMPLATE {}", server.template);
    let mut attempts = 0;
    // Concurrent copies of one template can collide briefly; retry a few times.
    while let Err(error) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .execute(&mut admin)
        .await
    {
        attempts += 1;
        if attempts >= 20 {
            return Err(error.into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 * attempts)).await;
    }
    admin.close().await?;
    let url = format!("{}/{name}", server.base_url);
    let pool = tally_runtime::db::connect_url(&url, 5).await?;
    Ok(TestDatabase { pool, url, name })
}

async fn start_server() -> anyhow::Result<Server> {
    let (base_url, admin_database) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => split_database(&url)?,
        _ => start_throwaway_cluster()?,
    };
    let template = template_name();
    build_template(&base_url, &admin_database, &template).await?;
    Ok(Server {
        base_url,
        admin_database,
        template,
    })
}

fn split_database(url: &str) -> anyhow::Result<(String, String)> {
    let without_query = url.split('?').next().unwrap_or(url);
    match without_query.rsplit_once('/') {
        Some((base, database))
            if base.contains("://") && !base.ends_with('/') && !database.is_empty() =>
        {
            Ok((base.to_owned(), database.to_owned()))
        }
        _ => anyhow::bail!(
            "DATABASE_URL must name a database, e.g. postgres://user@host:5432/postgres"
        ),
    }
}

fn start_throwaway_cluster() -> anyhow::Result<(String, String)> {
    let root = std::env::temp_dir().join(format!(
        "tally-testkit-pg-{}-{}",
        std::process::id(),
        crate::unique_suffix()
    ));
    let cluster = LocalPostgres::new(&root, free_port()?)?;
    cluster.start(Durability::Throwaway)?;
    crate::watchdog::on_exit(&format!(
        "{}; rm -rf {}",
        cluster.stop_command_line(),
        root.display()
    ))?;
    Ok((
        format!("postgres://postgres@127.0.0.1:{}", cluster.port()),
        "postgres".to_owned(),
    ))
}

/// The template is named after the migrations it holds, so a changed migration
/// never reuses a stale template on a long-lived developer server.
fn template_name() -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for migration in MIGRATOR.iter() {
        migration.version.hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    format!("tally_template_{:016x}", hasher.finish())
}

async fn build_template(
    base_url: &str,
    admin_database: &str,
    template: &str,
) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{base_url}/{admin_database}")).await?;
    // Serialise template builds across test binaries sharing one server.
    sqlx::query("SELECT pg_advisory_lock(7411)")
        .execute(&mut admin)
        .await?;
    let ready: Option<bool> =
        sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind(template)
            .fetch_optional(&mut admin)
            .await?;
    if ready != Some(true) {
        if ready == Some(false) {
            // A build that died half-way: start over.
            sqlx::query(AssertSqlSafe(format!("DROP DATABASE {template}")))
                .execute(&mut admin)
                .await?;
        }
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {template}")))
            .execute(&mut admin)
            .await?;
        let pool = tally_runtime::db::connect_url(&format!("{base_url}/{template}"), 1).await?;
        tally_runtime::db::migrate(&pool).await?;
        pool.close().await;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER DATABASE {template} WITH IS_TEMPLATE true"
        )))
        .execute(&mut admin)
        .await?;
    }
    sqlx::query("SELECT pg_advisory_unlock(7411)")
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_split() {
        let (base, database) =
            split_database("postgres://u:p@h:5432/tally?sslmode=disable").unwrap();
        assert_eq!(base, "postgres://u:p@h:5432");
        assert_eq!(database, "tally");
        assert!(split_database("postgres://h:5432").is_err());
    }
}
