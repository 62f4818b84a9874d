//! Which instant a new subscription snapshot changes: the earliest moment at
//! which usage would be rated differently than under the stored snapshot.
//! Periods ending after it are recomputed; everything before it stands.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

/// What of a subscription decides how its usage is rated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The billing anchor (all periods follow from it).
    pub billing_anchor_at: DateTime<Utc>,
    /// The phases, each a plan version over `[start_at, end_at)`.
    pub phases: Vec<ShapePhase>,
    /// The pause windows: from, and until (`None`: indefinite).
    pub pauses: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

/// One phase of a [`Shape`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapePhase {
    /// `pv_…`.
    pub plan_version_id: String,
    /// Start (inclusive).
    pub start_at: DateTime<Utc>,
    /// End (exclusive); `None` while open-ended.
    pub end_at: Option<DateTime<Utc>>,
}

impl Shape {
    /// Every instant at which a phase or the pause starts or ends.
    fn boundaries(&self) -> BTreeSet<DateTime<Utc>> {
        let mut boundaries = BTreeSet::new();
        for phase in &self.phases {
            boundaries.insert(phase.start_at);
            boundaries.extend(phase.end_at);
        }
        for (pause_at, resume_at) in &self.pauses {
            boundaries.insert(*pause_at);
            boundaries.extend(*resume_at);
        }
        boundaries
    }

    /// The plan versions in force at `instant` and whether it is paused then.
    fn state_at(&self, instant: DateTime<Utc>) -> (Vec<&str>, bool) {
        let mut versions: Vec<&str> = self
            .phases
            .iter()
            .filter(|phase| {
                phase.start_at <= instant && phase.end_at.is_none_or(|end| instant < end)
            })
            .map(|phase| phase.plan_version_id.as_str())
            .collect();
        versions.sort_unstable();
        let paused = self.pauses.iter().any(|(pause_at, resume_at)| {
            *pause_at <= instant && resume_at.is_none_or(|resume_at| instant < resume_at)
        });
        (versions, paused)
    }
}

/// The earliest instant from which `new` rates usage differently than `old`,
/// or `None` when they rate every instant alike.
///
/// A boundary present in only one of them counts as a change even when the
/// plan version is the same on both sides: it moves a segment (an aggregate
/// row's key). A new anchor moves every period, so it changes everything
/// from the earliest phase on.
pub fn earliest_change(old: &Shape, new: &Shape) -> Option<DateTime<Utc>> {
    if old.billing_anchor_at != new.billing_anchor_at {
        return old
            .phases
            .iter()
            .chain(&new.phases)
            .map(|phase| phase.start_at)
            .min();
    }
    let old_boundaries = old.boundaries();
    let new_boundaries = new.boundaries();
    old_boundaries
        .union(&new_boundaries)
        .copied()
        .find(|&instant| {
            old_boundaries.contains(&instant) != new_boundaries.contains(&instant)
                || old.state_at(instant) != new.state_at(instant)
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 0, 0, 0).unwrap()
    }

    fn phase(version: &str, start: u32, end: Option<u32>) -> ShapePhase {
        ShapePhase {
            plan_version_id: version.to_owned(),
            start_at: day(start),
            end_at: end.map(day),
        }
    }

    fn shape(phases: Vec<ShapePhase>) -> Shape {
        Shape {
            billing_anchor_at: day(1),
            phases,
            pauses: Vec::new(),
        }
    }

    #[test]
    fn the_same_shape_changes_nothing() {
        let old = shape(vec![phase("pv_a", 1, Some(10)), phase("pv_b", 10, None)]);
        assert_eq!(earliest_change(&old, &old.clone()), None);
    }

    #[test]
    fn a_backdated_plan_change_changes_from_its_instant() {
        let old = shape(vec![phase("pv_a", 1, None)]);
        let new = shape(vec![phase("pv_a", 1, Some(5)), phase("pv_b", 5, None)]);
        assert_eq!(earliest_change(&old, &new), Some(day(5)));
    }

    #[test]
    fn a_moved_plan_change_changes_from_the_earlier_of_the_two_instants() {
        let old = shape(vec![phase("pv_a", 1, Some(12)), phase("pv_b", 12, None)]);
        let new = shape(vec![phase("pv_a", 1, Some(8)), phase("pv_b", 8, None)]);
        assert_eq!(earliest_change(&old, &new), Some(day(8)));
        assert_eq!(earliest_change(&new, &old), Some(day(8)));
    }

    #[test]
    fn a_split_into_the_same_version_moves_a_segment() {
        let old = shape(vec![phase("pv_a", 1, None)]);
        let new = shape(vec![phase("pv_a", 1, Some(7)), phase("pv_a", 7, None)]);
        assert_eq!(earliest_change(&old, &new), Some(day(7)));
    }

    #[test]
    fn a_backdated_start_or_cancellation_changes_from_its_instant() {
        let old = shape(vec![phase("pv_a", 10, None)]);
        let earlier = shape(vec![phase("pv_a", 3, None)]);
        assert_eq!(earliest_change(&old, &earlier), Some(day(3)));
        let canceled = shape(vec![phase("pv_a", 10, Some(20))]);
        assert_eq!(earliest_change(&old, &canceled), Some(day(20)));
    }

    #[test]
    fn a_pause_changes_from_its_start() {
        let old = shape(vec![phase("pv_a", 1, None)]);
        let mut paused = old.clone();
        paused.pauses = vec![(day(15), Some(day(20)))];
        assert_eq!(earliest_change(&old, &paused), Some(day(15)));
    }

    #[test]
    fn a_new_anchor_changes_everything() {
        let old = shape(vec![phase("pv_a", 4, None)]);
        let mut moved = old.clone();
        moved.billing_anchor_at = day(2);
        assert_eq!(earliest_change(&old, &moved), Some(day(4)));
    }
}
