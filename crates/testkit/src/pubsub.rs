//! The Google Cloud Pub/Sub emulator, started once per test binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tally_runtime::local_postgres::free_port;
use tokio::sync::OnceCell;

use crate::ready::Readiness;

/// The project id tests use on the emulator (any id works there).
pub const TEST_PROJECT: &str = "tally-test";

const DEFAULT_LOCATION: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
const MISSING: &str = "the Pub/Sub emulator was not found: install gcloud's `google-cloud-cli-pubsub-emulator` \
    package and Java 17 (it lands in /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin), set \
    PUBSUB_EMULATOR_BIN to its cloud-pubsub-emulator script, or set PUBSUB_EMULATOR_HOST to a running emulator";

static EMULATOR: OnceCell<String> = OnceCell::const_new();

/// `host:port` of a running emulator. Panics with what to install when none can be started.
#[expect(
    clippy::panic,
    reason = "test harness: the panic is the failing test's report, saying what to install"
)]
pub async fn emulator_host() -> String {
    match EMULATOR.get_or_try_init(start).await {
        Ok(host) => host.clone(),
        Err(error) => panic!("cannot provide a Pub/Sub emulator for this test: {error:#}"),
    }
}

async fn start() -> anyhow::Result<String> {
    if let Ok(host) = std::env::var("PUBSUB_EMULATOR_HOST")
        && !host.is_empty()
    {
        return Ok(host);
    }
    tokio::task::spawn_blocking(start_emulator).await?
}

fn find_emulator() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("PUBSUB_EMULATOR_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "PUBSUB_EMULATOR_BIN={} is not a file; {MISSING}",
            path.display()
        );
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("cloud-pubsub-emulator"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from(DEFAULT_LOCATION)).filter(|path| path.is_file()))
        .ok_or_else(|| anyhow::anyhow!(MISSING))
}

fn start_emulator() -> anyhow::Result<String> {
    let binary = find_emulator()?;
    let port = free_port()?;
    let mut child = Command::new(&binary)
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            anyhow::anyhow!("cannot start {}: {error}; {MISSING}", binary.display())
        })?;
    // The script execs java, so this pid is the emulator itself.
    crate::watchdog::on_exit(&format!("kill {}", child.id()))?;

    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr from the emulator"))?;
    match crate::ready::wait_for_line(
        stderr,
        "Server started, listening on",
        Duration::from_secs(90),
    ) {
        Readiness::Ready => Ok(format!("127.0.0.1:{port}")),
        Readiness::Exited(output) => {
            anyhow::bail!("the Pub/Sub emulator exited before it was ready:\n{output}")
        }
        Readiness::TimedOut => {
            let _ = child.kill();
            anyhow::bail!("the Pub/Sub emulator did not start within 90 s (is Java 17 installed?)")
        }
    }
}
