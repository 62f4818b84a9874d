//! Rating's wire writers; timestamps and ranges are `tally_proto::convert`'s
//! (the one conversion every service uses), re-exported for rating's call sites.

use rust_decimal::Decimal;
use tally_domain::money::Currency;
use tally_proto::common;
pub use tally_proto::convert::{instant, time_range, timestamp};

/// A decimal on the wire (its exact text, scale kept).
pub fn decimal(value: Decimal) -> common::Decimal {
    common::Decimal {
        value: value.to_string(),
    }
}

/// An amount on the wire.
pub fn money(amount: Decimal, currency: Currency) -> common::Money {
    common::Money {
        currency: currency.code().to_owned(),
        amount: amount.to_string(),
    }
}
