//! The admin commands (`catalog`, `clock`, `reconcile`) run as the real
//! `tally` binary against real services started with `tally serve`.

mod billing;
mod catalog;
mod clock;
mod reconcile;
mod support;
