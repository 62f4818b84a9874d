//! What every Tally service stands on.
//!
//! A service's `main` wires these pieces in a fixed order — [`config`] →
//! [`telemetry`] → stores and bus → [`server`] → wait for [`shutdown`] — and
//! nothing here holds global state: the composition root passes each piece down.

pub mod auth;
pub mod caller;
pub mod clock;
pub mod clock_service;
pub mod config;
pub mod db;
pub mod decode_errors;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod in_flight;
pub mod local_postgres;
pub mod peer;
pub mod portal;
pub mod readiness;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::Config;
pub use error::{ErrorKind, ServiceError};
pub use shutdown::Shutdown;
