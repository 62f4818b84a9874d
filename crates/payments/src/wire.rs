//! Payments' wire writers; timestamps and the money reader are
//! `tally_proto::convert`'s (the one conversion every service uses).

use tally_domain::money::Money;
use tally_proto::common;
pub use tally_proto::convert::{instant, timestamp};

/// An amount on the wire.
pub fn money(amount: &Money) -> common::Money {
    common::Money {
        currency: amount.currency().code().to_owned(),
        amount: amount.amount().to_string(),
    }
}
