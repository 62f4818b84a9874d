//! The general ledger: [`store`] writes transactions append-only (once per
//! id, never before the latest close) and holds all of finance's journal SQL
//! (`store::reads` reads the trial balance, the journal and the schedules),
//! [`rebuild`] books every kept fact again, [`api`] serves them as
//! `LedgerService`.

pub mod api;
mod audit;
pub mod rebuild;
pub mod store;
