//! `tally migrate`: without a subcommand, applies pending database
//! migrations (as the Helm pre-install Job runs it); with one, moves
//! customers between an external billing system and Tally (issue 19 and
//! docs/migrations.md): `import` brings them in.

use clap::Subcommand;

use crate::migrate_import::{self, ImportArgs};
use crate::migrate_system::{self, ChangeArgs, CompareArgs, Move, StatusArgs};

/// `tally migrate …`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Imports customers and subscriptions from Orb or Stripe Billing (`--dry-run` first).
    Import(ImportArgs),
    /// A customer's billing system of record and its parity reports.
    Status(StatusArgs),
    /// external or rolled_back → shadow: Tally's invoices stay drafts (`--dry-run` first).
    Shadow(ChangeArgs),
    /// Compares Tally's invoice of a period with the external biller's and stores the report.
    Compare(CompareArgs),
    /// shadow → cutover at the current period's start, after N matching periods (`--evidence-dir`).
    Cutover(ChangeArgs),
    /// shadow or cutover → rolled_back, before Tally's next invoice date.
    Rollback(ChangeArgs),
}

/// Runs a `tally migrate` subcommand.
pub async fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::Import(args) => migrate_import::run(args).await,
        MigrateCommand::Status(args) => migrate_system::status(args).await,
        MigrateCommand::Shadow(args) => migrate_system::change(Move::Shadow, args).await,
        MigrateCommand::Compare(args) => migrate_system::compare(args).await,
        MigrateCommand::Cutover(args) => migrate_system::change(Move::Cutover, args).await,
        MigrateCommand::Rollback(args) => migrate_system::change(Move::Rollback, args).await,
    }
}
