//! The admin commands run as the real `tally` binary against real services:
//! `tally serve` processes, or `tally dev` with all four in one.

mod audit;
mod billing;
mod catalog;
mod clock;
mod config;
mod connectors;
mod events;
mod export;
mod finance;
mod finance_mrr;
mod invoice_actions;
mod migrate_import;
mod reconcile;
mod support;
mod usage;
