//! The one-time conversion of rows stored as protobuf before
//! `20261207800000_invoicing_own_model.sql` into invoicing's own model.
//!
//! `tally migrate` (and `tally dev`) runs [`convert_stored_protobuf`] right
//! after the migrations. It holds an advisory lock (two replicas of the
//! migrate job convert one after the other), converts in batches of
//! [`BATCH`] rows, each batch in one transaction with its rows locked, and
//! touches only rows still in the old format — so running it again, or
//! after a crash half-way, converts what is left and nothing twice. Each row
//! is decoded by the same mapping the readers use for a row not converted
//! yet, so what the API answers is the same before and after. The protobuf
//! stays beside the model (the previous release reads it after a rollback);
//! the release after this one drops it.

mod store;

use sqlx::PgPool;

use crate::billing::store::lines as line_store;
use crate::error::Result;
use crate::invoices::store as note_store;

/// Rows converted per transaction.
pub const BATCH: i64 = 500;

/// How many rows one run converted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub customers: usize,
    pub credit_notes: usize,
    pub invoice_lines: usize,
}

impl Converted {
    /// Whether anything was converted.
    pub fn is_empty(&self) -> bool {
        *self == Converted::default()
    }
}

/// Converts every row still stored as protobuf (see the module docs).
pub async fn convert_stored_protobuf(pool: &PgPool) -> Result<Converted> {
    let mut connection = pool.acquire().await?;
    store::lock(&mut connection).await?;
    let converted = convert_all(&mut connection).await;
    // Unlocked whatever happened (the lock is the session's).
    store::unlock(&mut connection).await?;
    let converted = converted?;
    if !converted.is_empty() {
        tracing::info!(
            customers = converted.customers,
            credit_notes = converted.credit_notes,
            invoice_lines = converted.invoice_lines,
            "converted invoicing rows stored as protobuf"
        );
    }
    Ok(converted)
}

async fn convert_all(connection: &mut sqlx::PgConnection) -> Result<Converted> {
    use sqlx::Connection as _;
    let mut converted = Converted::default();
    loop {
        let mut transaction = connection.begin().await?;
        let customers = crate::customers::store::legacy_batch(&mut transaction, BATCH).await?;
        crate::customers::store::set_documents(&mut transaction, &customers).await?;
        let notes = note_store::legacy_credit_notes(&mut transaction, BATCH).await?;
        note_store::set_converted_credit_notes(&mut transaction, &notes).await?;
        let lines = line_store::legacy_batch(&mut transaction, BATCH).await?;
        line_store::set_converted(&mut transaction, &lines).await?;
        transaction.commit().await?;
        converted.customers += customers.len();
        converted.credit_notes += notes.len();
        converted.invoice_lines += lines.len();
        if customers.is_empty() && notes.is_empty() && lines.is_empty() {
            return Ok(converted);
        }
    }
}
