//! The general ledger: [`store`] writes transactions append-only (once per
//! id, never before the latest close), [`queries`] reads the trial balance,
//! the journal and the schedules, [`rebuild`] books every kept fact again,
//! [`api`] serves them as `LedgerService`.

pub mod api;
pub mod queries;
pub mod rebuild;
pub mod store;
