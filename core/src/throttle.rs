//! Brute-force throttling of login, onboarding and password changes, per subject and per
//! remote address: a sans-io record per key that failures feed and `now` is checked against.
//!
//! Policy: [`MAX_FAILURES`] failures within [`WINDOW`] lock the key for [`BASE_LOCKOUT`];
//! each further lockout while the previous one is remembered doubles it, up to
//! [`MAX_LOCKOUT`]. A lockout is forgotten [`WINDOW`] after it ended.
//!
//! Invariants: a lockout never exceeds [`MAX_LOCKOUT`]; a key is never locked before
//! [`MAX_FAILURES`] failures inside one window; time only comes in as `now`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::Timestamp;

/// Failures that trigger a lockout.
pub const MAX_FAILURES: usize = 5;
/// How long a failure counts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first lockout.
pub const BASE_LOCKOUT: Duration = Duration::from_secs(60);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// What a key has done lately. The default is a key that never failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// Failures since the last lockout, oldest first; at most [`MAX_FAILURES`] - 1 are kept.
    failures: Vec<Timestamp>,
    /// The current or last lockout's end.
    locked_until: Option<Timestamp>,
    /// Lockouts in a row (the next lockout lasts `BASE_LOCKOUT * 2^n_lockouts`).
    n_lockouts: u32,
}

impl Throttle {
    /// `Err(retry_after)` while the key is locked at `now`.
    pub fn check(&self, now: Timestamp) -> Result<(), Duration> {
        match self.locked_until {
            Some(until) if now < until => Err(until.since(now)),
            _ => Ok(()),
        }
    }

    /// Records a failure at `now`; returns the lockout it started, if any. A failure while
    /// locked changes nothing (callers refuse those attempts before checking credentials).
    pub fn on_failure(&mut self, now: Timestamp) -> Option<Duration> {
        if self.check(now).is_err() {
            return None;
        }
        if self.locked_until.is_some_and(|until| now.since(until) >= WINDOW) {
            self.n_lockouts = 0;
        }
        self.failures.retain(|&at| now.since(at) < WINDOW);
        self.failures.push(now);
        if self.failures.len() < MAX_FAILURES {
            return None;
        }
        self.failures.clear();
        let factor = 1u32.checked_shl(self.n_lockouts.min(16)).unwrap_or(u32::MAX);
        let lockout = BASE_LOCKOUT.saturating_mul(factor).min(MAX_LOCKOUT);
        self.n_lockouts = self.n_lockouts.saturating_add(1);
        self.locked_until = Some(now.plus(lockout));
        Some(lockout)
    }

    /// True when the record says nothing any more at `now` and may be deleted: no lockout
    /// pending or remembered, no failure inside the window.
    pub fn is_idle(&self, now: Timestamp) -> bool {
        self.failures.iter().all(|&at| now.since(at) >= WINDOW)
            && self.locked_until.is_none_or(|until| now >= until && now.since(until) >= WINDOW)
    }
}

/// The failure for a locked key.
pub fn rate_limited(retry_after: Duration) -> Failure {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Failure::new(ErrorCode::RateLimited, format!("too many failed attempts; retry in {secs} s"))
}

/// The store key of a throttle: what is attempted (`login`, `onboarding`, `password`), and on
/// whom (`user:<id>`) or from where (`ip:<addr>`).
pub fn key(attempt: &str, scope: &str, value: &str) -> String {
    format!("{attempt}:{scope}:{value}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn five_failures_lock_for_a_minute_then_doubling_up_to_fifteen() {
        let mut t = Throttle::default();
        let mut now = 0;
        for expected in [60, 120, 240, 480, 900, 900] {
            for n in 1..MAX_FAILURES {
                assert_eq!(t.on_failure(at(now)), None, "failure {n}");
                assert!(t.check(at(now)).is_ok());
            }
            assert_eq!(t.on_failure(at(now)), Some(Duration::from_secs(expected)));
            assert_eq!(t.check(at(now + expected - 1)), Err(Duration::from_secs(1)));
            assert_eq!(t.on_failure(at(now + 1)), None, "failures while locked are not counted");
            now += expected;
            assert!(t.check(at(now)).is_ok());
        }
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut t = Throttle::default();
        for n in 0..4 {
            t.on_failure(at(n));
        }
        assert_eq!(t.on_failure(at(15 * 60 + 1)), None, "the first four fell out of the window");
        assert!(!t.is_idle(at(15 * 60 + 2)));
        assert!(t.is_idle(at(30 * 60 + 1)));
    }

    #[test]
    fn a_lockout_is_forgotten_a_window_after_it_ended() {
        let mut t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            t.on_failure(at(0));
        }
        assert!(!t.is_idle(at(60)));
        assert!(t.is_idle(at(60 + 15 * 60)));
        for _ in 0..MAX_FAILURES - 1 {
            t.on_failure(at(60 + 15 * 60));
        }
        assert_eq!(t.on_failure(at(60 + 15 * 60)), Some(BASE_LOCKOUT), "back to the first lockout");
    }

    proptest! {
        #[test]
        fn lockouts_are_bounded_and_need_five_failures_in_a_window(
            gaps in proptest::collection::vec(0u64..2_000, 1..60)
        ) {
            let mut t = Throttle::default();
            let mut now = 0u64;
            let mut recent: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let locked_before = t.check(at(now)).is_err();
                match t.on_failure(at(now)) {
                    Some(lockout) => {
                        prop_assert!(lockout <= MAX_LOCKOUT && lockout >= BASE_LOCKOUT);
                        recent.retain(|&s| now - s < WINDOW.as_secs());
                        prop_assert!(recent.len() + 1 >= MAX_FAILURES);
                        recent.clear();
                    }
                    None if !locked_before => recent.push(now),
                    None => {}
                }
                if let Err(retry) = t.check(at(now)) {
                    prop_assert!(retry <= MAX_LOCKOUT);
                }
            }
        }
    }
}
