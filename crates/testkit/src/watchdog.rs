//! Stops what a test binary started once the binary exits.
//!
//! Rust runs no destructors for statics, and a test binary may also be killed.
//! A tiny shell loop, started detached, polls our pid and runs the cleanup
//! command when we are gone.

use std::process::{Command, Stdio};

/// Runs `cleanup` (a shell command) after the current process exits.
pub fn on_exit(cleanup: &str) -> anyhow::Result<()> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}
