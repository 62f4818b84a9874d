//! `tally migrate`: without a subcommand, applies pending database
//! migrations (as the Helm pre-install Job runs it); with one, moves
//! customers between an external billing system and Tally (issue 19 and
//! docs/migrations.md): `import` brings them in.

use clap::Subcommand;

use crate::migrate_import::{self, ImportArgs};

/// `tally migrate …`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Imports customers and subscriptions from Orb or Stripe Billing (`--dry-run` first).
    Import(ImportArgs),
}

/// Runs a `tally migrate` subcommand.
pub async fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::Import(args) => migrate_import::run(args).await,
    }
}
