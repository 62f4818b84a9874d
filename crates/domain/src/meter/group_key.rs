//! Group keys: the values of a meter's group-by properties for one event.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The group an event falls into: group-by property → value (e.g. `region=eu, model=gpt`).
///
/// A property the event does not carry is absent from the key, so events without it form
/// their own group. The empty key is the single group of a meter without group-by.
///
/// ```
/// use tally_domain::meter::GroupKey;
///
/// let key = GroupKey::from_pairs([("region", "eu"), ("model", "large")]);
/// assert_eq!(key.get("region"), Some("eu"));
/// assert_eq!(key.to_string(), "model=large, region=eu");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKey(BTreeMap<String, String>);

impl GroupKey {
    /// The empty key (no group-by).
    pub fn empty() -> GroupKey {
        GroupKey::default()
    }

    /// A key from `(property, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> GroupKey {
        GroupKey(
            pairs
                .into_iter()
                .map(|(property, value)| (property.into(), value.into()))
                .collect(),
        )
    }

    /// Adds or replaces one dimension.
    pub fn insert(&mut self, property: impl Into<String>, value: impl Into<String>) {
        self.0.insert(property.into(), value.into());
    }

    /// The value of one dimension.
    pub fn get(&self, property: &str) -> Option<&str> {
        self.0.get(property).map(String::as_str)
    }

    /// The dimensions in property order.
    pub fn dimensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(property, value)| (property.as_str(), value.as_str()))
    }

    /// Whether this is the empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, (property, value)) in self.dimensions().enumerate() {
            if position > 0 {
                formatter.write_str(", ")?;
            }
            write!(formatter, "{property}={value}")?;
        }
        Ok(())
    }
}
