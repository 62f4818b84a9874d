//! The BigQuery emulator (PyPI `bqemulator` 1.4, REST and the Storage Write
//! API on DuckDB), started once per test binary on free loopback ports
//! through `bqemulator_launcher.py` (which skips DuckDB's spatial extension,
//! unavailable offline). `.ci/test-tools` installs it into
//! `~/.cache/tally-tools/bqemulator`; `BQEMULATOR_PYTHON` names another
//! Python that has it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tally_runtime::local_postgres::free_port;
use tokio::sync::OnceCell;

use crate::ready::Readiness;

/// The project id tests use on the emulator.
pub const TEST_PROJECT: &str = "tally-test";

const MISSING: &str = "the BigQuery emulator was not found: run `.ci/test-tools` (it installs PyPI \
    `bqemulator==1.4.0` and `numpy` into ~/.cache/tally-tools/bqemulator; needs python3 with venv), \
    or set BQEMULATOR_PYTHON to a python that has them";

/// A running emulator's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// `http://127.0.0.1:PORT` (REST, `/bigquery/v2/…`).
    pub rest_endpoint: String,
    /// `http://127.0.0.1:PORT` (gRPC: the Storage Read and Write APIs).
    pub grpc_endpoint: String,
}

static EMULATOR: OnceCell<Emulator> = OnceCell::const_new();

/// The emulator of this test binary. Panics with what to install when none can be started.
#[expect(
    clippy::panic,
    reason = "test harness: the panic is the failing test's report, saying what to install"
)]
pub async fn emulator() -> Emulator {
    match EMULATOR
        .get_or_try_init(|| async { tokio::task::spawn_blocking(start).await? })
        .await
    {
        Ok(emulator) => emulator.clone(),
        Err(error) => panic!("cannot provide a BigQuery emulator for this test: {error:#}"),
    }
}

fn python() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("BQEMULATOR_PYTHON") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "BQEMULATOR_PYTHON={} is not a file; {MISSING}",
            path.display()
        );
        return Ok(path);
    }
    let tools = std::env::var_os("TALLY_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/tally-tools"))
        })
        .ok_or_else(|| anyhow::anyhow!("neither TALLY_TOOLS_DIR nor HOME is set; {MISSING}"))?;
    let python = tools.join("bqemulator/bin/python");
    anyhow::ensure!(
        python.is_file(),
        "{} is missing; {MISSING}",
        python.display()
    );
    Ok(python)
}

fn start() -> anyhow::Result<Emulator> {
    let python = python()?;
    let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bqemulator_launcher.py");
    let (rest_port, grpc_port) = (free_port()?, free_port()?);
    let mut child = Command::new(&python)
        .arg(&launcher)
        .args([
            "start",
            "--ephemeral",
            "--log-level",
            "info",
            "--log-format",
            "json",
        ])
        .args(["--rest-host", "127.0.0.1", "--grpc-host", "127.0.0.1"])
        .arg(format!("--rest-port={rest_port}"))
        .arg(format!("--grpc-port={grpc_port}"))
        .arg(format!("--project={TEST_PROJECT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            anyhow::anyhow!("cannot start {}: {error}; {MISSING}", python.display())
        })?;
    crate::watchdog::on_exit(&format!("kill {}", child.id()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr from the emulator"))?;
    match crate::ready::wait_for_line(stderr, "\"grpc.listen\"", Duration::from_secs(120)) {
        Readiness::Ready => Ok(Emulator {
            rest_endpoint: format!("http://127.0.0.1:{rest_port}"),
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
        }),
        Readiness::Exited(output) => {
            anyhow::bail!("the BigQuery emulator exited before it was ready:\n{output}")
        }
        Readiness::TimedOut => {
            let _ = child.kill();
            anyhow::bail!("the BigQuery emulator did not start within 120 s")
        }
    }
}
