//! Meters: which events count, how they aggregate, and how they are grouped.

mod group_key;

pub use group_key::GroupKey;
