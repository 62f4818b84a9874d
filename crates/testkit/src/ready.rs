//! Waiting for a child process to say it is ready on its stderr.

use std::io::{BufRead, BufReader};
use std::process::ChildStderr;
use std::sync::mpsc;
use std::time::Duration;

/// How a wait for readiness ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A line containing the marker was printed.
    Ready,
    /// The process closed stderr first (it exited); its last lines.
    Exited(String),
    /// Nothing within the bound.
    TimedOut,
}

/// Reads `stderr` until a line contains `marker`, up to `bound`, and keeps
/// draining it afterwards on a thread (a full pipe would block the child).
pub fn wait_for_line(stderr: ChildStderr, marker: &'static str, bound: Duration) -> Readiness {
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let mut ready_sender = Some(ready_sender);
        let mut last_lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(sender) = &ready_sender {
                if line.contains(marker) {
                    let _ = sender.send(Ok(()));
                    ready_sender = None;
                } else {
                    last_lines.push(line);
                    if last_lines.len() > 60 {
                        last_lines.remove(0);
                    }
                }
            }
        }
        if let Some(sender) = ready_sender {
            let _ = sender.send(Err(last_lines.join("\n")));
        }
    });
    match ready_receiver.recv_timeout(bound) {
        Ok(Ok(())) => Readiness::Ready,
        Ok(Err(output)) => Readiness::Exited(output),
        Err(_) => Readiness::TimedOut,
    }
}
