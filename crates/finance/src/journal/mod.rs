//! The general ledger: [`store`] writes transactions append-only (once per
//! id, never before the latest close), [`queries`] reads the trial balance,
//! the journal and the schedules, [`api`] serves them as `LedgerService`.

pub mod api;
pub mod queries;
pub mod store;
