//! Helpers shared by the unit tests.

use std::fmt::Debug;

/// Asserts that `can_transition` allows exactly the `allowed` pairs among `all` states.
pub(crate) fn assert_transition_table<S: Copy + Debug + PartialEq>(
    all: &[S],
    allowed: &[(S, S)],
    can_transition: impl Fn(S, S) -> bool,
) {
    for from in all {
        for to in all {
            assert_eq!(
                can_transition(*from, *to),
                allowed.contains(&(*from, *to)),
                "{from:?} → {to:?}"
            );
        }
    }
}
