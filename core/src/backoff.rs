//! Reconnect backoff: exponential, capped, with jitter drawn by the caller.
//!
//! Invariant: every delay is within `[cap_n / 2, cap_n]` where `cap_n = min(cap, base·2ⁿ)`,
//! so many clients restarting together spread out instead of reconnecting in lockstep.

use std::time::Duration;

/// Backoff state for one connection loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap: cap.max(base), attempt: 0 }
    }

    /// The delay before the next attempt. `jitter` is any random `u32`; the result is
    /// spread uniformly over the upper half of the current window.
    pub fn next_delay(&mut self, jitter: u32) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let window = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = window / 2;
        let spread = half.as_nanos() as f64 * (f64::from(jitter) / f64::from(u32::MAX));
        half + Duration::from_nanos(spread as u64)
    }

    /// Call after a successful connection; the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_the_capped_window(jitters in proptest::collection::vec(any::<u32>(), 1..40)) {
            let mut b = Backoff::default();
            for (n, j) in jitters.into_iter().enumerate() {
                let d = b.next_delay(j);
                let window = Duration::from_millis(250).saturating_mul(1u32 << n.min(20)).min(Duration::from_secs(30));
                prop_assert!(d >= window / 2 && d <= window, "attempt {n}: {d:?} outside {window:?}");
            }
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..10 {
            b.next_delay(u32::MAX);
        }
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.next_delay(u32::MAX), Duration::from_millis(250));
    }
}
