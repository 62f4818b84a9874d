//! The audit log: who changed what, when and why, for every money-moving
//! change (issue 21; docs/architecture.md, "Audit log").
//!
//! * [`record`] writes one [`Entry`] into `<schema>.audit_log` on the
//!   caller's connection, inside the transaction making the change, so a
//!   committed change without its entry cannot exist (and a rolled-back
//!   change leaves none);
//! * each schema's entries form a hash chain — `hash = SHA-256(previous hash
//!   ‖ canonical entry)` with a gapless sequence — appended under a lock on
//!   the one-row `audit_chain_head`, so concurrent transactions cannot fork
//!   it; triggers keep the log append-only;
//! * [`verify`] / [`verify_against`] walk a chain and report the first broken
//!   link (and compare with heads exported earlier); [`head`] reads the head
//!   to export, and [`HeadPublisher`] publishes each chain's head outside the
//!   database as it moves;
//! * [`ClockRecorder`] records the moves of a manual clock (`clock.advanced`,
//!   `clock.set`);
//! * [`AuditApi`] serves `tally.audit.v1.AuditService` for the chains a
//!   process answers for.
//!
//! Services depend on this crate; it depends on no service.

mod api;
mod chain;
mod clock;
mod entry;
mod error;
mod mapping;
mod publish;
mod schema;
mod secrets;
mod store;

pub use api::AuditApi;
pub use chain::{
    BrokenLink, BrokenLinkKind, Head, Recorded, Verification, head, parse_head, record,
    record_many, verify, verify_against,
};
pub use clock::ClockRecorder;
pub use entry::{Actor, Entry, GENESIS_HASH, Origin, canonical_json, current_trace_id};
pub use error::AuditError;
pub use publish::{HeadPublisher, HeadSink, LogSink};
pub use schema::Schema;
pub use secrets::looks_secret;
pub use store::{Cursor, Filter, StoredEntry, get, list};

/// The id of an audit entry (`aud_…`).
pub use tally_domain::ids::AuditEntryId;
