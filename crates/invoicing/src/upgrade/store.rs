//! The advisory lock one conversion at a time holds (`tallyupg`).

use sqlx::PgConnection;

use crate::error::Result;

const UPGRADE_LOCK: i64 = 0x7461_6c6c_7975_7067;

/// Waits for the conversion lock and takes it for the session.
pub async fn lock(connection: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(UPGRADE_LOCK)
        .execute(connection)
        .await?;
    Ok(())
}

/// Releases the conversion lock.
pub async fn unlock(connection: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(UPGRADE_LOCK)
        .execute(connection)
        .await?;
    Ok(())
}
