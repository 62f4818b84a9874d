//! Dev-only test harness: real components, started on demand.
//!
//! - [`postgres::database`]: a fresh database with every migration applied, on
//!   a throwaway PostgreSQL cluster shared by the test binary (or on the server
//!   in `DATABASE_URL`);
//! - [`pubsub::emulator_host`]: the Pub/Sub emulator, started once per test
//!   binary on a free port (or the one in `PUBSUB_EMULATOR_HOST`);
//! - [`bigquery::emulator`]: the BigQuery emulator (`bqemulator`), started once
//!   per test binary on free ports;
//! - [`tcp_proxy::TcpProxy`]: a forwarder a test takes down and brings back,
//!   so a dependency goes away for the process under test alone;
//! - [`keys::serve_with_key`]: a service served with authentication and one
//!   API key, and a channel that sends it;
//! - [`only_violation`]: the (field, rule) of an INVALID_ARGUMENT's one violation;
//! - a controllable clock and predictable ids, re-exported from the runtime.
//!
//! A missing component is a test failure whose message says what to install —
//! never a silent skip. Processes we start are stopped by a watchdog when the
//! test binary exits, however it exits.

pub mod bigquery;
pub mod keys;
pub mod postgres;
pub mod pubsub;
mod ready;
pub mod tcp_proxy;
mod violations;
mod watchdog;

pub use tally_runtime::clock::{Clock, ManualClock};
pub use tally_runtime::ids::{IdGenerator, SequentialIds};
pub use violations::only_violation;

/// A unique suffix for names (topics, subscriptions) so tests never collide.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
