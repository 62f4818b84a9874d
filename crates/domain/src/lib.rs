//! Tally's billing domain, pure: no I/O, no async, no clocks (instants are passed in).
//!
//! - [`money`]: currencies, [`Money`](money::Money), rounding, allocation.
//! - [`ids`]: prefixed, validated identifiers.
//! - [`pricing`]: price models and the breakdown an invoice line prints.
//!
//! Every module has one error enum; every constructor that can be given a bad value
//! validates it, so a value of a domain type is a valid one.

pub mod event;
pub mod ids;
pub mod meter;
pub mod money;
pub mod period;
pub mod plan;
pub mod pricing;
pub mod proration;
pub mod subscription;
