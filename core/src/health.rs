//! Target health and failover for a multi-target rule: passive health from every connect
//! attempt (3 consecutive failures → Failed, 2 consecutive successes → Healthy), optional
//! active probe results fed in the same way, and the order in which a new connection tries
//! the targets.
//!
//! Invariants: healthy targets are always tried before failed ones, each group in preference
//! order (priority, then position); when every target is failed they are all still tried
//! (failing open beats refusing every connection); a probe result is just another result.

use crate::stats::TargetHealth;

/// Consecutive connect failures that mark a healthy target Failed.
pub const FAILURES_TO_FAIL: u8 = 3;
/// Consecutive successes that mark a failed target Healthy again.
pub const SUCCESSES_TO_RECOVER: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    health: TargetHealth,
    failures: u8,
    successes: u8,
}

/// A change of one target's health, for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Index into the rule's target list.
    pub target: usize,
    /// The new health.
    pub health: TargetHealth,
}

/// Health of every target of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBook {
    states: Vec<State>,
    /// Target indices by preference (priority, then position).
    preference: Vec<usize>,
}

impl HealthBook {
    /// All targets start Healthy. `preference` lists target indices, most preferred first
    /// (see `RuleDef::targets_by_preference`).
    pub fn new(preference: Vec<usize>) -> Self {
        let n = preference.len();
        HealthBook {
            states: vec![State { health: TargetHealth::Healthy, failures: 0, successes: 0 }; n],
            preference,
        }
    }

    /// Records one connect attempt (or probe) to `target`; returns the transition it caused.
    /// An index out of range is ignored.
    pub fn handle_result(&mut self, target: usize, ok: bool) -> Option<Transition> {
        let state = self.states.get_mut(target)?;
        if ok {
            state.failures = 0;
            state.successes = state.successes.saturating_add(1);
            if state.health == TargetHealth::Failed && state.successes >= SUCCESSES_TO_RECOVER {
                state.health = TargetHealth::Healthy;
                return Some(Transition { target, health: TargetHealth::Healthy });
            }
        } else {
            state.successes = 0;
            state.failures = state.failures.saturating_add(1);
            if state.health == TargetHealth::Healthy && state.failures >= FAILURES_TO_FAIL {
                state.health = TargetHealth::Failed;
                return Some(Transition { target, health: TargetHealth::Failed });
            }
        }
        None
    }

    /// The order in which a new connection tries the targets: healthy ones by preference,
    /// then failed ones by preference.
    pub fn attempt_order(&self) -> Vec<usize> {
        let healthy =
            self.preference.iter().copied().filter(|&i| self.states[i].health == TargetHealth::Healthy);
        let failed =
            self.preference.iter().copied().filter(|&i| self.states[i].health == TargetHealth::Failed);
        healthy.chain(failed).collect()
    }

    /// The most preferred target overall; a connection that lands elsewhere failed over.
    pub fn preferred(&self) -> Option<usize> {
        self.preference.first().copied()
    }

    /// Current health of `target` (Healthy for an unknown index).
    pub fn health(&self, target: usize) -> TargetHealth {
        self.states.get(target).map_or(TargetHealth::Healthy, |s| s.health)
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True for a rule without targets (never built by validation).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn three_failures_fail_and_two_successes_recover() {
        let mut book = HealthBook::new(vec![0, 1]);
        assert_eq!(book.handle_result(0, false), None);
        assert_eq!(book.handle_result(0, false), None);
        assert_eq!(
            book.handle_result(0, false),
            Some(Transition { target: 0, health: TargetHealth::Failed })
        );
        assert_eq!(book.attempt_order(), vec![1, 0]);
        assert_eq!(book.handle_result(0, true), None);
        assert_eq!(
            book.handle_result(0, true),
            Some(Transition { target: 0, health: TargetHealth::Healthy })
        );
        assert_eq!(book.attempt_order(), vec![0, 1]);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut book = HealthBook::new(vec![0]);
        for ok in [false, false, true, false, false] {
            assert_eq!(book.handle_result(0, ok), None);
        }
        assert_eq!(book.health(0), TargetHealth::Healthy);
    }

    #[test]
    fn with_every_target_failed_all_are_still_tried_in_preference_order() {
        let mut book = HealthBook::new(vec![2, 0, 1]);
        for target in 0..3 {
            for _ in 0..3 {
                book.handle_result(target, false);
            }
        }
        assert_eq!(book.attempt_order(), vec![2, 0, 1]);
        assert_eq!(book.preferred(), Some(2));
    }

    proptest! {
        #[test]
        fn healthy_targets_always_come_first(results in proptest::collection::vec((0usize..4, any::<bool>()), 0..80)) {
            let mut book = HealthBook::new(vec![3, 1, 0, 2]);
            for (target, ok) in results {
                book.handle_result(target, ok);
                let order = book.attempt_order();
                prop_assert_eq!(order.len(), 4);
                let first_failed = order.iter().position(|&i| book.health(i) == TargetHealth::Failed).unwrap_or(4);
                prop_assert!(order[first_failed..].iter().all(|&i| book.health(i) == TargetHealth::Failed));
            }
        }

        #[test]
        fn health_changes_only_after_full_streaks(results in proptest::collection::vec(any::<bool>(), 1..60)) {
            let mut book = HealthBook::new(vec![0]);
            let (mut fails, mut oks) = (0u32, 0u32);
            for ok in results {
                let before = book.health(0);
                let transition = book.handle_result(0, ok);
                if ok { oks += 1; fails = 0 } else { fails += 1; oks = 0 }
                if let Some(t) = transition {
                    match t.health {
                        TargetHealth::Failed => prop_assert!(fails >= u32::from(FAILURES_TO_FAIL) && before == TargetHealth::Healthy),
                        TargetHealth::Healthy => prop_assert!(oks >= u32::from(SUCCESSES_TO_RECOVER) && before == TargetHealth::Failed),
                    }
                } else {
                    prop_assert_eq!(book.health(0), before);
                }
            }
        }
    }
}
