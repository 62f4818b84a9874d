//! `tally export …`: the BigQuery export (`ExportService`) — how far each
//! warehouse table is, and rebuilding a table's daily partitions.

use clap::Subcommand;
use tally_proto::export::export_service_client::ExportServiceClient;
use tally_proto::export::{BackfillPartitionsRequest, GetExportStatusRequest};

use super::table::Table;
use super::{Call as _, Target, connect, format_time, print_one};

/// `tally export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Rows exported and waiting per table, the stream's next offset, the lag and the last error.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Rebuilds a table's daily partitions (UTC days) from the rows export has
    /// exported, one BigQuery load job per day; running it again for the same
    /// content is a no-op (docs/operations.md, "Warehouse backfill").
    Backfill {
        /// The table, e.g. `invoices`.
        #[arg(long)]
        table: String,
        /// The first day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// The last day, YYYY-MM-DD (inclusive; at most 92 days).
        #[arg(long)]
        to: String,
        /// Load again content BigQuery already loaded (after a partition was
        /// damaged by hand): a generation not used before, e.g. 1.
        #[arg(long, default_value_t = 0)]
        generation: u32,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs `tally export`.
pub async fn run(command: ExportCommand) -> anyhow::Result<()> {
    let target = match command {
        ExportCommand::Status { target } => target,
        ExportCommand::Backfill {
            table,
            from,
            to,
            generation,
            target,
        } => {
            return backfill(
                BackfillPartitionsRequest {
                    table,
                    from_day: from,
                    to_day: to,
                    generation,
                },
                &target,
            )
            .await;
        }
    };
    let response = ExportServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    )
    .get_export_status(GetExportStatusRequest {})
    .await
    .answer("GetExportStatus")?;
    print_one(
        target.output,
        &response,
        "tally.export.v1.GetExportStatusResponse",
        |status| {
            #[allow(clippy::print_stdout)]
            {
                if !status.enabled {
                    println!(
                        "export is off: set export.project_id (TALLY_EXPORT__PROJECT_ID) on the \
                         export service to stream Tally's facts into BigQuery"
                    );
                    return;
                }
                println!("dataset {}", status.dataset);
                let mut table = Table::new(&[
                    "table",
                    "exported",
                    "waiting",
                    "next offset",
                    "lag",
                    "last exported",
                    "state",
                ]);
                for entry in &status.tables {
                    let lag = entry.lag.unwrap_or_default();
                    let state = if entry.stopped {
                        format!("STOPPED: {}", entry.last_error)
                    } else if entry.last_error.is_empty() {
                        "ok".to_owned()
                    } else {
                        format!(
                            "retrying ({}): {}",
                            format_time(entry.last_error_at.as_ref()),
                            entry.last_error
                        )
                    };
                    table.row(vec![
                        entry.table.clone(),
                        entry.rows_exported.to_string(),
                        entry.rows_waiting.to_string(),
                        entry.next_offset.to_string(),
                        format!("{}s", lag.seconds),
                        format_time(entry.last_exported_at.as_ref()),
                        state,
                    ]);
                }
                print!("{}", table.render());
            }
        },
    )
}

/// Runs `tally export backfill`.
async fn backfill(request: BackfillPartitionsRequest, target: &Target) -> anyhow::Result<()> {
    let response = ExportServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    )
    .backfill_partitions(request)
    .await
    .answer("BackfillPartitions")?;
    print_one(
        target.output,
        &response,
        "tally.export.v1.BackfillPartitionsResponse",
        |response| {
            let mut table = Table::new(&["day", "rows", "load job", "state"]);
            for partition in &response.partitions {
                table.row(vec![
                    partition.day.clone(),
                    partition.rows.to_string(),
                    partition.job_id.clone(),
                    if partition.already_loaded {
                        "already loaded".to_owned()
                    } else {
                        "loaded".to_owned()
                    },
                ]);
            }
            #[allow(clippy::print_stdout)]
            {
                print!("{}", table.render());
            }
        },
    )
}
