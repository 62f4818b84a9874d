//! `tally export …`: the BigQuery export (`ExportService`) — how far each
//! warehouse table is.

use clap::Subcommand;
use tally_proto::export::GetExportStatusRequest;
use tally_proto::export::export_service_client::ExportServiceClient;

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
}

/// Runs `tally export`.
pub async fn run(command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::Status { target } = command;
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
