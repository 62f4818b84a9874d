//! The PostgreSQL pool and the one ordered migration stream.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// Every migration in `migrations/` at the repository root, embedded at build
/// time. Each service owns one schema; this is the only migration stream.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Why the database could not be reached or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No URL configured.
    #[error(
        "no database configured: set DATABASE_URL or TALLY_DATABASE__URL (or run `tally dev`, which starts one)"
    )]
    NotConfigured,
    /// Connecting failed.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens a pool using `config`.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DatabaseError> {
    let url = config.url.as_deref().ok_or(DatabaseError::NotConfigured)?;
    connect_url(url, config.max_connections()).await
}

/// Opens a pool to `url` with at most `max_connections`.
pub async fn connect_url(url: &str, max_connections: u32) -> Result<PgPool, DatabaseError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(DatabaseError::Connect)
}

/// Applies every pending migration (idempotent; safe to run from several replicas:
/// sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DatabaseError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
