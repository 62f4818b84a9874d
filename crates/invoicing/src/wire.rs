//! Invoicing's wire formatting; the readers and the generic writers are
//! `tally_proto::convert`'s (one grammar and one rule per value for every
//! service), re-exported under the names invoicing's call sites use. A
//! reader's [`Violation`](tally_proto::convert::Violation) becomes an
//! `InvoicingError::Invalid` through `?`.

use rust_decimal::Decimal;
use tally_domain::money::{Currency, Money};
use tally_proto::common;
pub use tally_proto::convert::{
    decimal_field as parse_decimal, instant, maybe_timestamp, money_in as parse_money,
    optional_instant, period_range, time_range, timestamp,
};

use crate::error::InvoicingError;

/// A decimal on the wire (its exact text).
pub fn decimal(value: Decimal) -> common::Decimal {
    common::Decimal {
        value: value.normalize().to_string(),
    }
}

/// An amount on the wire, with at least the currency's minor-unit digits
/// (`0.00`, not `0`); precise amounts keep all theirs.
pub fn money(amount: Decimal, currency: Currency) -> common::Money {
    let shown = crate::billing::lines::shown_money(amount, currency);
    tally_proto::convert::money_value(shown.amount(), currency)
}

/// A domain amount on the wire.
pub fn money_of(value: &Money) -> common::Money {
    money(value.amount(), value.currency())
}

/// A stored currency code (written by us, so a bad one is internal).
pub fn stored_currency(code: &str) -> Result<Currency, InvoicingError> {
    Currency::from_code(code).map_err(InvoicingError::internal)
}
