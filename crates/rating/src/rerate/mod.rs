//! Re-rating: recomputing a subscription's billing periods from ingest's
//! event log (`IngestService.ReadEvents`), so that a backdated subscription
//! change gives exactly the aggregates rating would have computed had it known
//! the change up front (see docs/architecture.md, "Rating: re-rating").
//!
//! * [`changes`] — the earliest instant a new snapshot rates differently;
//! * [`RerateQueue`] — creates jobs (`rating.rerate_jobs`): the replica when a
//!   snapshot changes already-rated usage, `RerateSubscription` on request;
//! * [`RerateWorker`] — runs them, one transaction each ([`rebuild`]).

pub mod api;
pub mod changes;
mod jobs;
mod model;
mod rebuild;
mod store;
mod worker;

pub use jobs::RerateQueue;
pub use model::{JobState, NewJob, RerateJob};
pub use rebuild::Rebuilt;
pub use worker::{JobOutcome, RerateWorker};
